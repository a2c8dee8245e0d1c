"""QUIC-FL codec: vNMSE, outliers, shared-rotation aggregation, payload size, errors."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from factories import make_block, make_gaussian, make_onehot, vnmse

import fedrot
import fedrot.codecs._rotation as rotated_module
from fedrot.chunking import plan_chunks
from fedrot.rotation import piece_views, rotate, rotation_keys
from fedrot.tables.quic_fl import quic_fl_table

D = 1 << 16
BOUND = {1: 1.51, 2: 0.2214, 3: 0.0444, 4: 0.00998}
HEAD = 16 + 7  # envelope header + parameter block; the outlier count follows


def _outliers(blob: bytes) -> int:
    return struct.unpack_from("<Q", blob, HEAD)[0]


def _recrc(blob: bytearray) -> bytes:
    body = bytes(blob[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def _variance_at(bits: int, z: float) -> float:
    t = quic_fl_table(bits)
    cols = np.arange(t.table.shape[1])
    s = np.array([(t.table[lv, cols] ** 2).mean() for lv in t.levels])
    return float(np.interp(z, t.means, s)) - z * z


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_vnmse_two_rhts(bits: int) -> None:
    codec = fedrot.get_codec("quic-fl", bits=bits, rotations=2)
    vals, counts = [], []
    for s in range(50):
        x = make_gaussian(D, 100 + s)
        blob = codec.encode(x, seed=s, client=7)
        counts.append(_outliers(blob))
        vals.append(vnmse(codec.decode(blob, seed=s, client=7), x))
    mean = float(np.mean(vals))
    se = float(np.std(vals) / math.sqrt(len(vals)))
    expected = codec.info(D).expected_vnmse
    assert mean <= BOUND[bits]
    assert abs(mean - expected) < 5 * se + 1e-3 * expected, (mean, expected, se)
    # outlier counts ~ Binomial(D, 1/512): mean 128, s.d. 11.3 per seed
    assert abs(np.mean(counts) - 128) < 5 * 11.3 / math.sqrt(50)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_one_hot_one_rht_has_the_table_variance_at_one(bits: int) -> None:
    # one RHT of e_1 gives z = ±1 everywhere: vNMSE has expectation Var(z = 1)
    codec = fedrot.get_codec("quic-fl", bits=bits, rotations=1)
    x = make_onehot(1 << 12)
    vals = [
        vnmse(codec.decode(codec.encode(x, seed=s, client=2), seed=s, client=2), x)
        for s in range(40)
    ]
    assert np.mean(vals) == pytest.approx(_variance_at(bits, 1.0), rel=0.02)


def test_outliers_are_exact_and_compactly_indexed() -> None:
    codec = fedrot.get_codec("quic-fl", bits=2)
    d, seed = 5000, 3
    x = make_gaussian(d, 1).to(torch.float32)
    x[17] = 40.0  # a spike survives two RHTs only partly; z still has tails
    blob = codec.encode(x, seed=seed, client=9)
    plan = plan_chunks(d, 16)
    xp = torch.zeros(plan.padded)
    xp[:d] = x
    y = rotate(xp, plan, rotation_keys(seed, None, 2))
    z = torch.cat(
        [
            (v * math.sqrt(v.shape[1]) / v.norm(dim=1, keepdim=True)).reshape(-1)
            for v in piece_views(y, plan)
        ]
    )
    expect = torch.nonzero(z.abs() > quic_fl_table(2).threshold).reshape(-1)
    n = _outliers(blob)
    assert n == expect.numel() > 0
    width = (plan.padded - 1).bit_length()
    assert len(blob) == codec.payload_size(d, outliers=n)
    values = np.frombuffer(blob[len(blob) - 4 - 4 * n : len(blob) - 4], dtype="<f4")
    assert torch.equal(torch.from_numpy(values.copy()), y[expect])
    # the server's rotated-domain estimate is exact at the outliers
    x_hat = codec.decode(blob, seed=seed, client=9)
    xh = torch.zeros(plan.padded)
    xh[:d] = x_hat
    y_hat = rotate(xh, plan, rotation_keys(seed, None, 2))
    assert (y_hat[expect] - y[expect]).abs().max() < 1e-5 * float(y.norm())
    assert width == 13


@pytest.mark.parametrize("d", [1, 7, 1000, 4096, 70_000])
@pytest.mark.parametrize("bits", [1, 3])
def test_payload_size_formula(d: int, bits: int) -> None:
    codec = fedrot.get_codec("quic-fl", bits=bits)
    blob = codec.encode(make_gaussian(d, d), seed=1, client=2)
    n = _outliers(blob)
    plan = plan_chunks(d, 16)
    w = max(1, (plan.padded - 1).bit_length())
    by_hand = (
        20
        + 7
        + 8
        + 4 * plan.num_pieces
        + math.ceil(plan.padded * bits / 8)
        + math.ceil(n * w / 8)
        + 4 * n
    )
    assert len(blob) == by_hand == codec.payload_size(d, outliers=n)
    info = codec.info(d)
    assert info.payload_bytes == codec.payload_size(
        d, outliers=math.ceil(plan.padded / 512)
    )
    assert info.unbiased and info.shared_rotation
    assert info.expected_vnmse == quic_fl_table(bits).vnmse


def test_bits_per_coordinate_at_two_to_the_sixteen() -> None:
    # D*b + 32 + N*(32 + 16) bits + 35 header bytes; N = 128 expected
    assert fedrot.get_codec("quic-fl", bits=2).payload_size(D, outliers=128) * 8 == (
        D * 2 + 32 + 128 * (32 + 16) + 8 * 35
    )


def test_ten_clients_same_vector_average_out_with_one_inverse(monkeypatch) -> None:
    codec = fedrot.get_codec("quic-fl", bits=2, rotations=2)
    calls = []
    real = rotated_module.unrotate
    monkeypatch.setattr(
        rotated_module, "unrotate", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x = make_gaussian(D, 5)
    clients = list(range(100, 110))
    nmse = []
    for seed in range(5):
        calls.clear()
        blobs = [codec.encode(x, seed=seed, client=c) for c in clients]
        mean = codec.aggregate(blobs, seed=seed, clients=clients)
        assert len(calls) == 1
        nmse.append(vnmse(mean, x))
    assert np.mean(nmse) == pytest.approx(codec.info(D).expected_vnmse / 10, rel=0.10)


def test_aggregate_is_the_weighted_mean_of_decodes() -> None:
    codec = fedrot.get_codec("quic-fl", bits=3)
    xs = [make_gaussian(3000, i) for i in range(4)]
    blobs = [codec.encode(x, seed=8, client=i) for i, x in enumerate(xs)]
    w = [1.0, 2.0, 0.5, 3.0]
    agg = codec.aggregate(blobs, seed=8, clients=range(4), weights=w)
    dec = sum(
        wi * codec.decode(b, seed=8, client=i)
        for i, (b, wi) in enumerate(zip(blobs, w, strict=True))
    )
    assert torch.allclose(agg, dec / sum(w), atol=1e-5)


def test_many_clients_converge_to_the_mean_unbiased() -> None:
    codec = fedrot.get_codec("quic-fl", bits=1)
    x = make_gaussian(1 << 12, 3)
    n = 400
    blobs = [codec.encode(x, seed=4, client=c) for c in range(n)]
    mean = codec.aggregate(blobs, seed=4, clients=range(n))
    # unbiased: error shrinks as vNMSE / n (a bias would leave a floor)
    assert vnmse(mean, x) == pytest.approx(codec.info(4096).expected_vnmse / n, rel=0.2)


def test_auto_groups_clients_by_layer_count(monkeypatch) -> None:
    codec = fedrot.get_codec("quic-fl", bits=2, rotations="auto")
    xs = [make_gaussian(4096, 1), make_block(4096, 4), make_gaussian(4096, 2)]
    blobs = [codec.encode(x, seed=3, client=i) for i, x in enumerate(xs)]
    assert [b[4] for b in blobs] == [1, 2, 1]
    calls = []
    real = rotated_module.unrotate
    monkeypatch.setattr(
        rotated_module, "unrotate", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    agg = codec.aggregate(blobs, seed=3, clients=range(3))
    assert len(calls) == 2
    calls.clear()
    dec = sum(codec.decode(b, seed=3, client=i) for i, b in enumerate(blobs)) / 3
    assert torch.allclose(agg, dec, atol=1e-5)


def test_deterministic_and_client_specific() -> None:
    codec = fedrot.get_codec("quic-fl", bits=2)
    x = make_gaussian(2048, 0)
    a = codec.encode(x, seed=1, client=1)
    assert a == codec.encode(x, seed=1, client=1) != codec.encode(x, seed=1, client=2)
    wrong = codec.decode(a, seed=1, client=2)
    assert vnmse(wrong, x) > 5 * vnmse(codec.decode(a, seed=1, client=1), x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 5}, "`bits` must be an int in 1..4"),
        ({"bits": 2.0}, "`bits` must be an int"),
        ({"outlier_fraction": 0.01}, "`outlier_fraction` must be one of"),
        ({"rotations": 4}, "`rotations` must be one of"),
    ],
)
def test_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fedrot.get_codec("quic-fl", **kwargs)


def test_corrupt_payloads_are_rejected() -> None:
    codec = fedrot.get_codec("quic-fl", bits=2)
    x = make_gaussian(4096, 0)
    x[5] = 300.0
    blob = bytearray(codec.encode(x, seed=1, client=1))
    assert _outliers(bytes(blob)) >= 2
    with pytest.raises(fedrot.PayloadError, match="truncated|CRC"):
        codec.decode(bytes(blob[:-9]), seed=1, client=1)
    big = bytearray(blob)
    struct.pack_into("<Q", big, HEAD, 1 << 40)
    with pytest.raises(fedrot.PayloadError, match="outliers out of"):
        codec.decode(_recrc(big), seed=1, client=1)
    off = bytearray(blob)
    struct.pack_into("<Q", off, HEAD, _outliers(bytes(blob)) + 1)
    with pytest.raises(fedrot.PayloadError, match="inconsistent"):
        codec.decode(_recrc(off), seed=1, client=1)
    # swap the first two outlier indices (13-bit fields) -> not increasing
    plan = plan_chunks(4096, 16)
    start = HEAD + 8 + 4 * plan.num_pieces + plan.padded * 2 // 8
    swapped = bytearray(blob)
    bits = int.from_bytes(swapped[start : start + 4], "little")
    a, b = bits & 0xFFF, (bits >> 12) & 0xFFF
    bits = (bits & ~0xFFFFFF) | b | (a << 12)
    swapped[start : start + 4] = bits.to_bytes(4, "little")
    with pytest.raises(fedrot.PayloadError, match="strictly increasing"):
        codec.decode(_recrc(swapped), seed=1, client=1)
    other = fedrot.get_codec("quic-fl", bits=3)
    with pytest.raises(fedrot.PayloadError, match="parameters"):
        other.decode(bytes(blob), seed=1, client=1)


@pytest.mark.parametrize("outlier_fraction", [1 / 128, 1 / 2048])
def test_outlier_count_bound_is_tight_and_forged_counts_beyond_it_fail(
    outlier_fraction: float,
) -> None:
    # sum(z^2) = D per piece, so at most D / T^2 coordinates can exceed T: build
    # the rotated vector with exactly that many equal entries and rotate it back
    from fedrot.codecs._rotation import Rotated, Rotation

    codec = fedrot.get_codec(
        "quic-fl", bits=2, rotations=1, outlier_fraction=outlier_fraction
    )
    d = 4096
    t = codec.table.threshold
    most = int(d / t**2)
    if d / most <= t * t:  # strictly above the threshold
        most -= 1
    y = torch.zeros(d, dtype=torch.float64)
    y[:most] = 1.0
    rotation = Rotation(1, shared=True)
    plan = rotation.plan(d)
    x = rotation.inverse(Rotated(plan, 1, y.float()), seed=3, client=0)
    blob = codec.encode(x, seed=3, client=5)
    assert _outliers(blob) == most  # the bound is reached by a genuine payload
    assert codec.decode(blob, seed=3, client=5).shape == (d,)
    limit = int(plan.padded * 1.001 / t**2) + plan.num_pieces
    for count in (limit + 1, plan.padded):
        forged = bytearray(blob)
        struct.pack_into("<Q", forged, HEAD, count)
        with pytest.raises(fedrot.PayloadError, match="at most"):
            codec.check(_recrc(forged))
