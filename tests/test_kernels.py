"""Fast paths against the torch reference: bit-identical transforms and payloads."""

from __future__ import annotations

import ctypes
import math
import re
from pathlib import Path

import pytest
import torch
from factories import make_gaussian, make_onehot

from fedrot import _kernels, bitpack
from fedrot.chunking import plan_chunks
from fedrot.codecs import get_codec
from fedrot.hadamard import fwht, fwht_, fwht_reference
from fedrot.rotation import rotate, rotation_keys, unrotate

needs_kernels = pytest.mark.skipif(
    not _kernels.available(), reason=f"compiled kernels: {_kernels.status()}"
)


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equality of the bit patterns (tells -0.0 from 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = torch.int32 if a.dtype == torch.float32 else torch.int64
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def test_disabled_context_forces_the_torch_path() -> None:
    with _kernels.enabled(False):
        assert not _kernels.available()
        assert "disabled" in _kernels.status()
        y = fwht(torch.tensor([1.0, 1.0]))
        assert torch.allclose(y, torch.tensor([2**0.5, 0.0]))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("log2", [*range(0, 14), 16, 17])
@pytest.mark.parametrize("rows", [1, 3])
def test_fwht_bit_identical_to_reference(
    dtype: torch.dtype, log2: int, rows: int
) -> None:
    g = torch.Generator().manual_seed(log2 * 7 + rows)
    x = torch.randn(rows, 1 << log2, generator=g, dtype=dtype) * 3
    ref = fwht_reference(x)
    assert _bits_equal(fwht(x), ref)
    y = x.clone()
    fwht_(y)
    assert _bits_equal(y, ref)


@needs_kernels
def test_fwht_large_multithreaded_matches_reference_and_oracle() -> None:
    x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(1))
    assert _bits_equal(fwht(x), fwht_reference(x))
    x64 = x.double()
    # float64 result against the float64 reference and exact self-inversion
    y = fwht(x64)
    assert float((y - fwht_reference(x64)).abs().max()) < 1e-12
    assert float((fwht(y) - x64).abs().max()) < 1e-12


@needs_kernels
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 7, 31, 1000, 70001, (1 << 17) + 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotation_stack_bit_identical(k: int, d: int, dtype: torch.dtype) -> None:
    plan = plan_chunks(d, 16)
    x = torch.zeros(plan.padded, dtype=dtype)
    x[:d] = make_gaussian(d, d).to(dtype)
    keys = rotation_keys(5, 9, k)
    fast_y = rotate(x, plan, keys)
    fast_back = unrotate(fast_y, plan, keys)
    with _kernels.enabled(False):
        ref_y = rotate(x, plan, keys)
        ref_back = unrotate(ref_y, plan, keys)
    assert _bits_equal(fast_y, ref_y)
    assert _bits_equal(fast_back, ref_back)


@needs_kernels
def test_signed_zero_and_onehot_agree() -> None:
    plan = plan_chunks(64, 16)
    x = make_onehot(64, 3).float()
    keys = rotation_keys(1, 2, 2)
    with _kernels.enabled(False):
        ref = rotate(x, plan, keys)
    assert _bits_equal(rotate(x, plan, keys), ref)
    assert bool((ref == 0).any())  # exact zeros occur: their signs must agree too
    one = rotate(x, plan, keys[:1])
    assert torch.equal(one.abs(), torch.full((64,), 1 / 8.0))


_CODECS = [
    ("eden", {"bits": 1}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 3}),
    ("eden", {"bits": 4}),
    ("eden", {"bits": 8}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 0.5}),
    ("drive", {}),
    ("drive", {"scale": "biased"}),
    ("hadamard-sq", {"bits": 1}),
    ("hadamard-sq", {"bits": 3}),
    ("quic-fl", {"bits": 2}),
]


