"""Compiled seeded streams (uniforms, masks) and the codecs that use them, against
the torch reference: the same values, the same payload bytes, the same decodes."""

from __future__ import annotations

import pytest
import torch
from factories import make_gaussian

from fedrot import _kernels, bitpack
from fedrot.codecs import get_codec
from fedrot.codecs._streams import gather, mask, scatter, uniforms
from fedrot.seeds import uniforms_torch

needs_kernels = pytest.mark.skipif(
    not _kernels.available(), reason=f"compiled kernels: {_kernels.status()}"
)
_CPU = torch.device("cpu")


@needs_kernels
@pytest.mark.parametrize("n", [0, 1, 63, 65536, 65537, 300001])
@pytest.mark.parametrize("key", [0, 12345, 2**64 - 1])
def test_uniforms_equal_reference(n: int, key: int) -> None:
    ref = uniforms_torch(key, n)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.equal(uniforms(key, n, _CPU), ref)
    finally:
        torch.set_num_threads(old)


@needs_kernels
@pytest.mark.parametrize("p", [0.5, 0.7, 0.1, 0.9, 1 / 3, 2.0**-24, 1.0 - 2.0**-25])
def test_mask_equals_float32_comparison(p: float) -> None:
    """torch compares a float32 tensor with a Python float in float32 (p rounded
    first); 0.7 and 0.9 round down, so u == float32(p) tells the two readings apart."""
    n, key = 300001, 99
    ref = uniforms_torch(key, n) < p
    m, count = mask(key, n, p, _CPU)
    assert m.dtype == torch.bool and torch.equal(m, ref)
    assert count == int(ref.sum())
    pf = torch.tensor(p, dtype=torch.float32)
    assert not bool((pf.reshape(1) < p).item())  # the reading the kernel follows


_CODECS = [
    ("hadamard-sq", {"bits": 1}),
    ("hadamard-sq", {"bits": 4, "rotations": 2}),
    ("qsgd", {"levels": 15}),
    ("qsgd", {"levels": 1}),
    ("terngrad", {}),
    ("terngrad", {"clip": 2.5}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 2.5, "rotations": 3}),
    ("eden", {"bits": 3.25}),
    ("eden", {"bits": 4.5, "rotations": 1}),
    ("eden", {"bits": 7.5}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 4}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 0.1}),
]


@needs_kernels
@pytest.mark.parametrize("name,kw", _CODECS)
@pytest.mark.parametrize("d", [1, 1000, 70001, (1 << 17) + 3])
def test_payloads_and_decodes_identical_to_reference(
    name: str, kw: dict, d: int
) -> None:
    codec = get_codec(name, **kw)
    x = make_gaussian(d, 3 * d + 1).float()
    x[: d // 4] = 0
    blob = codec.encode(x, seed=77, client=2**63 + 5)
    out = codec.decode(blob, seed=77, client=2**63 + 5)
    with _kernels.enabled(False):
        ref_blob = codec.encode(x, seed=77, client=2**63 + 5)
        ref = codec.decode(ref_blob, seed=77, client=2**63 + 5)
    assert blob == ref_blob
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))


@needs_kernels
@pytest.mark.parametrize("w1,w0", [(2, 1), (3, 2), (8, 7), (5, 4)])
@pytest.mark.parametrize("n", [1, 7, 1000, 65541])
def test_pack_split_equals_two_reference_packs(w1: int, w0: int, n: int) -> None:
    gen = torch.Generator().manual_seed(n + w1)
    sel = torch.rand(n, generator=gen) < 0.37
    codes = torch.where(
        sel,
        torch.randint(0, 1 << w1, (n,), generator=gen),
        torch.randint(0, 1 << w0, (n,), generator=gen),
    ).to(torch.uint8)
    count = int(sel.sum())
    out = _kernels.pack_split(codes, sel, count, w1, w0)
    assert out is not None
    with _kernels.enabled(False):
        ref1 = bitpack.pack(codes[sel].long(), w1)
        ref0 = bitpack.pack(codes[~sel].long(), w0)
    assert torch.equal(out[0], ref1) and torch.equal(out[1], ref0)
    assert _kernels.pack_split(codes, sel, n + 1, w1, w0) is None  # impossible count


@needs_kernels
@pytest.mark.parametrize("w1,w0", [(2, 1), (3, 2), (8, 7), (5, 4)])
@pytest.mark.parametrize("n", [1, 7, 1000, 65541])
def test_dequantize_split_inverts_pack_split_through_tables(
    w1: int, w0: int, n: int
) -> None:
    gen = torch.Generator().manual_seed(n * w0 + 3)
    sel = torch.rand(n, generator=gen) < 0.61
    count = int(sel.sum())
    codes1 = torch.randint(0, 1 << w1, (count,), generator=gen)
    codes0 = torch.randint(0, 1 << w0, (n - count,), generator=gen)
    table1 = torch.randn(1 << w1, generator=gen)
    table0 = torch.randn(1 << w0, generator=gen)
    with _kernels.enabled(False):
        data1, data0 = bitpack.pack(codes1, w1), bitpack.pack(codes0, w0)
    ref = torch.empty(n)
    ref[sel], ref[~sel] = table1[codes1], table0[codes0]
    out = _kernels.dequantize_split(data1, w1, table1, data0, w0, table0, sel)
    assert out is not None and torch.equal(out.view(torch.int32), ref.view(torch.int32))
    # a table of the wrong size is declined (the caller then uses torch)
    assert (
        _kernels.dequantize_split(data1, w1, table1[:-1], data0, w0, table0, sel)
        is None
    )


@needs_kernels
@pytest.mark.parametrize("n", [1, 2, 1000, 65541])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_gather_and_scatter_equal_boolean_indexing(n: int, p: float) -> None:
    gen = torch.Generator().manual_seed(n)
    v = torch.randn(n, generator=gen)
    v[::7] = -0.0  # signed zeros are copied as they are
    keep = torch.rand(n, generator=gen) < p
    kept = int(keep.sum())
    got = gather(v, keep, kept)
    assert torch.equal(got.view(torch.int32), v[keep].view(torch.int32))
    ref = torch.zeros(n)
    ref[keep] = v[keep]
    back = scatter(v[keep].clone(), keep)
    assert torch.equal(back.view(torch.int32), ref.view(torch.int32))
    assert _kernels.compress(v, keep, kept) is not None
    if kept:
        assert _kernels.expand(v[keep].clone(), keep) is not None
