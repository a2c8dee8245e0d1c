"""Float32 reductions whose result does not depend on torch's thread count.

Payloads carry norms and scales computed by float32 sums; for the same seed they
must be the same bytes on every machine and thread count. torch already reduces
several rows row by row (each row on one thread), but splits ONE row longer than its
grain size over its threads, which changes the rounding. The functions here pin
exactly those reductions to one thread, which gives the one-thread result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_thread_for", "row_sums"]

#: torch splits a float32 reduction of one row longer than this over its threads,
#: so the rounding of such a sum depends on ``torch.get_num_threads()``.
_TORCH_GRAIN = 32_768


@contextlib.contextmanager
def one_thread_for(t: torch.Tensor) -> Iterator[None]:
    """Run the block's reductions of ``t`` on one torch thread if they would
    otherwise be split by thread count (a single row longer than torch's grain).

    Row sums of several rows are split by rows and already thread-independent, so
    only a single long row (a one-piece group, or a whole vector) is pinned; the
    result equals the one-thread sum, whatever the caller's thread count.
    """
    rows = t.shape[0] if t.dim() > 1 else 1
    size = t.shape[-1] if t.dim() > 0 else 1
    threads = torch.get_num_threads()
    if rows != 1 or size <= _TORCH_GRAIN or threads == 1 or t.device.type != "cpu":
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def row_sums(t: torch.Tensor) -> torch.Tensor:
    """``t.sum(dim=1)`` of a (rows, size) view, the same for any thread count."""
    with one_thread_for(t):
        return t.sum(dim=1)
