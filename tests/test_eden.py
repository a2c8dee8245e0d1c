"""EDEN: tables, vNMSE against theory, fractional budgets, aggregation."""

from __future__ import annotations

import math

import pytest
import torch
from factories import make_gaussian, make_lognormal, make_pair, mean_vnmse, vnmse

import fedrot
from fedrot.tables.lloyd_max import lloyd_max
from fedrot.tables.solvers.lloyd_max import solve_lloyd_max

D = 1 << 16
THEORY = {1: 0.5708, 2: 0.1331, 3: 0.03578, 4: 0.00959}
REFERENCE_CENTROIDS = {
    1: [0.7978845608028654],
    2: [0.4527800398860679, 1.5104176087114887],
    3: [0.24509416307340598, 0.7560052489539643, 1.3439092613750225, 2.151945669890335],
}


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_shipped_tables_match_published_and_regenerate(bits: int) -> None:
    lm = lloyd_max(bits)
    half = lm.centroids[len(lm.centroids) // 2 :]
    assert (
        max(abs(a - b) for a, b in zip(half, REFERENCE_CENTROIDS[bits], strict=True))
        < 1e-6
    )
    assert (lm.boundaries == (lm.centroids[:-1] + lm.centroids[1:]) / 2).all()
    pos, e_zq, residual = solve_lloyd_max(bits)
    assert (
        residual < 1e-10
        and abs(pos - half).max() < 1e-12
        and e_zq == pytest.approx(lm.e_zq)
    )


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_vnmse_two_rhts(bits: int) -> None:
    codec = fedrot.get_codec("eden", bits=bits, rotations=2)
    mean, _ = mean_vnmse(codec, make_gaussian(D, bits), range(50))
    assert abs(mean / THEORY[bits] - 1) < 0.02
    assert abs(codec.info(D).expected_vnmse / THEORY[bits] - 1) < 0.001


@pytest.mark.parametrize("bits,exact", [(2, 0.089863), (3, 0.033260), (4, 0.010446)])
def test_pair_one_rht_has_deterministic_error(bits: int, exact: float) -> None:
    codec = fedrot.get_codec("eden", bits=bits, rotations=1)
    _, vals = mean_vnmse(codec, make_pair(1 << 14, 0, 1), range(5))
    assert all(abs(v / exact - 1) < 1e-4 for v in vals)


def test_one_bit_equals_unbiased_drive() -> None:
    x = make_lognormal(5000, 3)
    eden = fedrot.get_codec("eden", bits=1)
    drive = fedrot.get_codec("drive")
    a = eden.decode(eden.encode(x, seed=4, client=8), seed=4, client=8)
    b = drive.decode(drive.encode(x, seed=4, client=8), seed=4, client=8)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_zero_maps_to_negative_neighbour() -> None:
    lm = lloyd_max(2)
    idx = int(torch.bucketize(torch.tensor([0.0]), torch.tensor(lm.boundaries)))
    assert lm.centroids[idx] < 0


@pytest.mark.parametrize("bits", [1.5, 2.25, 3.75])
def test_fractional_bits_above_one(bits: float) -> None:
    codec = fedrot.get_codec("eden", bits=bits)
    x = make_gaussian(D, 5)
    mean, _ = mean_vnmse(codec, x, range(20))
    assert abs(mean / codec.info(D).expected_vnmse - 1) < 0.03
    lo = THEORY[math.floor(bits)]
    hi = THEORY[math.ceil(bits)]
    assert hi < mean < lo
    blob = codec.encode(x, seed=1, client=2)
    assert abs(len(blob) * 8 / D - bits) < 0.01


@pytest.mark.parametrize("bits", [0.25, 0.5, 0.9])
def test_fractional_bits_below_one_is_unbiased_sparsification(bits: float) -> None:
    codec = fedrot.get_codec("eden", bits=bits)
    x = make_gaussian(1 << 14, 6)
    mean, _ = mean_vnmse(codec, x, range(40))
    expected = (1 + math.pi / 2 - 1) / bits - 1
    assert abs(mean / expected - 1) < 0.05
    blob = codec.encode(make_gaussian(D, 7), seed=1, client=2)
    assert abs(len(blob) * 8 / D - bits) < 0.01
    assert abs(len(blob) / codec.info(D).payload_bytes - 1) < 0.02


def test_aggregate_ten_clients_same_vector_averages_errors() -> None:
    codec = fedrot.get_codec("eden", bits=2)
    x = make_gaussian(1 << 14, 0)
    nmse = []
    for seed in range(10):
        clients = list(range(100, 110))
        blobs = [codec.encode(x, seed=seed, client=c) for c in clients]
        nmse.append(vnmse(codec.aggregate(blobs, seed=seed, clients=clients), x))
    assert abs(sum(nmse) / len(nmse) / (THEORY[2] / 10) - 1) < 0.1


def test_aggregate_is_the_weighted_mean_of_decodes() -> None:
    codec = fedrot.get_codec("eden", bits=3)
    xs = [make_gaussian(3000, i) for i in range(3)]
    blobs = [codec.encode(x, seed=2, client=i) for i, x in enumerate(xs)]
    decoded = [codec.decode(b, seed=2, client=i) for i, b in enumerate(blobs)]
    weights = [10.0, 30.0, 0.0]
    mean = codec.aggregate(blobs, seed=2, clients=[0, 1, 2], weights=weights)
    assert torch.allclose(mean, 0.25 * decoded[0] + 0.75 * decoded[1], atol=1e-6)


def test_shared_rotation_would_not_average_out() -> None:
    """Same client id for everyone (= one shared rotation) keeps the error at vNMSE."""
    codec = fedrot.get_codec("eden", bits=2)
    x = make_gaussian(1 << 14, 0)
    blobs = [codec.encode(x, seed=3, client=7) for _ in range(10)]
    assert vnmse(codec.aggregate(blobs, seed=3, clients=[7] * 10), x) > 0.1
