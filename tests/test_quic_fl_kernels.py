"""QUIC-FL's compiled sender and aggregation kernels against the torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import make_block, make_gaussian

from fedrot import _kernels
from fedrot.codecs import get_codec
from fedrot.codecs.quic_fl import private_uniforms, sender, shared_h
from fedrot.seeds import Stream, derive_seed
from fedrot.tables.quic_fl import quic_fl_table

needs_kernels = pytest.mark.skipif(
    not _kernels.available(), reason=f"compiled kernels: {_kernels.status()}"
)

_DS = [1, 5, 64, 1000, 70001, (1 << 17) + 5]
_AGG_DS = [1, 5, 1000, 70001]


def _input(d: int, seed: int) -> torch.Tensor:
    x = make_gaussian(d, seed).float()
    if d > 100:
        x[: d // 3] = 0  # sparse part: 'auto' picks two RHTs
        x[d // 2] = 40.0  # a sure outlier
    return x


@needs_kernels
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("rotations", [1, 2, "auto"])
@pytest.mark.parametrize("d", _DS)
def test_encode_bytes_identical_to_reference(
    bits: int, rotations: int | str, d: int
) -> None:
    codec = get_codec("quic-fl", bits=bits, rotations=rotations)
    x = _input(d, 10 * d + bits)
    for client in (7, 2**64 - 1):
        blob = codec.encode(x, seed=321, client=client)
        with _kernels.enabled(False):
            ref = codec.encode(x, seed=321, client=client)
        assert blob == ref


@needs_kernels
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_sender_kernel_matches_reference_on_adversarial_z(bits: int) -> None:
    """z exactly on the state means, on +-T, beyond T, signed zeros and a dense
    sweep: same messages and outliers as shared_h + private_uniforms + sender."""
    codec = get_codec("quic-fl", bits=bits)
    t = quic_fl_table(bits, 9)
    means = torch.tensor(t.means, dtype=torch.float64)
    special = torch.cat(
        [
            means.float(),
            torch.nextafter(means.float(), torch.tensor(np.inf)),
            torch.nextafter(means.float(), torch.tensor(-np.inf)),
            torch.tensor([t.threshold, -t.threshold, 5.0, -5.0, 0.0, -0.0]).float(),
            torch.linspace(-3.5, 3.5, 20001),
        ]
    )
    z = special[
        torch.randperm(special.numel(), generator=torch.Generator().manual_seed(1))
    ]
    x, idx = codec._quantize(z.contiguous(), 11, 12)
    out = z.abs() > t.threshold
    h = shared_h(11, 12, z.numel(), t.sr_log2, torch.device("cpu"))
    u = private_uniforms(
        derive_seed(11, 12, Stream.PRIVATE), z.numel(), torch.device("cpu")
    )
    ref = sender(z.double().masked_fill(out, 0.0), h, u, codec._tab).masked_fill_(
        out, 0
    )
    assert x.dtype == torch.uint8
    assert torch.equal(x.long(), ref)
    assert torch.equal(idx, torch.nonzero(out).reshape(-1))


@needs_kernels
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("rotations", [1, 2, "auto"])
@pytest.mark.parametrize("d", _AGG_DS)
def test_aggregate_matches_reference(bits: int, rotations: int | str, d: int) -> None:
    """Same sums as the torch path. Per element the kernel does the reference's
    float32 operations in the reference's client order (table value times the norm,
    outliers put back, first client ``est * w``, then ``acc + est * w`` as one fused
    multiply-add like torch's vectorized ``add_(est, alpha=w)``), so the results are
    bit-identical wherever torch fuses that add (its vectorized CPU kernels do; seen
    on x86-64 for every case here). The assertion allows only what a different
    rounding of each of the n additions could change: n float32 ulps of the
    largest term, carried through the orthonormal inverse rotation."""
    codec = get_codec("quic-fl", bits=bits, rotations=rotations)
    n = 6
    xs = [_input(d, 100 * d + i) * (i + 1) for i in range(n)]
    if d > 100:
        xs[2] = make_block(d, 3).float()
    clients = [3, 1, 4, 15, 9, 2**63]
    w = [1.0, 2.5, 0.3, 7.0, 1.1, 0.0]
    blobs = [
        codec.encode(x, seed=5, client=c) for x, c in zip(xs, clients, strict=True)
    ]
    fast = codec.aggregate(blobs, seed=5, clients=clients, weights=w)
    with _kernels.enabled(False):
        ref = codec.aggregate(blobs, seed=5, clients=clients, weights=w)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    scale = max(float(x.norm()) for x in xs) * max(w) / sum(w)
    tol = n * 2.0**-23 * scale
    assert float((fast - ref).norm()) <= tol


@needs_kernels
def test_aggregate_single_client_equals_weighted_decode() -> None:
    codec = get_codec("quic-fl", bits=2)
    x = _input(70001, 3)
    blob = codec.encode(x, seed=1, client=2)
    agg = codec.aggregate([blob], seed=1, clients=[2])
    with _kernels.enabled(False):
        ref = codec.decode(blob, seed=1, client=2)
    assert torch.equal(agg, ref)


@needs_kernels
def test_aggregate_rejects_corrupt_payload_like_reference() -> None:
    from fedrot.errors import PayloadError

    codec = get_codec("quic-fl", bits=2)
    blobs = [codec.encode(_input(1000, i), seed=1, client=i) for i in range(3)]
    bad = bytearray(blobs[1])
    bad[-1] ^= 0xFF
    bad = bytes(bad[:-3])
    for flag in (True, False):
        with _kernels.enabled(flag), pytest.raises(PayloadError, match="Payload 1"):
            codec.aggregate([blobs[0], bad, blobs[2]], seed=1, clients=range(3))


@needs_kernels
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("rotations", [1, 2, "auto"])
@pytest.mark.parametrize("d", [1, 1000, 70001, (1 << 17) + 5])
def test_decode_kernel_bit_identical_to_reference(
    bits: int, rotations: int | str, d: int
) -> None:
    """The per-client decode (the path of FedTrimmedAvg, FedMedian, Krum) with the
    fused estimate kernel gives the torch path's bits, with 1 and 2 threads and for
    inputs beyond 2**32 (rescaled norms and outlier values)."""
    codec = get_codec("quic-fl", bits=bits, rotations=rotations)
    old = torch.get_num_threads()
    for scale in (1.0, 2.0**50):
        x = _input(d, 7 * d + bits) * scale
        blob = codec.encode(x, seed=9, client=2**64 - 2)
        with _kernels.enabled(False):
            ref = codec.decode(blob, seed=9, client=2**64 - 2)
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                out = codec.decode(blob, seed=9, client=2**64 - 2)
                assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
        finally:
            torch.set_num_threads(old)
