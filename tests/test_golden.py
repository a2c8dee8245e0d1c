"""Golden payloads: every codec's bytes (and decodes) pinned by SHA-256.

Refactors of the codecs must not change a single payload byte or decoded bit for
ordinary inputs. The inputs are built from the SplitMix64 stream with exact
arithmetic only (no transcendental functions), so they are the same everywhere.
torch's float32 reductions depend on the CPU's vector width and, for long pieces, on
its thread count: the digests are computed with one thread and pinned for the CPU
capability they were recorded on (skipped elsewhere).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch

import fedrot
from fedrot import _kernels
from fedrot.seeds import words_numpy

RECORDED_ON = ("2.13", "AVX512")

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {}),
    ("fp16", {}),
    ("drive", {}),
    ("drive", {"scale": "biased", "rotations": 1}),
    ("drive", {"rotations": "auto", "chunk_size": 1024}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 1}),
    ("eden", {"bits": 1.5, "rotations": 3}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 2.5, "rotations": "auto"}),
    ("eden", {"bits": 4, "rotations": 1, "chunk_size": 4096}),
    ("quic-fl", {"bits": 1}),
    ("quic-fl", {"bits": 2, "rotations": "auto"}),
    ("quic-fl", {"bits": 3, "outlier_fraction": 1 / 128}),
    ("quic-fl", {"bits": 4, "rotations": 1, "chunk_size": 2048}),
    ("vq", {"bits": 1}),
    ("vq", {"bits": 2, "rotations": "auto"}),
    ("vq", {"bits": 2, "block": 4, "rotations": 2}),
    ("hadamard-sq", {"bits": 1}),
    ("hadamard-sq", {"bits": 4, "rotations": 2}),
    ("qsgd", {"levels": 1}),
    ("qsgd", {"levels": 15}),
    ("terngrad", {}),
    ("terngrad", {"clip": 2.5}),
    ("topk", {}),
    ("topk", {"fraction": 0.3}),
    ("randk", {"fraction": 0.1}),
    ("signsgd", {}),
]


def _uniform(key: int, n: int) -> np.ndarray:
    return (words_numpy(key, n) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def golden_inputs() -> list[np.ndarray]:
    """Gaussian-like, heavy-tailed, sparse, spiky and tiny inputs (float32)."""
    out = []
    for i, d in enumerate((1, 33, 700, 5000, 70001)):
        g = sum(_uniform(100 * i + j, d) for j in range(4)) - 2.0  # Irwin-Hall
        out.append(g)
        u = _uniform(100 * i + 7, d)
        out.append(g * (1.0 + 8.0 * u * u * u))  # heavy tails
    sparse = np.zeros(5000)
    sparse[[3, 40, 41, 4999]] = [1.0, -2.0, 0.5, 3.0]
    out.append(sparse)
    spike = out[6].copy()
    spike[11] = 400.0
    out.append(spike)
    return [x.astype(np.float32) for x in out]


def digest(name: str, params: dict[str, Any]) -> str:
    """SHA-256 over the payloads and decodes of every golden input, plus the
    aggregate of the four inputs of length 5000."""
    codec = fedrot.get_codec(name, **params)
    h = hashlib.sha256()
    blobs, clients = [], []
    for i, x in enumerate(golden_inputs()):
        seed, client = 2**63 + 11 * i, 2**64 - 3 - i
        blob = codec.encode(x, seed=seed, client=client)
        h.update(blob)
        h.update(codec.decode(blob, seed=seed, client=client).numpy().tobytes())
        if x.size == 5000:
            blobs.append(codec.encode(x, seed=5, client=i))
            clients.append(i)
    weights = [1.0, 2.0, 3.5, 0.25]
    agg = codec.aggregate(blobs, seed=5, clients=clients, weights=weights)
    h.update(agg.numpy().tobytes())
    return h.hexdigest()[:16]


#: Recorded at commit 4f2162d (before the overflow and rotation-object changes),
#: with one torch thread: torch splits long float32 reductions (pieces of more than
#: 32768 values) across its threads, so DRIVE/EDEN scales depend on the count.
GOLDEN = {
    "fp32 {}": "23cdb7bf1565687e",
    "fp16 {}": "8499c2b8c5e7d946",
    "drive {}": "4675e4628ac62741",
    "drive {'scale': 'biased', 'rotations': 1}": "ff8e81e042db6df0",
    "drive {'rotations': 'auto', 'chunk_size': 1024}": "5b7910e990356d18",
    "eden {'bits': 0.5}": "2080bb5c46b3ef4d",
    "eden {'bits': 1}": "7bce1b3ad9708e51",
    "eden {'bits': 1.5, 'rotations': 3}": "f91077fdb420f28b",
    "eden {'bits': 2}": "13c69cc2f205be1d",
    "eden {'bits': 2.5, 'rotations': 'auto'}": "ede31877052d3ebc",
    "eden {'bits': 4, 'rotations': 1, 'chunk_size': 4096}": "e8a749f76562c7d8",
    "quic-fl {'bits': 1}": "2dcfd8915b4515d9",
    "quic-fl {'bits': 2, 'rotations': 'auto'}": "9596f55c0518750d",
    "quic-fl {'bits': 3, 'outlier_fraction': 0.0078125}": "c5c217c75b66a2d8",
    "quic-fl {'bits': 4, 'rotations': 1, 'chunk_size': 2048}": "6c211b566d4ad182",
    "vq {'bits': 1}": "461d9db1742b3bd4",
    "vq {'bits': 2, 'rotations': 'auto'}": "dfdc7e1c28bdad1e",
    "vq {'bits': 2, 'block': 4, 'rotations': 2}": "dd1c591d853813c3",
    "hadamard-sq {'bits': 1}": "2250b473a7a3b171",
    "hadamard-sq {'bits': 4, 'rotations': 2}": "74421f4bcf11e27c",
    "qsgd {'levels': 1}": "6fbabe92fa4a3d8f",
    "qsgd {'levels': 15}": "4853770836721e73",
    "terngrad {}": "3ab7bc556227b183",
    "terngrad {'clip': 2.5}": "d53e9e618f324128",
    "topk {}": "949b93e295c95e9a",
    "topk {'fraction': 0.3}": "fd4ceb2bde32f756",
    "randk {'fraction': 0.1}": "14e1c3d0a1e501fc",
    "signsgd {}": "2a384772fe850534",
}


def _recorded_here() -> bool:
    version = ".".join(torch.__version__.split(".")[:2])
    return (version, torch.backends.cpu.get_cpu_capability()) == RECORDED_ON


@pytest.mark.skipif(
    not _recorded_here(), reason=f"digests recorded on torch/CPU {RECORDED_ON}"
)
@pytest.mark.parametrize(
    "kernels", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["c", "torch"]
)
@pytest.mark.parametrize("name,params", CONFIGS, ids=[f"{n}-{p}" for n, p in CONFIGS])
def test_payloads_and_decodes_are_pinned(
    name: str, params: dict[str, Any], kernels: bool
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _kernels.enabled(kernels):
            assert digest(name, params) == GOLDEN[f"{name} {params}"]
    finally:
        torch.set_num_threads(threads)