@needs_kernels
@pytest.mark.parametrize("name,kw", _CODECS)
@pytest.mark.parametrize("rotations", [1, 2, 3, "auto"])
@pytest.mark.parametrize("d", [1, 33, 70001])
def test_payload_bytes_identical_to_reference(
    name: str, kw: dict, rotations: int | str, d: int
) -> None:
    if name == "quic-fl" and rotations == 3:
        pytest.skip("QUIC-FL allows 1, 2 or 'auto' RHTs")
    codec = get_codec(name, rotations=rotations, **kw)
    x = make_gaussian(d, d + 1).float()
    if d > 100:
        x[: d // 3] = 0  # sparse part: 'auto' picks two RHTs
    blob = codec.encode(x, seed=123, client=45)
    out = codec.decode(blob, seed=123, client=45)
    with _kernels.enabled(False):
        ref_blob = codec.encode(x, seed=123, client=45)
        ref_out = codec.decode(ref_blob, seed=123, client=45)
    assert blob == ref_blob
    assert _bits_equal(out, ref_out)


@needs_kernels
@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 12, 17, 32])
@pytest.mark.parametrize("n", [0, 1, 9, 1000, 4099])
def test_bitpack_fast_path_matches_reference(width: int, n: int) -> None:
    g = torch.Generator().manual_seed(width * 1000 + n)
    top = (1 << width) - 1
    codes = torch.randint(0, 1 << min(width, 62), (n,), generator=g) & top
    packed = bitpack.pack(codes, width)
    unpacked = bitpack.unpack(packed, n, width)
    with _kernels.enabled(False):
        ref = bitpack.pack(codes, width)
        ref_un = bitpack.unpack(ref, n, width)
    assert torch.equal(packed, ref) and packed.dtype == torch.uint8
    assert torch.equal(unpacked, ref_un) and unpacked.dtype == torch.int64
    assert torch.equal(unpacked, codes)


def test_rotation_scale_constant_is_float32_rounded() -> None:
    """The kernel scales by float32(1/sqrt(D)), like torch's mul_ on float32."""
    x = torch.ones(1, 2)
    assert float(fwht(x)[0, 0]) == float(torch.tensor(2.0) * (1.0 / math.sqrt(2)))


# ------------------------------------------------- prototypes against the C source
_C_SCALARS: dict[str, type] = {
    "i64": ctypes.c_int64,
    "int64_t": ctypes.c_int64,
    "u64": ctypes.c_uint64,
    "uint64_t": ctypes.c_uint64,
    "int": ctypes.c_int,
    "int32_t": ctypes.c_int32,
    "uint8_t": ctypes.c_uint8,
    "bool": ctypes.c_bool,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}
_C_SOURCE = Path(_kernels.__file__).with_name("_kernels.c")


def _c_type(text: str) -> type | None:
    """ctypes type of a C type spelling (``const`` ignored, ``void *`` untyped)."""
    stars = text.count("*")
    words = [w for w in text.replace("*", " ").split() if w != "const"]
    if words == ["void"]:
        if stars == 0:
            return None
        ctype: type = ctypes.c_void_p
        stars -= 1
    elif len(words) == 1 and words[0] in _C_SCALARS:
        ctype = _C_SCALARS[words[0]]
    else:
        raise AssertionError(f"no ctypes mapping for the C type {text!r}")
    for _ in range(stars):
        ctype = ctypes.POINTER(ctype)
    return ctype


def _expand_macros(text: str) -> str:
    """Expand file-scope instantiations of function-like macros (with ``##``)."""
    macros: dict[str, tuple[list[str], str]] = {}
    kept = []
    for line in text.split("\n"):
        m = re.match(r"\s*#\s*define\s+(\w+)\(([^)]*)\)(.*)", line)
        if m:
            macros[m[1]] = ([p.strip() for p in m[2].split(",")], m[3])
        elif not line.lstrip().startswith("#"):
            kept.append(line)

    def expand(m: re.Match[str]) -> str:
        if m[1] not in macros:
            return m[0]
        params, body = macros[m[1]]
        values = dict(zip(params, [a.strip() for a in m[2].split(",")], strict=True))
        body = re.sub(r"\w+", lambda t: values.get(t[0], t[0]), body)
        return re.sub(r"\s*##\s*", "", body)

    return re.sub(r"^(\w+)\(([^()]*)\)\s*$", expand, "\n".join(kept), flags=re.M)


def _c_exports(source: str) -> dict[str, tuple[type | None, list[tuple[str, type]]]]:
    """The non-static file-scope function definitions of a C source:
    name -> (return ctypes type, [(parameter name, ctypes type), ...])."""
    text = source.replace("\\\n", " ")
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = _expand_macros(text)
    found: dict[str, tuple[type | None, list[tuple[str, type]]]] = {}
    depth, head = 0, []
    for ch in text:
        if depth == 0 and ch == "{":
            m = re.fullmatch(
                r"\s*([\w\s*]+?)\s*\b(\w+)\s*\(([^()]*)\)\s*", "".join(head)
            )
            if m and "static" not in m[1].split():
                params = []
                for p in m[3].split(","):
                    pm = re.fullmatch(r"\s*(.*?)\s*\b(\w+)\s*", p)
                    assert pm is not None, p
                    ctype = _c_type(pm[1])
                    assert ctype is not None, p
                    params.append((pm[2], ctype))
                assert m[2] not in found, f"{m[2]} defined twice"
                found[m[2]] = (_c_type(m[1]), params)
            head = []
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            head = []
        elif depth == 0:
            head = [] if ch == ";" else [*head, ch]
    return found


