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
from collections.abc import Iterator, Sequence
from pathlib import Path

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
_lock = threading.Lock()
_state: dict[str, object] = {"lib": None, "tried": False, "why": "not built yet"}
_enabled = [os.environ.get("FEDROT_KERNELS", "1") != "0"]

#: A call spawns one extra thread per 2**18 elements (up to torch's thread count):
#: below that, starting a thread costs more than it saves.
_MIN_THREAD_WORK_LOG2 = 18
_P = ctypes.c_void_p
_I = ctypes.c_int64
_SIGNATURES = {
    "fedrot_rht_f32": [
        _P,
        _I,
        _I,
        _I,
        _P,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_float,
        ctypes.c_int,
    ],
    "fedrot_rht_f64": [
        _P,
        _I,
        _I,
        _I,
        _P,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_double,
        ctypes.c_int,
    ],
    "fedrot_pack": [_P, ctypes.c_int, _I, ctypes.c_int, _P],
    "fedrot_unpack": [_P, _I, _I, ctypes.c_int, _P, ctypes.c_int],
    "fedrot_dequant_f32": [_P, _I, _I, _I, ctypes.c_int, _P, _P, _P],
    "fedrot_eden_quant_f32": [_P, _I, _I, _P, _P, ctypes.c_int, _P, _P, _P],
    "fedrot_quic_agg_f32": [
        _I,
        _P,
        _P,
        _P,
        _P,
        _P,
        _P,
        _P,
        ctypes.c_int,
        ctypes.c_int,
        _P,
        _I,
        _P,
        _I,
        _P,
        ctypes.c_int,
    ],
    "fedrot_quic_send_f32": [
        _P,
        _I,
        ctypes.c_double,
        ctypes.c_uint64,
        ctypes.c_uint64,
        ctypes.c_int,
        _P,
        _I,
        _P,
        _P,
        _P,
        _I,
        ctypes.c_double,
        ctypes.c_double,
        _P,
        _P,
        _P,
        ctypes.c_int,
    ],
}
#: Entry points whose return value is used (the others return nothing).
_RESTYPES = {"fedrot_quic_send_f32": ctypes.c_int64}


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


def _build() -> ctypes.CDLL:
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
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = _RESTYPES.get(name)
    return lib


def _lib() -> ctypes.CDLL | None:
    if not _enabled[0]:
        return None
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                try:
                    _state["lib"] = _build()
                    _state["why"] = "compiled kernels active"
                except (OSError, subprocess.SubprocessError, AttributeError) as exc:
                    detail = getattr(exc, "stderr", b"") or b""
                    _state["why"] = f"torch fallback: {exc} {detail[-300:]!r}"
                _state["tried"] = True
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the compiled kernels are built, loaded and enabled."""
    return _lib() is not None


def status() -> str:
    """One line saying whether the kernels are active, or why not."""
    if not _enabled[0]:
        return "torch fallback: disabled (FEDROT_KERNELS=0 or enabled(False))"
    _lib()
    return str(_state["why"])


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Temporarily enable or disable the kernels (tests compare both paths).

    Examples
    --------
    >>> with enabled(False):
    ...     available()
    False
    """
    old = _enabled[0]
    _enabled[0] = bool(flag)
    try:
        yield
    finally:
        _enabled[0] = old


def _usable(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)


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
    lib = _lib()
    if lib is None or x.dtype not in (torch.float32, torch.float64) or not _usable(x):
        return False
    rows, size = x.shape
    if rows == 0:
        return True
    karr = (ctypes.c_uint64 * max(1, len(keys)))(*keys)
    fn = lib.fedrot_rht_f32 if x.dtype == torch.float32 else lib.fedrot_rht_f64
    fn(
        x.data_ptr(),
        rows,
        size,
        offset,
        karr,
        len(keys),
        int(inverse),
        scale,
        max(1, min(torch.get_num_threads(), x.numel() >> _MIN_THREAD_WORK_LOG2)),
    )
    return True


_ESIZE = {torch.uint8: 1, torch.bool: 1, torch.int64: 8}


