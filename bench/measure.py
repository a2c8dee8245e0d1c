"""Measuring and printing helpers shared by every benchmark section.

Every time is the median of repeated runs, and is also given as a ratio to ONE
elementwise pass over the same vector (``torch.mul(x, 2.0, out=y)``) measured in the
same process, so the numbers stay comparable on a noisy shared machine. Peak extra
memory is the growth of the process's resident-set high-water mark during one call
(Linux ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fedrot
from fedrot import _kernels

#: Bytes in a mebibyte, the unit of the memory columns.
MIB = 1 << 20


def median_time(fn: Callable[[], Any], *, reps: int, budget_s: float = 20.0) -> float:
    """Median wall time of ``fn`` over ``reps`` runs (fewer, >= 3, if over budget)."""
    fn()  # warm-up (kernel build, caches, page faults of the first allocation)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return statistics.median(times)


def pass_time(d: int, reps: int) -> float:
    """One elementwise pass over d float32 values: ``torch.mul(x, 2.0, out=y)``."""
    x = torch.randn(d)
    y = torch.empty_like(x)
    return median_time(lambda: torch.mul(x, 2.0, out=y), reps=max(reps, 11))


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so that the resident set before a
    measurement holds no reusable free pages that would hide an allocation."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def peak_extra_bytes(fn: Callable[[], Any]) -> int | None:
    """Growth of the resident-set high-water mark while ``fn`` runs (Linux only).

    Garbage is collected and freed heap pages are returned to the OS first
    (:func:`trim_heap`). The result of ``fn`` stays referenced until the mark is
    read, so it is counted.
    """
    gc.collect()
    trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to VmRSS
    except OSError:
        return None
    before = _status_kb("VmRSS")
    result = fn()
    peak = _status_kb("VmHWM")
    del result
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


@dataclass(frozen=True)
class CpuSnapshot:
    """Wall time and CPU time of the whole machine and of this process, so that the
    CPU the OTHER processes used in between can be reported (:func:`others_cores`)."""

    wall: float
    machine_busy_s: float
    own_s: float


def cpu_snapshot() -> CpuSnapshot | None:
    """A :class:`CpuSnapshot` from ``/proc`` (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    busy = user + nice + system + irq + softirq + steal
    mine = int(own[11]) + int(own[12])  # utime, stime (fields 14 and 15)
    return CpuSnapshot(time.perf_counter(), busy / ticks, mine / ticks)


def others_cores(start: CpuSnapshot | None, end: CpuSnapshot | None) -> float | None:
    """Average number of cores the other processes kept busy between two snapshots
    (0 on a quiet machine; on 2 cores, 1 means one core was taken from the bench)."""
    if start is None or end is None or end.wall <= start.wall:
        return None
    others = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    return max(0.0, others) / (end.wall - start.wall)


# ------------------------------------------------------------------- printing
def _kw(kw: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in kw.items())


def _ratio(num: int | None, den: int) -> float | None:
    return None if num is None else num / den


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "n/a" if v is None else str(v)


def _print_row(row: dict[str, Any]) -> None:
    print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)


def markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of a list of flat dicts (keys of the first row)."""
    if not rows:
        return "(skipped)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """Where the numbers come from: CPU, versions, threads, kernels, load, GPU."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    try:
        import flwr

        flwr_version = flwr.__version__
    except ImportError:
        flwr_version = None
    return {
        "cpu": cpu,
        "logical_cpus": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "flwr": flwr_version,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "fedrot": getattr(fedrot, "__version__", "?"),
        "kernels": _kernels.status(),
        "loadavg_at_start": " ".join(load),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
