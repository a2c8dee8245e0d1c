"""RHT stacks: exact inversion, norms, known structure, the auto rule."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    make_block,
    make_dense_pm1,
    make_gaussian,
    make_lognormal,
    make_onehot,
    make_pair,
    make_spike,
)

from fedrot.chunking import plan_chunks
from fedrot.rotation import (
    choose_rotations,
    kurtosis_ratio,
    rotate,
    rotation_keys,
    unrotate,
)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 7, 1000, 70000])
def test_stack_inverts_and_preserves_norm(k: int, d: int) -> None:
    plan = plan_chunks(d, 16)
    x = torch.zeros(plan.padded, dtype=torch.float64)
    x[:d] = make_gaussian(d, d)
    keys = rotation_keys(11, 4, k)
    y = rotate(x, plan, keys)
    assert abs(float(y.norm() / x.norm()) - 1) < 1e-12
    assert float((unrotate(y, plan, keys) - x).abs().max()) < 1e-12


def test_onehot_spreads_to_flat_magnitudes() -> None:
    plan = plan_chunks(1024, 16)
    y = rotate(make_onehot(1024, 5), plan, rotation_keys(0, 0, 1))
    assert torch.allclose(y.abs(), torch.full((1024,), 1024**-0.5, dtype=torch.float64))


def test_keys_differ_per_client_layer_round_and_shared() -> None:
    keys = {
        *rotation_keys(1, 1, 3),
        *rotation_keys(1, 2, 3),
        *rotation_keys(2, 1, 3),
        *rotation_keys(1, None, 3),
    }
    assert len(keys) == 12


def test_pair_collapse_after_two_rhts_and_broken_by_three() -> None:
    """x = (e0+e1)/sqrt2: 2 RHTs give |z_2J| == |z_2J+1| always; 3 RHTs do not."""
    d = 4096
    plan = plan_chunks(d, 16)
    equal_frac = []
    for seed in range(20):
        y2 = rotate(make_pair(d), plan, rotation_keys(seed, 0, 2)).view(-1, 2).abs()
        assert torch.allclose(y2[:, 0], y2[:, 1], atol=1e-12)
        y3 = rotate(make_pair(d), plan, rotation_keys(seed, 0, 3)).view(-1, 2).abs()
        equal_frac.append(float(((y3[:, 0] - y3[:, 1]).abs() < 1e-12).float().mean()))
    assert max(equal_frac) < 0.05


def test_kurtosis_ratio_values() -> None:
    plan = plan_chunks(1 << 12, 16)
    assert abs(float(kurtosis_ratio(make_dense_pm1(1 << 12), plan)[0][0]) - 1) < 1e-9
    assert abs(float(kurtosis_ratio(make_block(1 << 12, 4), plan)[0][0]) - 1024) < 1e-6


@pytest.mark.parametrize(
    "name,x,expected",
    [
        ("gaussian", make_gaussian(1 << 16, 1), 1),
        ("lognormal", make_lognormal(1 << 16, 2), 1),
        ("dense ±1", make_dense_pm1(1 << 16), 1),
        ("one-hot", make_onehot(1 << 16), 2),
        ("pair", make_pair(1 << 16, 3, 9000), 2),
        ("4-sparse", make_block(1 << 16, 4), 2),
        ("512-sparse", make_block(1 << 16, 512), 2),
        ("spike", make_spike(1 << 16, 3), 2),
    ],
)
def test_auto_rule_decisions(name: str, x: torch.Tensor, expected: int) -> None:
    plan = plan_chunks(x.numel(), 16)
    assert choose_rotations(x.float(), plan) == expected, name
    assert choose_rotations(x.float(), plan, low=2, high=3) == expected + 1


def test_auto_ignores_zero_pieces_and_small_pieces() -> None:
    x = torch.zeros(70000)
    x[:65536] = make_gaussian(65536, 0).float()
    assert choose_rotations(x, plan_chunks(70000, 16)) == 1
    assert math.isnan(float(kurtosis_ratio(torch.zeros(64), plan_chunks(64, 16))[0][0]))
