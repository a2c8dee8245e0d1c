"""RHT stacks: exact inversion, norms, known structure, the auto rule."""

from __future__ import annotations

import math

import pytest
import torch
from factories import (
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


def test_rotation_setting_validates_and_names_mode_and_layers() -> None:
    from fedrot.codecs._rotation import Rotation

    with pytest.raises(
        ValueError, match="`rotations` must be one of \\[1, 2, 3, 'auto'\\]"
    ):
        Rotation(4)
    with pytest.raises(ValueError, match="`rotations`"):
        Rotation(True)
    with pytest.raises(ValueError, match="`chunk_size` must be a power of two"):
        Rotation(2, chunk_size=1000)
    with pytest.raises(ValueError, match="\\[2, 3, 'auto'\\]"):
        Rotation(1, modes=(2, 3, "auto"))
    assert Rotation(2).layer_counts == (2,)
    assert Rotation("auto").layer_counts == (1, 2)
    assert Rotation("auto", auto=(2, 3)).layer_counts == (2, 3)
    assert Rotation(3, chunk_size=1 << 10).params() == {
        "rotations": 3,
        "chunk_size": 1024,
    }
    assert Rotation(3, chunk_size=1 << 10).chunk_log2 == 10


def test_rotation_checks_headers() -> None:
    from fedrot import PayloadError
    from fedrot.codecs._rotation import Rotation

    r = Rotation("auto", chunk_size=1 << 12)
    r.check(12, 1)
    r.check(12, 2)
    with pytest.raises(PayloadError, match="3 RHT layer\\(s\\), impossible"):
        r.check(12, 3)
    with pytest.raises(PayloadError, match="chunk_size=1024 vs chunk_size=4096"):
        r.check(10, 1)
    with pytest.raises(PayloadError, match="0 RHT"):
        r.check(12, 0)
    r.check(12, 0, empty_ok=True)


@pytest.mark.parametrize("mode", [1, 2, 3, "auto"])
@pytest.mark.parametrize("d", [1, 4096, 5000])
def test_rotation_forward_and_inverse_copy_and_in_place_agree(
    mode: int | str, d: int
) -> None:
    from fedrot.codecs._rotation import Rotation

    r = Rotation(mode, chunk_size=1 << 12)
    x = make_gaussian(d, 3).float()
    before = x.clone()
    out = r.forward(x, seed=5, client=6)
    assert torch.equal(x, before)  # the copy leaves its input alone
    assert out.layers in r.layer_counts and out.y.numel() == out.plan.padded
    in_place = r.forward_(x.clone(), seed=5, client=6)
    assert torch.equal(in_place.y, out.y) and in_place.layers == out.layers
    back = r.inverse(out, seed=5, client=6)
    assert torch.equal(out.y, in_place.y)  # inverse copies too
    assert torch.equal(r.inverse_(in_place, seed=5, client=6), back)
    assert float((back - before).abs().max()) < 1e-5 * max(1.0, float(before.norm()))
    if d > 1:  # per-client rotations differ
        assert not torch.equal(r.forward(x, seed=5, client=7).y, out.y)


def test_shared_rotation_ignores_the_client() -> None:
    from fedrot.codecs._rotation import Rotation

    r = Rotation(2, shared=True)
    x = make_gaussian(3000, 1).float()
    a = r.forward(x, seed=9, client=1)
    assert torch.equal(a.y, r.forward(x, seed=9, client=2).y)
    assert r.keys(9, 1, 2) == rotation_keys(9, None, 2)
    assert Rotation(2).keys(9, 1, 2) == rotation_keys(9, 1, 2)
