"""Encode and decode of every registered codec: time, ratio to a pass, peak memory.

The settings (:data:`CODECS`) cover every name of :func:`fedrot.available_codecs`
(``tests/test_bench.py`` checks it) plus EDEN's other bit widths, fractional and
sub-bit included. A rotating codec is timed at 2 RHTs (the issue-14 setting), at
``"auto"`` and at its own default when that is neither.
"""

from __future__ import annotations

from typing import Any

import torch

from fedrot.codecs import get_codec

from .measure import (
    MIB,
    _kw,
    _print_row,
    _ratio,
    median_time,
    pass_time,
    peak_extra_bytes,
)

#: (registry name, parameters) of every codec setting the section times.
CODECS: list[tuple[str, dict[str, Any]]] = [
    ("eden", {"bits": 1}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 0.5}),
    ("drive", {}),
    ("quic-fl", {"bits": 2}),
    ("hadamard-sq", {"bits": 1}),
    ("vq", {"bits": 2}),
    ("qsgd", {"levels": 1}),
    ("terngrad", {}),
    ("signsgd", {}),
    ("topk", {"fraction": 1 / 32}),
    ("randk", {"fraction": 1 / 32}),
    ("fp16", {}),
    ("fp32", {}),
]


def codec_label(name: str, kw: dict[str, Any]) -> str:
    """The ``codec`` column of a row: the name and the explicit parameters."""
    return f"{name} {_kw(kw)}".strip()


def rotation_modes(name: str, kw: dict[str, Any]) -> list[int | str | None]:
    """The rotation modes timed for a setting: 2, "auto" and the codec's default
    (when it is neither); ``[None]`` for a codec that never rotates."""
    rotation = get_codec(name, **kw).rotation
    if rotation is None:
        return [None]
    modes: list[int | str | None] = [2, "auto"]
    if rotation.mode not in modes:
        modes.append(rotation.mode)
    return modes


def bench_codecs(log2s: list[int], reps: int) -> list[dict[str, Any]]:
    """Encode and decode of every :data:`CODECS` setting at each d = 2**log2.

    Memory columns: the peak growth of the resident set during one call as a
    multiple of the input's bytes, and what an encode holds beyond its payload
    (decode: beyond its fp32 output), in MiB; the issue-14 target is at most 1 MiB.
    """
    rows = []
    for lg in log2s:
        d = 1 << lg
        p = pass_time(d, reps)
        x = torch.randn(d, generator=torch.Generator().manual_seed(lg))
        for name, kw in CODECS:
            for mode in rotation_modes(name, kw):
                extra = {} if mode is None else {"rotations": mode}
                codec = get_codec(name, **kw, **extra)
                blob = codec.encode(x, seed=1, client=7)
                enc = median_time(
                    lambda c=codec, x=x: c.encode(x, seed=1, client=7), reps=reps
                )
                dec = median_time(
                    lambda c=codec, b=blob: c.decode(b, seed=1, client=7), reps=reps
                )
                mem_e = peak_extra_bytes(
                    lambda c=codec, x=x: c.encode(x, seed=1, client=7)
                )
                mem_d = peak_extra_bytes(
                    lambda c=codec, b=blob: c.decode(b, seed=1, client=7)
                )
                rows.append(
                    {
                        "codec": codec_label(name, kw),
                        "RHTs": "-" if mode is None else str(mode),
                        "d": f"2^{lg}",
                        "encode_ms": enc * 1e3,
                        "encode_x_pass": enc / p,
                        "decode_ms": dec * 1e3,
                        "decode_x_pass": dec / p,
                        "payload_MiB": len(blob) / MIB,
                        "encode_peak_x_input": _ratio(mem_e, 4 * d),
                        "encode_over_payload_MiB": _ratio(
                            None if mem_e is None else mem_e - len(blob), MIB
                        ),
                        "decode_peak_x_input": _ratio(mem_d, 4 * d),
                        "decode_over_output_MiB": _ratio(
                            None if mem_d is None else mem_d - 4 * d, MIB
                        ),
                    }
                )
                _print_row(rows[-1])
    return rows
