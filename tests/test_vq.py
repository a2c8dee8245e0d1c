"""VQ codec and codebooks: Lloyd conditions, Gaussian vNMSE, pair collapse, sizes."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from factories import make_gaussian, make_pair, mean_vnmse, vnmse

import fedrot
from fedrot.chunking import plan_chunks
from fedrot.codecs.vq import VQCodec
from fedrot.tables.solvers.vq import gaussian_blocks, train_codebook
from fedrot.tables.vq import CONFIGS, codebook, nearest

EDEN = {1: 0.5708, 2: 0.1331, 3: 0.03578}


@pytest.mark.parametrize(("block", "bits"), CONFIGS)
def test_codebooks_load_and_beat_or_match_scalar_eden(block: int, bits: int) -> None:
    cb = codebook(block, bits)
    assert cb.codewords.shape == (1 << (block * bits), block)
    assert cb.vnmse == pytest.approx(cb.q2 / cb.e_zq**2 - 1)
    # 1 bit/coordinate in 2-D cannot beat the sign quantizer; everything else must
    assert cb.vnmse < EDEN[bits] * (1.002 if bits == 1 else 0.95)


@pytest.mark.parametrize(
    ("block", "bits", "tol"), [(2, 2, 0.02), (4, 1, 0.02), (2, 3, 0.04)]
)
def test_shipped_codebooks_satisfy_lloyd_conditions(
    block: int, bits: int, tol: float
) -> None:
    cw = torch.tensor(codebook(block, bits).codewords, dtype=torch.float32)
    z = gaussian_blocks(12345, 1 << 18, block)
    idx = nearest(z, cw)
    k = cw.shape[0]
    sums = torch.zeros(k, block, dtype=torch.float64).index_add_(0, idx, z.double())
    cnt = torch.bincount(idx, minlength=k)
    assert (cnt > 0).all()
    centroids = sums / cnt[:, None]
    assert (centroids - cw.double()).abs().max() < tol


def test_gaussian_blocks_are_standard_normal() -> None:
    z = gaussian_blocks(7, 1 << 18, 2).double()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.01
    assert abs(float(torch.corrcoef(z.T)[0, 1])) < 0.01
    assert torch.equal(gaussian_blocks(7, 10, 2), gaussian_blocks(7, 10, 2))


@pytest.mark.parametrize(("block", "bits"), [(2, 1), (2, 2), (4, 2)])
def test_gaussian_vnmse_three_rhts(block: int, bits: int) -> None:
    codec = fedrot.get_codec("vq", bits=bits, block=block)
    vals = [
        vnmse(codec.decode(codec.encode(x, seed=s, client=1), seed=s, client=1), x)
        for s in range(20)
        for x in [make_gaussian(1 << 16, s)]
    ]
    assert np.mean(vals) == pytest.approx(codec.info(1 << 16).expected_vnmse, rel=0.02)


def test_two_bit_vq_beats_two_bit_eden_measured() -> None:
    x = make_gaussian(1 << 16, 42)
    vq, _ = mean_vnmse(fedrot.get_codec("vq", bits=2), x, range(10))
    eden, _ = mean_vnmse(fedrot.get_codec("eden", bits=2), x, range(10))
    assert vq < 0.95 * eden


def test_pair_collapse_needs_three_rhts() -> None:
    d = 1 << 14
    x = make_pair(d)
    gauss = codebook(2, 2).vnmse
    two, per_seed = mean_vnmse(
        fedrot.get_codec("vq", bits=2, rotations=2), x, range(30)
    )
    three, _ = mean_vnmse(fedrot.get_codec("vq", bits=2, rotations=3), x, range(30))
    assert two > 1.2 * gauss
    assert three == pytest.approx(gauss, rel=0.03)


def test_auto_never_uses_one_rht_and_one_is_rejected() -> None:
    alternating = torch.where(torch.arange(4096) % 2 == 0, 1.0, 0.1)
    codec = fedrot.get_codec("vq", rotations="auto")
    assert codec.encode(alternating, seed=1, client=1)[4] == 2
    assert codec.encode(make_pair(4096), seed=1, client=1)[4] == 3
    with pytest.raises(ValueError, match="rotations.*one RHT"):
        fedrot.get_codec("vq", rotations=1)


@pytest.mark.parametrize("d", [1, 33, 1000, 4096, 70_000])
@pytest.mark.parametrize(("block", "bits"), [(2, 3), (4, 1)])
def test_payload_size_formula(d: int, block: int, bits: int) -> None:
    codec = fedrot.get_codec("vq", bits=bits, block=block)
    x = make_gaussian(d, d)
    blob = codec.encode(x, seed=2, client=3)
    plan = plan_chunks(d, 16)
    blocks = math.ceil(plan.padded / block)
    assert len(blob) == 20 + 7 + 4 * plan.num_pieces + math.ceil(
        blocks * block * bits / 8
    )
    assert len(blob) == codec.info(d).payload_bytes
    out = codec.decode(blob, seed=2, client=3)
    assert out.shape == (d,) and bool(torch.isfinite(out).all())
    if d >= 1000:
        assert vnmse(out, x) < 3 * codec.info(d).expected_vnmse


def test_unbiased_over_clients() -> None:
    codec = fedrot.get_codec("vq", bits=1, block=2)
    x = make_gaussian(1 << 10, 9)
    n = 300
    blobs = [codec.encode(x, seed=5, client=c) for c in range(n)]
    mean = codec.aggregate(blobs, seed=5, clients=range(n))
    assert vnmse(mean, x) == pytest.approx(
        codec.info(1024).expected_vnmse / n, rel=0.25
    )


def test_bad_parameters_and_payloads() -> None:
    with pytest.raises(ValueError, match="shipped codebooks"):
        VQCodec(bits=2, block=3)
    with pytest.raises(ValueError, match="shipped codebooks"):
        VQCodec(bits=3, block=4)
    codec = VQCodec(bits=2)
    good = codec.encode(make_gaussian(4096, 0), seed=1, client=1)
    blob = bytearray(good)
    with pytest.raises(fedrot.PayloadError):
        codec.decode(bytes(blob[:-6]), seed=1, client=1)
    blob[4] = 1  # declare one RHT layer and fix the CRC
    body = bytes(blob[:-4])
    forged = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(fedrot.PayloadError, match="RHT layer"):
        codec.decode(forged, seed=1, client=1)
    with pytest.raises(fedrot.PayloadError, match="parameters"):
        VQCodec(bits=2, block=4).decode(good, seed=1, client=1)


@pytest.mark.slow
def test_regeneration_reproduces_shipped_codebook() -> None:
    cw, (mse, _, _) = train_codebook(2, 2)
    assert mse == pytest.approx(codebook(2, 2).mse, rel=1e-4)
    assert np.abs(cw - codebook(2, 2).codewords).max() < 1e-5
