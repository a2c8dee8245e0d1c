"""Optional compiled CPU kernels (``_kernels.c``), built at first use, with fallback.

fedrot's reference implementation is plain torch (any device). On the CPU the hot
loops (FWHT, RHT stacks, EDEN/DRIVE quantization, bit packing) are memory-bound
chains of cheap operations, which torch runs as one pass over memory per stage.
``_kernels.c`` fuses them into cache-blocked loops. It performs exactly the same
IEEE-754 operations per element as the torch path, so results are bit-identical
(tests compare both paths byte for byte).

Build: the first call compiles ``_kernels.c`` with the system C compiler
(``$CC`` or ``cc``; ``-O3 -march=native``, no fast-math) into a per-user cache
(``$FEDROT_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/fedrot`` or ``~/.cache/fedrot``),
keyed by the source, the flags and the CPU, and loads it with ctypes (no build step
at install time, no ninja). If there is no compiler, the build fails or
``FEDROT_KERNELS=0`` is set, every caller silently uses the torch path.

Every entry point's C signature is declared once, in :data:`PROTOTYPES`, with the C
parameter names; calls pass each argument by name, and a test parses ``_kernels.c``
and checks the declarations against it. The process-wide state (switch, build
outcome) is one :class:`_KernelState`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

__all__ = [
    "available",
    "status",
    "enabled",
    "rht_",
    "pack",
    "unpack",
    "dequantize_",
    "eden_quantize_",
    "quic_send",
    "quic_aggregate_",
    "uniforms",
    "mask",
    "hadamard_sq_quantize_",
    "eden_quantize2_",
    "pack_split",
    "dequantize_accumulate_",
]

_SRC = Path(__file__).with_name("_kernels.c")
_FLAGS = [
    "-O3",
    "-fPIC",
    "-shared",
    "-pthread",
    "-std=c99",
    "-fno-fast-math",
    "-ffp-contract=off",
]

#: A call spawns one extra thread per 2**18 elements (up to torch's thread count):
#: below that, starting a thread costs more than it saves.
_MIN_THREAD_WORK_LOG2 = 18

# ctypes spellings of the C types. Pointers are declared with their C pointee type
# (checked against the C source by tests/test_kernels.py) and passed as addresses.
_I64 = ctypes.c_int64
_U64 = ctypes.c_uint64
_INT = ctypes.c_int
_F32 = ctypes.c_float
_F64 = ctypes.c_double
_VOID_P = ctypes.c_void_p
_ptr = ctypes.POINTER
_U8_P = _ptr(ctypes.c_uint8)
_BOOL_P = _ptr(ctypes.c_bool)
_I64_P = _ptr(_I64)
_U64_P = _ptr(_U64)
_F32_P = _ptr(_F32)
_F64_P = _ptr(_F64)


@dataclass(frozen=True)
class Prototype:
    """The C signature of one exported kernel: return type and named parameters.

    ``params`` lists ``(name, ctypes type)`` in C order, with the parameter names of
    ``_kernels.c``; callers pass every argument by that name. Pointer parameters
    carry their C pointee type (``POINTER(c_float)`` for ``const float *``) but are
    passed as plain addresses (``c_void_p``). ``tests/test_kernels.py`` parses the C
    source and checks every name, type and the order.
    """

    restype: type | None
    params: tuple[tuple[str, type], ...]

    def argtypes(self) -> list[type]:
        """The ctypes ``argtypes``: every pointer becomes ``c_void_p``."""
        return [
            _VOID_P if issubclass(ctype, ctypes._Pointer) else ctype
            for _, ctype in self.params
        ]


def _proto(restype: type | None, **params: type) -> Prototype:
    return Prototype(restype, tuple(params.items()))


def _rht(ftype: type) -> Prototype:
    return _proto(
        None,
        x=_ptr(ftype),
        rows=_I64,
        size=_I64,
        offset=_I64,
        keys=_U64_P,
        k=_INT,
        inverse=_INT,
        s=ftype,
        threads=_INT,
    )


#: Every entry point of ``_kernels.c``, declared once.
PROTOTYPES: Mapping[str, Prototype] = {
    "fedrot_rht_f32": _rht(_F32),
    "fedrot_rht_f64": _rht(_F64),
    "fedrot_pack": _proto(None, codes=_VOID_P, esize=_INT, n=_I64, w=_INT, out=_U8_P),
    "fedrot_unpack": _proto(
        None, data=_U8_P, start=_I64, n=_I64, w=_INT, out=_VOID_P, esize=_INT
    ),
    "fedrot_dequant_f32": _proto(
        None,
        data=_U8_P,
        start=_I64,
        rows=_I64,
        size=_I64,
        w=_INT,
        table=_F32_P,
        scales=_F32_P,
        out=_F32_P,
    ),
    "fedrot_eden_quant_f32": _proto(
        None,
        y=_F32_P,
        rows=_I64,
        size=_I64,
        srow=_F32_P,
        bnd=_F32_P,
        nb=_INT,
        cent=_F32_P,
        codes=_U8_P,
        prod=_F32_P,
    ),
    "fedrot_quic_agg_f32": _proto(
        None,
        n=_I64,
        codes=_ptr(_U8_P),
        hkeys=_U64_P,
        norms=_ptr(_F32_P),
        oidx=_ptr(_I64_P),
        ovals=_ptr(_F32_P),
        nout=_I64_P,
        weights=_F32_P,
        bits=_INT,
        l=_INT,
        table=_F32_P,
        npieces=_I64,
        pstart=_I64_P,
        padded=_I64,
        acc=_F32_P,
        threads=_INT,
    ),
    "fedrot_uniforms_f32": _proto(
        None, key=_U64, start=_I64, n=_I64, out=_F32_P, threads=_INT
    ),
    "fedrot_mask_f32": _proto(
        _I64,
        key=_U64,
        start=_I64,
        n=_I64,
        p=_F32,
        out=_BOOL_P,
        counts=_I64_P,
        threads=_INT,
    ),
    "fedrot_hsq_quant_f32": _proto(
        None,
        y=_F32_P,
        rows=_I64,
        size=_I64,
        offset=_I64,
        key=_U64,
        lo=_F32_P,
        inv=_F32_P,
        top=_INT,
        codes=_U8_P,
        threads=_INT,
    ),
    "fedrot_eden_quant2_f32": _proto(
        None,
        y=_F32_P,
        rows=_I64,
        size=_I64,
        srow=_F32_P,
        hi=_BOOL_P,
        bnd_lo=_F32_P,
        nb_lo=_INT,
        cent_lo=_F32_P,
        bnd_hi=_F32_P,
        nb_hi=_INT,
        cent_hi=_F32_P,
        codes=_U8_P,
        prod=_F32_P,
    ),
    "fedrot_pack_split": _proto(
        None,
        codes=_U8_P,
        sel=_BOOL_P,
        n=_I64,
        w1=_INT,
        out1=_U8_P,
        w0=_INT,
        out0=_U8_P,
    ),
    "fedrot_dequant_split_f32": _proto(
        None,
        data1=_U8_P,
        w1=_INT,
        t1=_F32_P,
        data0=_U8_P,
        w0=_INT,
        t0=_F32_P,
        sel=_BOOL_P,
        n=_I64,
        out=_F32_P,
    ),
    "fedrot_compress_f32": _proto(
        None, src=_F32_P, sel=_BOOL_P, n=_I64, m=_I64, out=_F32_P
    ),
    "fedrot_expand_f32": _proto(
        None, src=_F32_P, m=_I64, sel=_BOOL_P, n=_I64, out=_F32_P
    ),
    "fedrot_dequant_acc_f32": _proto(
        _INT,
        data=_U8_P,
        start=_I64,
        rows=_I64,
        size=_I64,
        offset=_I64,
        d=_I64,
        w=_INT,
        table=_F32_P,
        scales=_F32_P,
        keys=_U64_P,
        k=_INT,
        s=_F32,
        wt=_F32,
        first=_INT,
        acc=_F32_P,
        threads=_INT,
    ),
    "fedrot_quic_send_f32": _proto(
        _I64,
        z=_F32_P,
        n=_I64,
        T=_F64,
        hkey=_U64,
        ukey=_U64,
        l=_INT,
        means=_F64_P,
        nm=_I64,
        levels=_U8_P,
        movers=_U8_P,
        grid=_ptr(ctypes.c_int32),
        ng=_I64,
        g0=_F64,
        ginv=_F64,
        codes=_U8_P,
        oidx=_I64_P,
        counts=_I64_P,
        threads=_INT,
    ),
}


#: The dtype a tensor passed for a ``T *`` parameter must have (``void *``: any).
_TORCH_DTYPES: Mapping[type, torch.dtype] = {
    ctypes.c_float: torch.float32,
    ctypes.c_double: torch.float64,
    ctypes.c_int64: torch.int64,
    ctypes.c_int32: torch.int32,
    ctypes.c_uint8: torch.uint8,
    ctypes.c_bool: torch.bool,
}


def _fits(t: object, pointee: type | None) -> bool:
    """Whether ``t`` is a contiguous CPU tensor of the pointee's dtype (None: any)."""
    return (
        isinstance(t, torch.Tensor)
        and t.device.type == "cpu"
        and t.is_contiguous()
        and (pointee is None or _TORCH_DTYPES.get(pointee) == t.dtype)
    )


