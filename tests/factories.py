"""Input factories for the codec tests: vectors with known structure, vNMSE.

A plain module (not ``conftest.py``) that test modules import by name.
"""

from __future__ import annotations

import math

import torch


def make_gaussian(
    d: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Standard normal vector from a fixed torch seed (test input only)."""
    return torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def make_lognormal(d: int, seed: int) -> torch.Tensor:
    """lognormal(0, 1) vector."""
    return make_gaussian(d, seed).exp()


def make_pair(d: int, i: int = 0, j: int = 1) -> torch.Tensor:
    """(e_i + e_j) / sqrt(2)."""
    x = torch.zeros(d, dtype=torch.float64)
    x[i] = x[j] = 1 / math.sqrt(2)
    return x


def make_block(d: int, k: int) -> torch.Tensor:
    """1_{0..k-1} / sqrt(k): an aligned flat k-sparse vector."""
    x = torch.zeros(d, dtype=torch.float64)
    x[:k] = 1 / math.sqrt(k)
    return x


def make_onehot(d: int, i: int = 1) -> torch.Tensor:
    """e_i."""
    x = torch.zeros(d, dtype=torch.float64)
    x[i] = 1.0
    return x


def make_spike(d: int, seed: int) -> torch.Tensor:
    """Gaussian plus one spike holding half the energy."""
    x = make_gaussian(d, seed)
    x[3] = x.norm()
    return x


def make_dense_pm1(d: int) -> torch.Tensor:
    """A dense ±1 vector (a row of the Hadamard matrix)."""
    idx = torch.arange(d)
    row = 5
    both = idx & row
    parity = torch.zeros_like(both)
    while bool(both.any()):
        parity ^= both & 1
        both >>= 1
    return (1 - 2 * parity).to(torch.float64)


def vnmse(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """||x_hat - x||^2 / ||x||^2 in float64."""
    x = x.to(torch.float64)
    return float((x_hat.to(torch.float64) - x).square().sum() / x.square().sum())


def mean_vnmse(
    codec, x: torch.Tensor, seeds: range, client: int = 1
) -> tuple[float, list[float]]:
    """Mean and per-seed vNMSE of encode/decode over seeds."""
    vals = [
        vnmse(
            codec.decode(codec.encode(x, seed=s, client=client), seed=s, client=client),
            x,
        )
        for s in seeds
    ]
    return sum(vals) / len(vals), vals
