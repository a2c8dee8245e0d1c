"""The codec settings and the valid payloads that every mutation starts from."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from ..codecs import Codec, get_codec

__all__ = ["SETTINGS", "SIZES", "Corpus", "Source", "setting_label", "shared_corpus"]

#: Codec settings fuzzed: (registry name, parameters). Covers every registered codec.
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("fp32", {}),
    ("fp16", {}),
    ("drive", {"rotations": 1}),
    ("drive", {"rotations": 2}),
    ("drive", {"rotations": 3, "scale": "biased"}),
    ("drive", {"rotations": "auto", "chunk_size": 1024}),
    ("eden", {"bits": 1, "rotations": 1}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 2, "rotations": 3}),
    ("eden", {"bits": 4, "rotations": "auto"}),
    ("eden", {"bits": 8, "chunk_size": 1024}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 0.25, "rotations": "auto"}),
    ("eden", {"bits": 0.75, "rotations": 1, "chunk_size": 1024}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 2.5, "rotations": "auto"}),
    ("eden", {"bits": 3.25, "rotations": 3, "chunk_size": 1024}),
    ("quic-fl", {"bits": 1}),
    ("quic-fl", {"bits": 2, "rotations": 1}),
    ("quic-fl", {"bits": 2, "rotations": "auto", "outlier_fraction": 2.0**-7}),
    ("quic-fl", {"bits": 3, "outlier_fraction": 2.0**-11}),
    ("quic-fl", {"bits": 4, "chunk_size": 1024}),
    ("vq", {"block": 2, "bits": 1}),
    ("vq", {"block": 2, "bits": 2, "rotations": 2}),
    ("vq", {"block": 2, "bits": 3, "rotations": "auto"}),
    ("vq", {"block": 4, "bits": 1, "chunk_size": 1024}),
    ("vq", {"block": 4, "bits": 2}),
    ("hadamard-sq", {"bits": 1}),
    ("hadamard-sq", {"bits": 3, "rotations": 2}),
    ("hadamard-sq", {"bits": 8, "rotations": "auto"}),
    ("qsgd", {"levels": 1}),
    ("qsgd", {"levels": 15}),
    ("terngrad", {}),
    ("terngrad", {"clip": 2.5}),
    ("topk", {"fraction": 0.01}),
    ("topk", {"fraction": 0.25}),
    ("randk", {"fraction": 0.01}),
    ("randk", {"fraction": 0.25}),
    ("signsgd", {}),
)
#: Vector lengths of the valid payloads that the mutations start from.
SIZES: tuple[int, ...] = (1, 33, 1000, 70_001)


@dataclass(frozen=True)
class Source:
    """A valid payload and how it was made."""

    setting: int
    d: int
    seed: int
    client: int
    blob: bytes


class Corpus:
    """One codec per setting and one valid payload per (setting, size)."""

    def __init__(self) -> None:
        self.codecs: list[Codec] = [get_codec(n, **p) for n, p in SETTINGS]
        self.sources: list[list[Source]] = []
        for i, codec in enumerate(self.codecs):
            row = []
            for d in SIZES:
                g = torch.Generator().manual_seed(d * 131 + i)
                x = torch.randn(d, generator=g)
                x[: d // 4] = 0.0  # a sparse part: "auto" then picks two RHTs
                seed, client = 1000 + d, 7 + i
                blob = codec.encode(x, seed=seed, client=client)
                row.append(Source(i, d, seed, client, blob))
            self.sources.append(row)

    def any_source(self, rng: random.Random) -> Source:
        """A valid payload of any setting and size."""
        return rng.choice(rng.choice(self.sources))


@cache
def shared_corpus() -> Corpus:
    """The corpus, built once per process (encoding it takes a few seconds)."""
    return Corpus()


def setting_label(setting: int) -> str:
    """``SETTINGS[setting]`` as ``"name key=value ..."``."""
    name, params = SETTINGS[setting]
    return " ".join([name, *(f"{k}={v}" for k, v in params.items())])
