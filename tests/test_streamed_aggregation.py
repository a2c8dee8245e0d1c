"""Per-client DRIVE/EDEN aggregation streamed into one running sum (compiled kernel)
against the torch path that decodes every payload and sums with mul_/add_."""

from __future__ import annotations

import pytest
import torch
from factories import make_gaussian

from fedrot import _kernels
from fedrot.codecs import get_codec

needs_kernels = pytest.mark.skipif(
    not _kernels.available(), reason=f"compiled kernels: {_kernels.status()}"
)

_CODECS = [
    ("eden", {"bits": 1}),
    ("eden", {"bits": 2, "rotations": "auto"}),
    ("eden", {"bits": 4, "chunk_size": 4096}),
    ("eden", {"bits": 8, "rotations": 3}),
    ("eden", {"bits": 1.5}),  # not streamed: the one-by-one path, same contract
    ("drive", {}),
    ("drive", {"scale": "biased", "rotations": 1}),
]


@needs_kernels
@pytest.mark.parametrize("name,kw", _CODECS)
@pytest.mark.parametrize("d", [1, 33, 70001, (1 << 17) + 3])
def test_streamed_sum_bit_identical_to_reference(name: str, kw: dict, d: int) -> None:
    codec = get_codec(name, **kw)
    xs = [make_gaussian(d, 11 * d + i).float() * (i + 1) for i in range(5)]
    xs[1][: d // 2] = 0  # sparse: 'auto' picks another layer count for this client
    clients = [3, 1, 4, 2**64 - 1, 9]
    weights = [1.0, 2.5, 0.3, 7.0, 0.0]
    blobs = [
        codec.encode(x, seed=5, client=c) for x, c in zip(xs, clients, strict=True)
    ]
    with _kernels.enabled(False):
        ref = codec.aggregate(blobs, seed=5, clients=clients, weights=weights)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = codec.aggregate(blobs, seed=5, clients=clients, weights=weights)
            assert out.shape == (d,) and out.dtype == torch.float32
            assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
    finally:
        torch.set_num_threads(old)


@needs_kernels
@pytest.mark.parametrize("name", ["eden", "drive"])
def test_rescaled_payloads_fall_back_to_the_same_sum(name: str) -> None:
    """A client whose scales need rescaling (input beyond 2**32) is summed one by
    one, with the same result as the torch path."""
    codec = get_codec(name)
    d = 5000
    xs = [make_gaussian(d, 1).float(), make_gaussian(d, 2).float() * 2.0**60]
    blobs = [codec.encode(x, seed=1, client=c) for c, x in enumerate(xs)]
    out = codec.aggregate(blobs, seed=1, clients=[0, 1])
    with _kernels.enabled(False):
        ref = codec.aggregate(blobs, seed=1, clients=[0, 1])
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))


@needs_kernels
def test_single_client_sum_equals_its_decode() -> None:
    codec = get_codec("eden", bits=2)
    x = make_gaussian(70001, 4).float()
    blob = codec.encode(x, seed=2, client=8)
    agg = codec.aggregate([blob], seed=2, clients=[8])
    assert torch.equal(agg, codec.decode(blob, seed=2, client=8))