def pack(codes: torch.Tensor, width: int) -> torch.Tensor | None:
    """:func:`fedrot.bitpack.pack` for uint8/bool/int64 CPU codes (None: use torch)."""
    lib = _lib()
    if lib is None or codes.dtype not in _ESIZE or codes.device.type != "cpu":
        return None
    codes = codes.reshape(-1).contiguous()
    n = codes.numel()
    out = torch.empty((n * width + 7) // 8, dtype=torch.uint8)
    if n:
        lib.fedrot_pack(codes.data_ptr(), _ESIZE[codes.dtype], n, width, out.data_ptr())
    return out


def unpack(
    data: torch.Tensor, n: int, width: int, dtype: torch.dtype = torch.int64
) -> torch.Tensor | None:
    """:func:`fedrot.bitpack.unpack` on the CPU, as int64 or uint8 (None: use torch)."""
    lib = _lib()
    if lib is None or data.device.type != "cpu" or data.dtype != torch.uint8:
        return None
    if dtype not in (torch.uint8, torch.int64) or (dtype == torch.uint8 and width > 8):
        return None
    data = data.reshape(-1).contiguous()
    out = torch.empty(n, dtype=dtype)
    if n:
        lib.fedrot_unpack(data.data_ptr(), 0, n, width, out.data_ptr(), _ESIZE[dtype])
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
    lib = _lib()
    if (
        lib is None
        or width > 8
        or out.dtype != torch.float32
        or table.dtype != torch.float32
        or not _usable(out, data, table)
    ):
        return False
    scales = scales.to(torch.float32).contiguous()
    rows, size = out.shape
    lib.fedrot_dequant_f32(
        data.data_ptr(),
        start,
        rows,
        size,
        width,
        table.data_ptr(),
        scales.data_ptr(),
        out.data_ptr(),
    )
    return True


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
    lib = _lib()
    if (
        lib is None
        or y.dtype != torch.float32
        or codes.dtype != torch.uint8
        or boundaries.numel() > 255
        or not _usable(y, factor, boundaries, centroids, codes, prod)
    ):
        return False
    rows, size = y.shape
    lib.fedrot_eden_quant_f32(
        y.data_ptr(),
        rows,
        size,
        factor.data_ptr(),
        boundaries.data_ptr(),
        boundaries.numel(),
        centroids.data_ptr(),
        codes.data_ptr(),
        prod.data_ptr(),
    )
    return True


def _threads(work: int) -> int:
    return max(1, min(torch.get_num_threads(), work >> _MIN_THREAD_WORK_LOG2))


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
    lib = _lib()
    if (
        lib is None
        or z.dtype != torch.float32
        or codes.dtype != torch.uint8
        or oidx.dtype != torch.int64
        or means.dtype != torch.float64
        or levels.dtype != torch.uint8
        or movers.dtype != torch.uint8
        or grid.dtype != torch.int32
        or not _usable(z, codes, oidx, means, levels, movers, grid)
    ):
        return None
    n = z.numel()
    if n == 0:
        return 0
    counts = torch.empty((n + 65535) // 65536, dtype=torch.int64)
    return int(
        lib.fedrot_quic_send_f32(
            z.data_ptr(),
            n,
            threshold,
            hkey,
            ukey,
            sr_log2,
            means.data_ptr(),
            means.numel() - 1,
            levels.data_ptr(),
            movers.data_ptr(),
            grid.data_ptr(),
            grid.numel() - 1,
            grid_lo,
            grid_inv,
            codes.data_ptr(),
            oidx.data_ptr(),
            counts.data_ptr(),
            _threads(n),
        )
    )


def quic_aggregate_(
    acc: torch.Tensor,
    *,
    codes: Sequence[torch.Tensor],
    hkeys: Sequence[int],
    norms: Sequence[torch.Tensor],
    outlier_idx: Sequence[torch.Tensor],
    outlier_values: Sequence[torch.Tensor],
    weights: Sequence[float],
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
    ``piece_starts`` the int64 piece boundaries (pieces + 1 of them). Returns False,
    touching nothing, when the kernels cannot run.
    """
    lib = _lib()
    n = len(codes)
    tensors = [acc, table, piece_starts, *codes, *norms, *outlier_idx, *outlier_values]
    if (
        lib is None
        or n == 0
        or acc.dtype != torch.float32
        or table.dtype != torch.float32
        or piece_starts.dtype != torch.int64
        or any(t.dtype != torch.uint8 for t in codes)
        or any(t.dtype != torch.float32 for t in (*norms, *outlier_values))
        or any(t.dtype != torch.int64 for t in outlier_idx)
        or not _usable(*tensors)
    ):
        return False

    def ptrs(ts: Sequence[torch.Tensor]) -> ctypes.Array:
        return (ctypes.c_void_p * n)(*[t.data_ptr() for t in ts])

    padded = acc.numel()
    lib.fedrot_quic_agg_f32(
        n,
        ptrs(codes),
        (ctypes.c_uint64 * n)(*hkeys),
        ptrs(norms),
        ptrs(outlier_idx),
        ptrs(outlier_values),
        (ctypes.c_int64 * n)(*[t.numel() for t in outlier_idx]),
        (ctypes.c_float * n)(*weights),
        bits,
        sr_log2,
        table.data_ptr(),
        piece_starts.numel() - 1,
        piece_starts.data_ptr(),
        padded,
        acc.data_ptr(),
        max(1, min(_threads(n * padded), (padded + 2047) // 2048)),
    )
    return True
