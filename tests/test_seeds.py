"""The counter-based PRF: known answers, numpy == torch, cross-process determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import fedrot
from fedrot.seeds import (
    derive_seed,
    round_seed,
    sign_bits_numpy,
    signs_torch,
    uniforms_torch,
    words_numpy,
    words_torch,
)


def test_splitmix64_known_answers() -> None:
    # SplitMix64 seeded with 0 (Vigna's reference splitmix64.c): first three outputs.
    assert [int(w) for w in words_numpy(0, 3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


@pytest.mark.parametrize("key", [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15])
def test_torch_words_equal_numpy_words(key: int) -> None:
    a = words_numpy(key, 1000, start=17)
    b = words_torch(key, 1000, start=17).numpy().view(np.uint64)
    assert np.array_equal(a, b)


def test_signs_identical_in_numpy_and_torch() -> None:
    key = derive_seed(7, 3, 1, 0)
    for n in (1, 63, 64, 65, 4096 + 5):
        bits = sign_bits_numpy(key, n)
        signs = signs_torch(key, n, dtype=torch.float64).numpy()
        assert np.array_equal(1 - 2 * bits.astype(np.float64), signs)


def test_signs_are_balanced_and_uniforms_in_range() -> None:
    s = signs_torch(123, 1 << 16)
    assert abs(float(s.mean())) < 0.02
    u = uniforms_torch(123, 1 << 16)
    assert (
        float(u.min()) >= 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    )


def test_derive_seed_is_order_sensitive_and_validated() -> None:
    assert derive_seed(1, 2) != derive_seed(2, 1)
    assert derive_seed(1, 2) == derive_seed(1, 2)
    assert len({derive_seed(0, c) for c in range(10000)}) == 10000
    assert round_seed(5, 1) != round_seed(5, 2)
    with pytest.raises(ValueError, match="0..2\\*\\*64-1"):
        derive_seed(-1)
    with pytest.raises(ValueError, match="0..2\\*\\*64-1"):
        derive_seed(2**64)
    with pytest.raises(TypeError, match="integer"):
        derive_seed(1.5)  # type: ignore[arg-type]


_SCRIPT = """
import hashlib, torch, fedrot
x = torch.linspace(-1, 1, 5000) ** 3
out = []
for name, kw in [("eden", {"bits": 2}), ("drive", {}), ("qsgd", {"levels": 3}),
                 ("hadamard-sq", {"bits": 2}), ("randk", {}), ("eden", {"bits": 2.5})]:
    blob = fedrot.get_codec(name, **kw).encode(x, seed=2**63 + 11, client=2**64 - 3)
    out.append(hashlib.sha256(blob).hexdigest())
print(",".join(out))
"""


def test_same_seed_gives_byte_identical_payload_across_processes() -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].split(",")) == 6


def test_flwr_not_imported_by_core() -> None:
    code = "import sys, fedrot; fedrot.get_codec('eden'); print('flwr' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    assert fedrot.derive_seed is derive_seed


@pytest.mark.gpu
def test_cuda_streams_equal_numpy_streams() -> None:
    key = derive_seed(9, 2**64 - 1, 1, 2)
    assert np.array_equal(
        words_torch(key, 5000, device="cuda").cpu().numpy().view(np.uint64),
        words_numpy(key, 5000),
    )
    assert torch.equal(
        signs_torch(key, 4097, device="cuda").cpu(), signs_torch(key, 4097)
    )
    assert torch.equal(
        uniforms_torch(key, 999, device="cuda").cpu(), uniforms_torch(key, 999)
    )
