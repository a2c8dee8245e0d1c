"""FWHT against the dense Sylvester-Hadamard oracle, plus invariants."""

from __future__ import annotations

import math

import pytest
import scipy.linalg
import torch

from fedrot.hadamard import fwht, fwht_, hadamard_matrix, is_power_of_two


@pytest.mark.parametrize("size", [1, 2, 4, 8, 16, 32, 64])
def test_fwht_equals_dense_oracle_float64(size: int) -> None:
    x = torch.randn(
        5, size, generator=torch.Generator().manual_seed(size), dtype=torch.float64
    )
    oracle = torch.tensor(scipy.linalg.hadamard(size), dtype=torch.float64) / math.sqrt(
        size
    )
    assert float((fwht(x) - x @ oracle).abs().max()) < 1e-12
    assert float((hadamard_matrix(size) - oracle).abs().max()) == 0.0


def test_known_values() -> None:
    assert fwht(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).tolist() == [
        5.0,
        -1.0,
        -2.0,
        0.0,
    ]
    assert fwht(torch.tensor([1.0, 1.0, 1.0, 1.0])).tolist() == [2.0, 0.0, 0.0, 0.0]
    e0 = torch.zeros(8, dtype=torch.float64)
    e0[0] = 1
    assert torch.allclose(
        fwht(e0), torch.full((8,), 8**-0.5, dtype=torch.float64), atol=1e-15
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_self_inverse_and_norm_at_2_20(dtype: torch.dtype, tol: float) -> None:
    x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0), dtype=dtype)
    y = fwht(x)
    assert abs(float(y.norm() / x.norm()) - 1) < tol
    assert float((fwht(y) - x).norm() / x.norm()) < tol


def test_batched_over_leading_dims_and_input_untouched() -> None:
    x = torch.randn(3, 2, 16, dtype=torch.float64)
    before = x.clone()
    y = fwht(x)
    assert torch.equal(x, before)
    for i in range(3):
        for j in range(2):
            assert torch.allclose(y[i, j], hadamard_matrix(16) @ x[i, j], atol=1e-12)


def test_inplace_variant_matches() -> None:
    x = torch.randn(4, 32, dtype=torch.float64)
    expected = fwht(x)
    assert fwht_(x) is None
    assert torch.allclose(x, expected, atol=1e-14)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="power of two"):
        fwht(torch.zeros(12))
    with pytest.raises(TypeError, match="floating"):
        fwht(torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match="contiguous"):
        fwht_(torch.zeros(8, 4).t())
    assert [n for n in range(70) if is_power_of_two(n)] == [1, 2, 4, 8, 16, 32, 64]


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = torch.randn(4, 1 << 12, dtype=torch.float64)
    assert torch.allclose(fwht(x.cuda()).cpu(), fwht(x), atol=1e-12)