def _drift(source: str) -> list[str]:
    """Every difference between the C definitions and ``_kernels.PROTOTYPES``."""
    exports = _c_exports(source)
    problems = [
        f"{name}: in one place only"
        for name in sorted(set(exports) ^ set(_kernels.PROTOTYPES))
    ]
    for name, (restype, params) in exports.items():
        proto = _kernels.PROTOTYPES.get(name)
        if proto is None:
            continue
        if proto.restype is not restype:
            problems.append(f"{name}: returns {restype}, declared {proto.restype}")
        if list(proto.params) != params:
            problems.append(f"{name}: C {params} != declared {list(proto.params)}")
    return problems


def test_prototypes_match_the_c_source() -> None:
    """Names, count, order and types of every exported kernel's parameters."""
    source = _C_SOURCE.read_text()
    exports = _c_exports(source)
    assert {"fedrot_rht_f32", "fedrot_rht_f64"} <= set(exports)  # macro-made
    assert len(exports["fedrot_quic_send_f32"][1]) == 18
    assert _drift(source) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("i64 fedrot_quic_send_f32(", "int fedrot_quic_send_f32("),  # return type
        ("int l,\n                         const double", "i64 l,\n const double"),
        ("int esize) {", "int esize, int extra) {"),  # one parameter more
        ("float *out) {\n    uint8_t buf", "double *out) {\n    uint8_t buf"),
        ("T s, int threads)", "double s, int threads)"),  # inside the FWHT macro
        ("void fedrot_pack(", "static void fedrot_pack("),  # no longer exported
    ],
)
def test_prototype_check_detects_drift(before: str, after: str) -> None:
    source = _C_SOURCE.read_text()
    assert before in source
    assert _drift(source.replace(before, after, 1)) != []


@needs_kernels
def test_kernels_take_exactly_their_named_arguments() -> None:
    lib = _kernels._lib()
    assert lib is not None and set(lib) == set(_kernels.PROTOTYPES)
    with pytest.raises(TypeError, match="fedrot_pack takes the arguments"):
        lib["fedrot_pack"](codes=0, esize=1, n=0, w=1)  # `out` missing
    with pytest.raises(TypeError, match="fedrot_pack takes the arguments"):
        lib["fedrot_pack"](codes=0, esize=1, n=0, w=1, out=0, extra=2)


@needs_kernels
def test_tensor_arguments_are_checked_against_the_prototypes() -> None:
    """A tensor that is not a contiguous CPU tensor of its parameter's declared type
    makes the wrapper decline (the caller uses torch) with its outputs untouched."""
    y = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    lo, inv = torch.zeros(2), torch.ones(2)
    codes = torch.full((2, 8), 7, dtype=torch.uint8)
    kw = {"offset": 0, "key": 5, "top": 3}
    assert _kernels.hadamard_sq_quantize_(y, lo=lo, inv=inv, codes=codes, **kw)
    assert int(codes.max()) <= 3
    for bad in [
        {"lo": lo.double()},  # float64 for a const float *
        {"codes": codes.bool()},  # uint8_t * codes, not a bool mask
        {"codes": codes.t().contiguous().t()},  # not contiguous
    ]:
        args = {"lo": lo, "inv": inv, "codes": torch.full((2, 8), 7, dtype=torch.uint8)}
        args.update(bad)
        out = args["codes"]
        before = out.clone()
        assert not _kernels.hadamard_sq_quantize_(y, **args, **kw)
        assert torch.equal(out, before)
    sel = torch.tensor([True, False, True])
    packed = torch.tensor([1, 2, 3], dtype=torch.uint8)
    assert _kernels.pack_split(packed, sel, 2, 2, 2) is not None
    assert _kernels.pack_split(packed, sel.to(torch.uint8), 2, 2, 2) is None


@needs_kernels
def test_quic_decode_of_several_clients_is_refused() -> None:
    one = [torch.zeros(1, dtype=torch.uint8)] * 2
    with pytest.raises(ValueError, match="decodes one client"):
        _kernels.quic_aggregate_(
            torch.empty(8),
            codes=one,
            hkeys=[1, 2],
            norms=[torch.ones(1)] * 2,
            outlier_idx=[torch.zeros(0, dtype=torch.int64)] * 2,
            outlier_values=[torch.zeros(0)] * 2,
            weights=None,
            bits=1,
            sr_log2=0,
            table=torch.zeros(2),
            piece_starts=torch.tensor([0, 8]),
        )