class _Unfit(Exception):
    """A tensor argument does not fit its parameter (the caller uses torch)."""


@dataclass(frozen=True)
class _Param:
    """How one declared parameter turns a Python argument into a ctypes value.

    ``pointee`` is None for a scalar, ``c_void_p`` for ``void *``, else the C type
    pointed to (itself a pointer type for an array of pointers).
    """

    name: str
    pointee: type | None

    @classmethod
    def of(cls, name: str, ctype: type) -> _Param:
        if ctype is _VOID_P:
            return cls(name, _VOID_P)
        if issubclass(ctype, ctypes._Pointer):
            return cls(name, ctype._type_)
        return cls(name, None)

    def value(self, arg: object) -> object:
        """The ctypes argument for ``arg``; raises :class:`_Unfit`.

        A pointer parameter takes a tensor (checked by :func:`_fits`), a sequence
        of tensors (pointer to pointers) or of numbers (copied into a C array), a
        raw address (int) or None (NULL); a scalar parameter takes its value.
        """
        pointee = self.pointee
        if pointee is None or arg is None or isinstance(arg, int):
            return arg  # a scalar, NULL or an address
        if isinstance(arg, torch.Tensor):
            if not _fits(arg, None if pointee is _VOID_P else pointee):
                raise _Unfit(self.name)
            return arg.data_ptr()
        if not isinstance(arg, Sequence):
            raise TypeError(
                f"`{self.name}` takes a tensor or a sequence. Found {arg!r}."
            )
        if issubclass(pointee, ctypes._Pointer):
            if not all(_fits(t, pointee._type_) for t in arg):
                raise _Unfit(self.name)
            ptrs = [t.data_ptr() for t in arg]
            return (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)
        scalar = cast("type[ctypes._SimpleCData[Any]]", pointee)
        return (scalar * max(1, len(arg)))(*arg)


