"""Keep a fuzz case from taking the machine down, and measure what it used.

An address-space cap (``RLIMIT_AS``) turns an allocation of a forged size into an
error, a per-case alarm ends a runaway case, and the peak resident memory of each case
is read from Linux's ``VmHWM`` after resetting it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CaseTimeout",
    "PeakRss",
    "address_space_limit",
    "case_alarm",
    "mmap_large_allocations",
]


class CaseTimeout(Exception):
    """A case ran past the per-case time limit (raised by the alarm handler)."""


def _vm_size() -> int:
    """Current virtual memory size of this process in bytes (Linux), else 0."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextmanager
def address_space_limit(budget: int | None) -> Iterator[int | None]:
    """Cap RLIMIT_AS at the current size plus ``budget`` bytes; restore on exit."""
    if budget is None or _vm_size() == 0:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class PeakRss:
    """Peak resident memory of one case: Linux VmHWM, reset before the case."""

    def __init__(self) -> None:
        self.ok = False
        try:
            self._reset_hwm()
            self.ok = self._hwm() > 0
        except OSError:
            pass
        self._base = 0

    @staticmethod
    def _reset_hwm() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # "5": reset the peak RSS to the current RSS

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def reset(self) -> None:
        if self.ok:
            self._reset_hwm()
            self._base = self._hwm()

    def peak(self) -> int:
        """Bytes of resident memory above the level at the last reset."""
        return max(0, self._hwm() - self._base) if self.ok else 0


def mmap_large_allocations(threshold: int = 1 << 16) -> bool:
    """Make glibc serve every allocation of ``threshold`` bytes or more with its own
    mmap (no dynamic threshold), so it shows in the peak RSS and leaves on free.
    Returns whether it took effect (False off glibc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3
    return bool(mallopt(m_mmap_threshold, threshold))


@contextmanager
def case_alarm(limit: float | None) -> Iterator[Callable[[bool], None]]:
    """``arm(True)``/``arm(False)`` start/stop a per-case alarm raising CaseTimeout
    (main thread only; elsewhere, or with no limit, arming does nothing)."""
    if not limit or threading.current_thread() is not threading.main_thread():
        yield lambda on: None
        return

    def handler(signum: int, frame: object) -> None:
        raise CaseTimeout(f"case ran over {limit} s")

    def arm(on: bool) -> None:
        signal.setitimer(signal.ITIMER_REAL, limit if on else 0.0)

    old = signal.signal(signal.SIGALRM, handler)
    try:
        yield arm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)
