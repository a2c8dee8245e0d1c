"""DRIVE: vNMSE against theory, the 1-RHT failures, bias, sizes."""

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
    mean_vnmse,
    vnmse,
)

import fedrot

D = 1 << 16
UNBIASED, BIASED = math.pi / 2 - 1, (1 - 2 / math.pi) * (1 - 1 / D)


@pytest.mark.parametrize("scale,theory", [("unbiased", UNBIASED), ("biased", BIASED)])
def test_gaussian_vnmse_two_rhts(scale: str, theory: float) -> None:
    codec = fedrot.get_codec("drive", scale=scale, rotations=2)
    mean, _ = mean_vnmse(codec, make_gaussian(D, 0), range(50))
    assert abs(mean / theory - 1) < 0.02


@pytest.mark.parametrize("i,j", [(0, 1), (5, 40000)])
def test_pair_with_one_rht_fails_exactly_and_two_rhts_fix_it(i: int, j: int) -> None:
    x = make_pair(D, i, j)
    _, unb = mean_vnmse(fedrot.get_codec("drive", rotations=1), x, range(10))
    _, bia = mean_vnmse(
        fedrot.get_codec("drive", scale="biased", rotations=1), x, range(10)
    )
    assert all(abs(v - 1.0) < 1e-5 for v in unb)
    assert all(abs(v - 0.5) < 1e-5 for v in bia)
    m_unb, _ = mean_vnmse(fedrot.get_codec("drive", rotations=2), x, range(50))
    m_bia, _ = mean_vnmse(
        fedrot.get_codec("drive", scale="biased", rotations=2), x, range(50)
    )
    assert abs(m_unb / UNBIASED - 1) < 0.02 and abs(m_bia / BIASED - 1) < 0.02


def test_four_sparse_one_rht_per_seed_values() -> None:
    x = make_block(1 << 12, 4)
    _, unb = mean_vnmse(fedrot.get_codec("drive", rotations=1), x, range(200))
    assert all(min(abs(v), abs(v - 3)) < 1e-5 for v in unb)
    assert 1.2 <= sum(unb) / len(unb) <= 1.8
    _, bia = mean_vnmse(
        fedrot.get_codec("drive", scale="biased", rotations=1), x, range(50)
    )
    assert all(min(abs(v), abs(v - 0.75)) < 1e-5 for v in bia)


def test_onehot_one_rht_is_exact() -> None:
    for scale in ("unbiased", "biased"):
        _, vals = mean_vnmse(
            fedrot.get_codec("drive", scale=scale, rotations=1),
            make_onehot(D),
            range(5),
        )
        assert max(vals) < 1e-10


SECTION7 = {
    "gaussian": make_gaussian(D, 7),
    "lognormal": make_lognormal(D, 8),
    "dense ±1": make_dense_pm1(D),
    "one-hot": make_onehot(D),
    "pair": make_pair(D, 2, 3),
    "4-sparse": make_block(D, 4),
    "scattered 4-sparse": make_onehot(D, 1)
    + make_onehot(D, 2)
    + make_onehot(D, 4)
    + make_onehot(D, 8),
    "8-sparse": make_block(D, 8),
    "16-sparse": make_block(D, 16),
    "64-sparse": make_block(D, 64),
    "spike": make_spike(D, 9),
}


@pytest.mark.parametrize("name", sorted(SECTION7))
def test_auto_stays_near_urr_on_every_reference_input(name: str) -> None:
    codec = fedrot.get_codec("drive", rotations="auto")
    mean, _ = mean_vnmse(codec, SECTION7[name], range(50))
    assert abs(mean / UNBIASED - 1) < 0.03, (name, mean)


def test_unbiased_scale_averages_to_x_and_biased_shrinks() -> None:
    d, n = 1 << 12, 400
    x = make_lognormal(d, 1)
    for scale, slope in (
        ("unbiased", 1.0),
        ("biased", 2 / math.pi + (1 - 2 / math.pi) / d),
    ):
        codec = fedrot.get_codec("drive", scale=scale)
        acc = torch.zeros(d, dtype=torch.float64)
        for s in range(n):
            acc += codec.decode(
                codec.encode(x, seed=s, client=9), seed=s, client=9
            ).double()
        mean = acc / n
        assert abs(float(mean @ x / (x @ x)) - slope) < 0.005
        if scale == "unbiased":
            # error of the average shrinks like vNMSE / n
            assert vnmse(mean, x) < 2 * UNBIASED / n


def test_payload_size_is_d_plus_32_bits_plus_header() -> None:
    codec = fedrot.get_codec("drive")
    blob = codec.encode(make_gaussian(D, 0), seed=1, client=1)
    header = 20 + 2  # envelope + params (scale, rotation mode)
    assert len(blob) == D // 8 + 4 + header == codec.info(D).payload_bytes
    assert codec.info(D).header_bytes == header + 4