class _Call:
    """A kernel call bound to its ctypes values, ready to run.

    It also holds the arguments: the values are bare addresses of their tensors,
    some of which (scratch buffers, contiguous copies) nothing else references.
    """

    __slots__ = ("_fn", "_values", "_args")

    def __init__(self, fn: Any, values: list[object], args: dict[str, object]) -> None:
        self._fn = fn
        self._values = values
        self._args = args

    def __call__(self) -> Any:
        return self._fn(*self._values)


class _Kernel:
    """One loaded entry point, called with keyword arguments named as in C.

    Tensors are passed as they are: :meth:`bind` checks each against its declared
    parameter (CPU, contiguous, the pointee's dtype), so no caller repeats those
    checks.
    """

    __slots__ = ("_fn", "_params", "_name_set", "name")

    def __init__(self, lib: ctypes.CDLL, name: str, proto: Prototype) -> None:
        fn = getattr(lib, name)  # AttributeError: the library lacks the symbol
        fn.argtypes = proto.argtypes()
        fn.restype = proto.restype
        self._fn = fn
        self._params = tuple(_Param.of(pname, ctype) for pname, ctype in proto.params)
        self._name_set = frozenset(p.name for p in self._params)
        self.name = name

    def bind(self, **args: object) -> _Call | None:
        """The call with these arguments, ready to run; None when a tensor does not
        fit its parameter. Raises TypeError unless ``args`` names every parameter."""
        if args.keys() != self._name_set:
            raise TypeError(
                f"{self.name} takes the arguments {[p.name for p in self._params]}. "
                f"Found {list(args)}."
            )
        try:
            values = [p.value(args[p.name]) for p in self._params]
        except _Unfit:
            return None
        return _Call(self._fn, values, args)

    def __call__(self, **args: object) -> Any:
        call = self.bind(**args)
        if call is None:
            raise TypeError(f"{self.name}: a tensor argument does not fit its type")
        return call()


