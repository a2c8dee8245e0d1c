"""Every codec on a CUDA device: payloads interchangeable with the CPU's, decodes and
aggregates equal to the CPU's (skipped without a GPU; ``--require-gpu`` fails
instead)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fedrot
from fedrot.hadamard import fwht_

#: Every registered codec with its defaults, plus the settings whose code paths
#: differ (fractional and multi-bit EDEN, the RHT count rule, QUIC-FL, VQ).
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    (name, {}) for name in fedrot.available_codecs()
] + [
    ("eden", {"bits": 0.25}),
    ("eden", {"bits": 2, "rotations": "auto"}),
    ("eden", {"bits": 4, "rotations": 3}),
    ("quic-fl", {"bits": 4}),
]

pytestmark = pytest.mark.gpu


def _ids(setting: tuple[str, dict[str, Any]]) -> str:
    name, params = setting
    return name + "".join(f"-{k}{v}" for k, v in params.items())


@pytest.mark.parametrize("setting", SETTINGS, ids=[_ids(s) for s in SETTINGS])
def test_payloads_decode_alike_on_both_devices(
    setting: tuple[str, dict[str, Any]],
) -> None:
    name, params = setting
    x = torch.randn(70000, generator=torch.Generator().manual_seed(5))
    cpu = fedrot.get_codec(name, **params)
    gpu = fedrot.get_codec(name, device="cuda", **params)
    from_gpu = gpu.encode(x.cuda(), seed=3, client=4)
    from_cpu = cpu.encode(x, seed=3, client=4)
    assert len(from_gpu) == len(from_cpu)
    for blob in (from_gpu, from_cpu):
        on_gpu = gpu.decode(blob, seed=3, client=4)
        assert on_gpu.device.type == "cuda"
        assert torch.allclose(
            on_gpu.cpu(), cpu.decode(blob, seed=3, client=4), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("setting", SETTINGS, ids=[_ids(s) for s in SETTINGS])
def test_aggregates_agree_across_devices(setting: tuple[str, dict[str, Any]]) -> None:
    name, params = setting
    gen = torch.Generator().manual_seed(6)
    xs = [torch.randn(5000, generator=gen) for _ in range(3)]
    cpu = fedrot.get_codec(name, **params)
    gpu = fedrot.get_codec(name, device="cuda", **params)
    blobs = [cpu.encode(x, seed=9, client=c) for c, x in enumerate(xs)]
    kwargs: dict[str, Any] = {"seed": 9, "clients": [0, 1, 2], "weights": [1, 2, 3]}
    a = gpu.aggregate(blobs, **kwargs)
    assert a.device.type == "cuda"
    assert torch.allclose(a.cpu(), cpu.aggregate(blobs, **kwargs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("log2", [1, 10, 16, 21])
def test_fwht_on_cuda_matches_cpu_in_place(log2: int) -> None:
    x = torch.randn(3, 1 << log2, dtype=torch.float64)
    y = x.cuda()
    fwht_(y)
    fwht_(x)
    assert torch.allclose(y.cpu(), x, atol=1e-9 * (1 << (log2 // 2)))
