"""1-thread versus 2-thread scaling of the FWHT and the main encoders and decoders.

For each d the section times every operation with ``torch.set_num_threads(1)`` and
then ``(2)`` (the compiled kernels split their chunks over torch's thread count),
each against a pass measured at the same thread count, and reports the speed-up of
two threads over one. The caller's thread count is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedrot.codecs import get_codec
from fedrot.hadamard import fwht_

from .codecs import codec_label
from .measure import _print_row, median_time, pass_time

#: The thread counts compared.
THREADS = (1, 2)

#: Codec settings whose encode (and, for the first of each family, decode) is timed.
ENCODERS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("eden", {"bits": 1}, True),
    ("eden", {"bits": 2}, False),
    ("drive", {}, True),
    ("quic-fl", {"bits": 2}, True),
    ("hadamard-sq", {"bits": 1}, False),
)


def _operations(x: torch.Tensor) -> list[tuple[str, Callable[[], Any]]]:
    """(label, call) of the FWHT in place and each encode / decode at 2 RHTs."""
    y = x.clone()
    ops: list[tuple[str, Callable[[], Any]]] = [("fwht_ in place", lambda: fwht_(y))]
    for name, kw, with_decode in ENCODERS:
        codec = get_codec(name, rotations=2, **kw)
        label = codec_label(name, kw)
        ops.append((f"{label} encode", lambda c=codec: c.encode(x, seed=1, client=3)))
        if with_decode:
            blob = codec.encode(x, seed=1, client=3)
            ops.append(
                (
                    f"{label} decode",
                    lambda c=codec, b=blob: c.decode(b, seed=1, client=3),
                )
            )
    return ops


def bench_threads(log2s: list[int], reps: int) -> list[dict[str, Any]]:
    """One row per (d, operation): ms and x pass at 1 and 2 threads, and the
    speed-up of two threads over one."""
    before = torch.get_num_threads()
    rows = []
    try:
        for lg in log2s:
            d = 1 << lg
            x = torch.randn(d, generator=torch.Generator().manual_seed(lg))
            ops = _operations(x)
            times: dict[int, dict[str, float]] = {}
            passes: dict[int, float] = {}
            for t in THREADS:
                torch.set_num_threads(t)
                passes[t] = pass_time(d, reps)
                times[t] = {label: median_time(fn, reps=reps) for label, fn in ops}
            for label, _ in ops:
                one, two = times[1][label], times[2][label]
                rows.append(
                    {
                        "operation": label,
                        "d": f"2^{lg}",
                        "ms_1_thread": one * 1e3,
                        "ms_2_threads": two * 1e3,
                        "speedup_2_threads": one / two,
                        "x_pass_1_thread": one / passes[1],
                        "x_pass_2_threads": two / passes[2],
                    }
                )
                _print_row(rows[-1])
    finally:
        torch.set_num_threads(before)
    return rows