@dataclass
class _KernelState:
    """Process-wide state: the on/off switch and the outcome of the one build.

    Attributes
    ----------
    enabled
        False under ``FEDROT_KERNELS=0`` or inside ``enabled(False)``.
    tried
        Whether the build was attempted (it is attempted once per process).
    kernels
        The loaded entry points by C name, or None (not built, or the build failed).
    why
        One line for :func:`status`: active, or why the torch path is used.
    """

    enabled: bool
    tried: bool = False
    kernels: dict[str, _Kernel] | None = None
    why: str = "not built yet"


_lock = threading.Lock()
_STATE = _KernelState(enabled=os.environ.get("FEDROT_KERNELS", "1") != "0")


def _cache_dir() -> Path:
    env = os.environ.get("FEDROT_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedrot"


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def _build() -> dict[str, _Kernel]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc/gcc) on PATH")
    src = _SRC.read_bytes()
    native = platform.machine().lower() in {"x86_64", "amd64"}
    flags = _FLAGS + (["-march=native"] if native else [])
    key = hashlib.sha256(
        b"\0".join([src, " ".join(flags).encode(), _cpu_id().encode(), cc.encode()])
    ).hexdigest()[:20]
    out = _cache_dir() / f"fedrot_kernels_{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            subprocess.run(
                [cc, *flags, str(_SRC), "-o", tmp],
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(tmp, out)  # atomic: concurrent builders race harmlessly
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    return {name: _Kernel(lib, name, proto) for name, proto in PROTOTYPES.items()}


def _lib() -> dict[str, _Kernel] | None:
    """The loaded kernels by C name, building them on first use; None: use torch."""
    state = _STATE
    if not state.enabled:
        return None
    if not state.tried:
        with _lock:
            if not state.tried:
                try:
                    state.kernels = _build()
                    state.why = "compiled kernels active"
                except (OSError, subprocess.SubprocessError, AttributeError) as exc:
                    detail = getattr(exc, "stderr", b"") or b""
                    state.why = f"torch fallback: {exc} {detail[-300:]!r}"
                state.tried = True
    return state.kernels


def available() -> bool:
    """Whether the compiled kernels are built, loaded and enabled."""
    return _lib() is not None


