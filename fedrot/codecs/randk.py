"""Rand-k sparsification: k shared-seed random coordinates, scaled by d/k (unbiased).

Konecny et al., "Federated Learning: Strategies for Improving Communication
Efficiency", 2016, https://arxiv.org/abs/1610.05492 (random mask, structured update).

Client and server both derive the same k = max(1, ceil(fraction * d)) indices from the
client's MASK stream: the k coordinates whose stream words, read as signed int64,
are smallest (all
distinct with overwhelming probability). Only the k float32 values travel.
Server: ``x_hat_i = (d / k) * x_i`` on the kept indices, 0 elsewhere.
vNMSE = d/k - 1 (31 at fraction = 1/32).
"""

from __future__ import annotations

import struct
from typing import Any

import torch

from .. import wire
from ..seeds import Stream, derive_seed, words_torch
from . import _sparse
from .base import Codec, read_f32, tensor_bytes

__all__ = ["RandKCodec"]


class RandKCodec(Codec):
    """Keep a random ``fraction`` of the coordinates, chosen from the shared seed."""

    name = "randk"
    rotates = False
    codec_id = 9

    def __init__(
        self, *, fraction: float = 1 / 32, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(device=device)
        self.fraction = _sparse.check_fraction(fraction)

    def params(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def _param_block(self) -> bytes:
        return struct.pack("<d", self.fraction)

    def _indices(self, d: int, seed: int, client: int) -> torch.Tensor:
        k = _sparse.num_kept(self.fraction, d)
        keys = words_torch(
            derive_seed(seed, client, Stream.MASK), d, device=self.device
        )
        return torch.topk(keys, k, largest=False, sorted=False).indices.sort().values

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        idx = self._indices(v.numel(), seed, client)
        return self._pack(d=v.numel(), rotations=0, body=[tensor_bytes(v[idx])])

    def _parse(self, header: wire.Header, reader: wire.Reader) -> torch.Tensor:
        k = _sparse.num_kept(self.fraction, header.d)
        reader.expect_remaining(4 * k, "values")
        return read_f32(reader, k, self.device)

    def _decode(
        self, header: wire.Header, parsed: torch.Tensor, seed: int, client: int
    ) -> torch.Tensor:
        d = header.d
        k = parsed.numel()
        values = parsed
        out = torch.zeros(d, dtype=torch.float32, device=self.device)
        out[self._indices(d, seed, client)] = values * (d / k)
        return out

    def _expected_vnmse(self) -> float | None:
        return None

    def _sizes(self, d: int) -> tuple[int, int]:
        codes = 4 * _sparse.num_kept(self.fraction, d)
        return wire.FIXED_BYTES + len(self._param_block()) + codes, codes