def status() -> str:
    """One line saying whether the kernels are active, or why not."""
    if not _STATE.enabled:
        return "torch fallback: disabled (FEDROT_KERNELS=0 or enabled(False))"
    _lib()
    return _STATE.why


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Temporarily enable or disable the kernels (tests compare both paths).

    Examples
    --------
    >>> with enabled(False):
    ...     available()
    False
    """
    old = _STATE.enabled
    _STATE.enabled = bool(flag)
    try:
        yield
    finally:
        _STATE.enabled = old


def _bind(name: str, **args: object) -> _Call | None:
    """Entry point ``name`` bound to ``args`` (see :meth:`_Kernel.bind`), ready to
    run; None, touching nothing, when the kernels are off or a tensor does not fit."""
    lib = _lib()
    return None if lib is None else lib[name].bind(**args)


def _run(name: str, **args: object) -> bool:
    """Run entry point ``name`` on ``args``; False, touching nothing, when
    :func:`_bind` declines."""
    call = _bind(name, **args)
    if call is None:
        return False
    call()
    return True


def _threads(work: int) -> int:
    return max(1, min(torch.get_num_threads(), work >> _MIN_THREAD_WORK_LOG2))


_RHT = {torch.float32: "fedrot_rht_f32", torch.float64: "fedrot_rht_f64"}


def rht_(
    x: torch.Tensor,
    *,
    offset: int = 0,
    keys: Sequence[int] = (),
    inverse: bool = False,
    scale: float,
) -> bool:
    """In-place FWHT (``keys`` empty) or RHT stack on a (rows, size) CPU tensor.

    Forward: for each key, flip the signs given by stream bits ``offset + i`` (bit 1
    gives -1), then the scaled FWHT. Inverse: keys reversed, FWHT then signs. Returns
    False, touching nothing, when the kernels cannot run (the caller then uses torch).
    """
    if x.dtype not in _RHT:
        return False
    rows, size = x.shape
    call = _bind(
        _RHT[x.dtype],
        x=x,
        rows=rows,
        size=size,
        offset=offset,
        keys=keys,
        k=len(keys),
        inverse=int(inverse),
        s=scale,
        threads=_threads(x.numel()),
    )
    if call is None:
        return False
    if rows:
        call()
    return True


_ESIZE = {torch.uint8: 1, torch.bool: 1, torch.int64: 8}


def pack(codes: torch.Tensor, width: int) -> torch.Tensor | None:
    """:func:`fedrot.bitpack.pack` for uint8/bool/int64 CPU codes (None: use torch)."""
    if codes.dtype not in _ESIZE or codes.device.type != "cpu":
        return None
    codes = codes.reshape(-1).contiguous()
    n = codes.numel()
    out = torch.empty((n * width + 7) // 8, dtype=torch.uint8)
    call = _bind(
        "fedrot_pack", codes=codes, esize=_ESIZE[codes.dtype], n=n, w=width, out=out
    )
    if call is None:
        return None
    if n:
        call()
    return out


def unpack(
    data: torch.Tensor, n: int, width: int, dtype: torch.dtype = torch.int64
) -> torch.Tensor | None:
    """:func:`fedrot.bitpack.unpack` on the CPU, as int64 or uint8 (None: use torch)."""
    if data.device.type != "cpu" or dtype not in (torch.uint8, torch.int64):
        return None
    if dtype == torch.uint8 and width > 8:
        return None
    out = torch.empty(n, dtype=dtype)
    call = _bind(
        "fedrot_unpack",
        data=data.reshape(-1).contiguous(),
        start=0,
        n=n,
        w=width,
        out=out,
        esize=_ESIZE[dtype],
    )
    if call is None:
        return None
    if n:
        call()
    return out


def dequantize_(
    out: torch.Tensor,
    data: torch.Tensor,
    *,
    start: int,
    width: int,
    table: torch.Tensor,
    scales: torch.Tensor,
) -> bool:
    """``out[r, j] = table[code(start + r*size + j)] * scales[r]`` on a (rows, size)
    float32 CPU view (codes of ``width`` <= 8 bits packed in ``data``).

    Bit-identical to ``table[unpack(...)]`` followed by ``view.mul_(scales[:, None])``.
    Returns False, touching nothing, when the kernels cannot run.
    """
    if width > 8:
        return False
    rows, size = out.shape
    return _run(
        "fedrot_dequant_f32",
        data=data,
        start=start,
        rows=rows,
        size=size,
        w=width,
        table=table,
        scales=scales.to(torch.float32).contiguous(),
        out=out,
    )


def eden_quantize_(
    y: torch.Tensor,
    factor: torch.Tensor,
    boundaries: torch.Tensor,
    centroids: torch.Tensor,
    codes: torch.Tensor,
    prod: torch.Tensor,
) -> bool:
    """EDEN's quantization of a (rows, size) float32 piece view ``y``, fused.

    Writes ``codes = bucketize(y * factor[:, None], boundaries)`` (uint8) and
    ``prod = centroids[codes] * y`` (float32; the caller sums it with torch, so the
    summation order is torch's). Same float operations as the torch path. Returns
    False, touching nothing, when the kernels cannot run.
    """
    if boundaries.numel() > 255:
        return False
    rows, size = y.shape
    return _run(
        "fedrot_eden_quant_f32",
        y=y,
        rows=rows,
        size=size,
        srow=factor,
        bnd=boundaries,
        nb=boundaries.numel(),
        cent=centroids,
        codes=codes,
        prod=prod,
    )


def quic_send(
    z: torch.Tensor,
    *,
    threshold: float,
    hkey: int,
    ukey: int,
    sr_log2: int,
    means: torch.Tensor,
    levels: torch.Tensor,
    movers: torch.Tensor,
    grid: torch.Tensor,
    grid_lo: float,
    grid_inv: float,
    codes: torch.Tensor,
    oidx: torch.Tensor,
) -> int | None:
    """QUIC-FL's client quantization of the normalized float32 vector ``z``, fused.

    Writes the uint8 messages to ``codes`` (0 at outliers ``|z| > threshold``) and the
    outlier indices, increasing, to the front of ``oidx`` (int64, ``z.numel()``
    long); returns their number. Same values as ``shared_h``, ``private_uniforms``
    and ``sender`` of :mod:`fedrot.codecs.quic_fl` (float64 arithmetic, same
    operations). ``levels`` (rows of ``2**sr_log2``) and ``movers`` are uint8,
    ``means`` the float64 state means followed by one +inf, ``grid`` int32 (estimates
    in ``0 .. means.numel() - 2`` of the state index over the cells of width
    ``1 / grid_inv`` from ``grid_lo``; any such values give the same result).
    None, touching nothing, when the kernels cannot run.
    """
    n = z.numel()
    call = _bind(
        "fedrot_quic_send_f32",
        z=z,
        n=n,
        T=threshold,
        hkey=hkey,
        ukey=ukey,
        l=sr_log2,
        means=means,
        nm=means.numel() - 1,
        levels=levels,
        movers=movers,
        grid=grid,
        ng=grid.numel() - 1,
        g0=grid_lo,
        ginv=grid_inv,
        codes=codes,
        oidx=oidx,
        counts=torch.empty((n + 65535) // 65536, dtype=torch.int64),
        threads=_threads(n),
    )
    if call is None:
        return None
    return int(call()) if n else 0


def quic_aggregate_(
    acc: torch.Tensor,
    *,
    codes: Sequence[torch.Tensor],
    hkeys: Sequence[int],
    norms: Sequence[torch.Tensor],
    outlier_idx: Sequence[torch.Tensor],
    outlier_values: Sequence[torch.Tensor],
    weights: Sequence[float] | None,
    bits: int,
    sr_log2: int,
    table: torch.Tensor,
    piece_starts: torch.Tensor,
) -> bool:
    """QUIC-FL's weighted sum of the clients' rotated estimates into float32 ``acc``.

    Client c's estimate is ``table[code << sr_log2 | h] * norms[c][piece]`` with its
    outliers put back; the first client writes ``acc = est * w``, the next ones
    ``acc += est * w`` as one fused multiply-add (torch's ``add_(est, alpha=w)``),
    clients in the given order for every element. ``codes`` are the packed uint8
    payload sections, ``outlier_idx`` increasing int64 indices below ``acc.numel()``,
    ``piece_starts`` the int64 piece boundaries (pieces + 1 of them).
    ``weights=None`` decodes one client: ``acc`` becomes its estimate exactly (the
    values of ``receiver``, ``scale_pieces_`` and ``est[idx] = values`` of
    :mod:`fedrot.codecs.quic_fl`, bit for bit). Returns False, touching nothing,
    when the kernels cannot run.
    """
    n = len(codes)
    if weights is None and n != 1:
        raise ValueError(f"`weights=None` decodes one client. Found {n} clients.")
    padded = acc.numel()
    return n > 0 and _run(
        "fedrot_quic_agg_f32",
        n=n,
        codes=codes,
        hkeys=hkeys,
        norms=norms,
        oidx=outlier_idx,
        ovals=outlier_values,
        nout=[t.numel() for t in outlier_idx],
        weights=weights,
        bits=bits,
        l=sr_log2,
        table=table,
        npieces=piece_starts.numel() - 1,
        pstart=piece_starts,
        padded=padded,
        acc=acc,
        threads=max(1, min(_threads(n * padded), (padded + 2047) // 2048)),
    )


_STREAM_CHUNK = 65536


def uniforms(key: int, n: int) -> torch.Tensor | None:
    """:func:`fedrot.seeds.uniforms_torch` on the CPU: ``n`` float32 uniforms of the
    key's stream, the same values (None: use torch)."""
    out = torch.empty(n, dtype=torch.float32)
    call = _bind(
        "fedrot_uniforms_f32", key=key, start=0, n=n, out=out, threads=_threads(n)
    )
    if call is None:
        return None
    if n:
        call()
    return out


def mask(key: int, n: int, p: float) -> tuple[torch.Tensor, int] | None:
    """``uniforms_torch(key, n) < p`` on the CPU as a bool tensor, with its number
    of True values (None: use torch). The comparison is torch's: float32, with ``p``
    rounded to float32."""
    out = torch.empty(n, dtype=torch.bool)
    call = _bind(
        "fedrot_mask_f32",
        key=key,
        start=0,
        n=n,
        p=p,
        out=out,
        counts=torch.empty((n + _STREAM_CHUNK - 1) // _STREAM_CHUNK, dtype=torch.int64),
        threads=_threads(n),
    )
    if call is None:
        return None
    return out, int(call()) if n else 0


def hadamard_sq_quantize_(
    y: torch.Tensor,
    *,
    offset: int,
    key: int,
    lo: torch.Tensor,
    inv: torch.Tensor,
    top: int,
    codes: torch.Tensor,
) -> bool:
    """Hadamard-SQ's stochastic rounding of a (rows, size) float32 piece view ``y``.

    Writes ``codes`` (uint8, same shape): ``t = (y - lo[r]) * inv[r]``, ``floor(t)``
    plus one where uniform ``offset + r*size + j`` of ``key``'s stream is below
    ``t - floor(t)``, clamped to ``0 .. top`` (<= 255): the float32 operations of
    :mod:`fedrot.codecs.hadamard_sq`, fused with the stream. Returns False,
    touching nothing, when the kernels cannot run.
    """
    rows, size = y.shape
    return top <= 255 and _run(
        "fedrot_hsq_quant_f32",
        y=y,
        rows=rows,
        size=size,
        offset=offset,
        key=key,
        lo=lo,
        inv=inv,
        top=top,
        codes=codes,
        threads=max(1, min(_threads(y.numel()), rows)),
    )


def eden_quantize2_(
    y: torch.Tensor,
    factor: torch.Tensor,
    hi: torch.Tensor,
    low: tuple[torch.Tensor, torch.Tensor],
    high: tuple[torch.Tensor, torch.Tensor],
    codes: torch.Tensor,
    prod: torch.Tensor,
) -> bool:
    """Fractional-bit EDEN's quantization of a (rows, size) float32 piece view.

    Like :func:`eden_quantize_`, with the (boundaries, centroids) pair ``high``
    where the bool mask ``hi`` (same shape) is True and ``low`` elsewhere: the
    per-element result of the torch path's ``where(hi, ...)``. Returns False,
    touching nothing, when the kernels cannot run.
    """
    if max(low[0].numel(), high[0].numel()) > 255:
        return False
    rows, size = y.shape
    return _run(
        "fedrot_eden_quant2_f32",
        y=y,
        rows=rows,
        size=size,
        srow=factor,
        hi=hi,
        bnd_lo=low[0],
        nb_lo=low[0].numel(),
        cent_lo=low[1],
        bnd_hi=high[0],
        nb_hi=high[0].numel(),
        cent_hi=high[1],
        codes=codes,
        prod=prod,
    )


def pack_split(
    codes: torch.Tensor, sel: torch.Tensor, count: int, w1: int, w0: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(pack(codes[sel], w1), pack(codes[~sel], w0))`` of uint8 CPU codes in one
    pass; ``count`` is the number of True values of ``sel`` (None: use torch)."""
    n = codes.numel()
    if codes.shape != sel.shape or not 0 <= count <= n or max(w1, w0) > 8:
        return None
    size1, size0 = (count * w1 + 7) // 8, ((n - count) * w0 + 7) // 8
    out1 = torch.zeros(size1 + 8, dtype=torch.uint8)  # 8 bytes of slack: see C
    out0 = torch.zeros(size0 + 8, dtype=torch.uint8)
    done = _run(
        "fedrot_pack_split",
        codes=codes,
        sel=sel,
        n=n,
        w1=w1,
        out1=out1,
        w0=w0,
        out0=out0,
    )
    return (out1[:size1], out0[:size0]) if done else None


def dequantize_split(
    data1: torch.Tensor,
    w1: int,
    table1: torch.Tensor,
    data0: torch.Tensor,
    w0: int,
    table0: torch.Tensor,
    sel: torch.Tensor,
) -> torch.Tensor | None:
    """The inverse of :func:`pack_split` through two tables, in one pass: ``c`` with
    ``c[sel] = table1[unpack(data1, w1)]`` and ``c[~sel] = table0[unpack(data0, w0)]``
    (float32, bit-identical: the lookups are exact). ``data1``/``data0`` are uint8
    streams holding at least ``sel.sum()`` / ``(~sel).sum()`` codes, ``table1`` /
    ``table0`` have ``2**w1`` / ``2**w0`` entries. None: use torch."""
    if (
        not available()
        or max(w1, w0) > 8
        or table1.numel() != 1 << w1
        or table0.numel() != 1 << w0
        or sel.device.type != "cpu"
    ):
        return None
    pads = []
    for data in (data1, data0):  # 8 bytes of slack: see C
        pad = torch.zeros(data.numel() + 8, dtype=torch.uint8)
        pad[: data.numel()] = data
        pads.append(pad)
    out = torch.empty(sel.numel(), dtype=torch.float32)
    done = _run(
        "fedrot_dequant_split_f32",
        data1=pads[0],
        w1=w1,
        t1=table1,
        data0=pads[1],
        w0=w0,
        t0=table0,
        sel=sel,
        n=sel.numel(),
        out=out,
    )
    return out if done else None


def compress(src: torch.Tensor, sel: torch.Tensor, count: int) -> torch.Tensor | None:
    """``src[sel]`` of a float32 CPU vector in one pass; ``count`` is the number of
    True values of ``sel`` (None: use torch)."""
    if src.dtype != torch.float32 or src.shape != sel.shape or count < 0:
        return None
    out = torch.empty(count + 1, dtype=torch.float32)  # one float of slack: see C
    done = _run(
        "fedrot_compress_f32", src=src, sel=sel, n=sel.numel(), m=count, out=out
    )
    return out[:count] if done else None


def expand(src: torch.Tensor, sel: torch.Tensor) -> torch.Tensor | None:
    """A float32 vector of ``sel``'s length, zero where ``sel`` is False and the
    values of ``src`` in order where it is True, in one pass (``src`` holds the
    number of True values, at least one). None: use torch."""
    if src.dtype != torch.float32 or src.numel() == 0 or sel.dim() != 1:
        return None
    out = torch.empty(sel.numel(), dtype=torch.float32)
    done = _run(
        "fedrot_expand_f32", src=src, m=src.numel(), sel=sel, n=sel.numel(), out=out
    )
    return out if done else None


def dequantize_accumulate_(
    acc: torch.Tensor,
    data: torch.Tensor,
    *,
    offset: int,
    rows: int,
    size: int,
    width: int,
    table: torch.Tensor,
    scales: torch.Tensor,
    keys: Sequence[int],
    scale: float,
    weight: float,
    first: bool,
) -> bool:
    """Add one client's decode of a group of pieces into the float32 sum ``acc``.

    Each (size,) piece ``r`` of the group starting at padded position ``offset`` is
    dequantized (``table[code] * scales[r]``, codes of ``width`` <= 8 bits from
    stream position ``offset + r*size`` of ``data``), inverted through the RHT stack
    ``keys`` (scaled FWHT ``scale``) while in cache, and its positions below
    ``acc.numel()`` become ``x * weight`` (``first``) or ``fma(x, weight, acc)``:
    the values of :func:`dequantize_` + :func:`rht_` (inverse) + torch's
    ``mul_(w)`` / ``add_(x, alpha=w)``, without a dense per-client vector. Returns
    False, touching nothing, when the kernels cannot run.
    """
    if not keys or width > 8:
        return False
    call = _bind(
        "fedrot_dequant_acc_f32",
        data=data,
        start=offset,
        rows=rows,
        size=size,
        offset=offset,
        d=acc.numel(),
        w=width,
        table=table,
        scales=scales,
        keys=keys,
        k=len(keys),
        s=scale,
        wt=weight,
        first=int(first),
        acc=acc,
        threads=max(1, min(_threads(rows * size), rows)),
    )
    if call is None:
        return False
    if rows and call() != 0:
        raise MemoryError("fedrot_dequant_acc_f32: no memory for a piece buffer")
    return True
