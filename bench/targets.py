"""The targets of issue 14, checked against the rows of one ``python -m bench`` run.

Each :class:`Target` names a section, the row it reads (filters on the row's
columns, at the issue's size when that was measured, else the largest measured
size, e.g. in a ``--quick`` run) and a column with its upper bound. :func:`evaluate`
returns one row per target: the measured figure, the bound, ``met``, ``MISSED`` or
``not run`` (the section was not chosen), and how many cores other processes kept
busy during the section (a figure measured under contention says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """An upper bound on one column of one benchmark row.

    Attributes
    ----------
    label : str
        What is measured, as the issue names it.
    section : str
        The ``--only`` key of the section whose rows hold the figure.
    column : str
        The column compared with ``bound``.
    bound : float
        The target: the figure must be at most this.
    where : dict
        Column values the row must have (e.g. ``{"codec": "eden bits=1"}``).
    size_key : str
        The column holding the size ("d", "D" or "n").
    size : str or int
        The size the issue states; when no row has it, the largest measured size.
    """

    label: str
    section: str
    column: str
    bound: float
    where: dict[str, Any] = field(default_factory=dict)
    size_key: str = "d"
    size: str | int = "2^24"


def _eden(bits: float) -> dict[str, str]:
    return {"codec": f"eden bits={bits}", "RHTs": "2"}


#: The targets of issue 14 (all at d = 2^24 but the aggregation's, at 2^20).
TARGETS: tuple[Target, ...] = (
    Target("FWHT in place (x pass)", "fwht", "fwht_x_pass", 3.0, size_key="D"),
    Target(
        "FWHT out of place (x (fresh pass + in-place FWHT))",
        "fwht",
        "fwht_out_x_fresh_plus_inplace",
        1.2,
        size_key="D",
    ),
    Target(
        "EDEN 1 bit, 2 RHTs: encode (x pass)", "codecs", "encode_x_pass", 8.0, _eden(1)
    ),
    Target(
        "EDEN 1 bit, 2 RHTs: decode (x pass)", "codecs", "decode_x_pass", 8.0, _eden(1)
    ),
    Target(
        "EDEN 1 bit encode: extra memory beyond the payload (MiB)",
        "codecs",
        "encode_over_payload_MiB",
        1.0,
        _eden(1),
    ),
    Target(
        "EDEN 1 bit decode: extra memory beyond the output (MiB)",
        "codecs",
        "decode_over_output_MiB",
        1.0,
        _eden(1),
    ),
    Target("EDEN 2 bits encode (x pass)", "codecs", "encode_x_pass", 8.0, _eden(2)),
    Target(
        "DRIVE encode (x pass)",
        "codecs",
        "encode_x_pass",
        8.0,
        {"codec": "drive", "RHTs": "2"},
    ),
    Target(
        "DRIVE decode (x pass)",
        "codecs",
        "decode_x_pass",
        8.0,
        {"codec": "drive", "RHTs": "2"},
    ),
    Target(
        "QUIC-FL 2 bits encode (x pass)",
        "codecs",
        "encode_x_pass",
        10.0,
        {"codec": "quic-fl bits=2", "RHTs": "2"},
    ),
    Target(
        "QUIC-FL 2 bits decode, one client (x pass)",
        "codecs",
        "decode_x_pass",
        10.0,
        {"codec": "quic-fl bits=2", "RHTs": "2"},
    ),
    Target(
        "Hadamard-SQ 1 bit encode (x pass)",
        "codecs",
        "encode_x_pass",
        15.0,
        {"codec": "hadamard-sq bits=1", "RHTs": "2"},
    ),
    Target(
        "VQ 2 bits encode (x pass)",
        "codecs",
        "encode_x_pass",
        15.0,
        {"codec": "vq bits=2", "RHTs": "2"},
    ),
    Target(
        "EDEN 1.5 bits (fractional) encode (x pass)",
        "codecs",
        "encode_x_pass",
        15.0,
        _eden(1.5),
    ),
    Target(
        "EDEN 0.5 bits (sub-bit) encode (x pass)",
        "codecs",
        "encode_x_pass",
        15.0,
        _eden(0.5),
    ),
    Target(
        "aggregation, 100 clients, 2^20: QUIC-FL 2 bits shared rotation (x fp32 mean)",
        "aggregation",
        "quicfl2_shared_x_fp32_mean",
        3.0,
        size_key="n",
        size=100,
    ),
    Target(
        "aggregation, 100 clients, 2^20: EDEN 1 bit per client (x fp32 mean)",
        "aggregation",
        "eden1_per_client_x_fp32_mean",
        8.0,
        size_key="n",
        size=100,
    ),
)


def _size_order(value: Any) -> float:
    """Sort key of a size column: ``"2^20"`` -> 20, an int as itself."""
    text = str(value)
    return float(text[2:]) if text.startswith("2^") else float(text)


def _row(target: Target, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of ``target``: its filters, at its size or else the largest size."""
    fits = [r for r in rows if all(r.get(k) == v for k, v in target.where.items())]
    if not fits:
        return None
    exact = [r for r in fits if r.get(target.size_key) == target.size]
    return (
        exact[0] if exact else max(fits, key=lambda r: _size_order(r[target.size_key]))
    )


def evaluate(
    results: dict[str, Any], targets: tuple[Target, ...] = TARGETS
) -> list[dict[str, Any]]:
    """One row per target (default :data:`TARGETS`) from the sections in ``results``."""
    others = {
        c["section"]: c["other_processes_cores"] for c in results.get("contention", [])
    }
    out = []
    for target in targets:
        row = _row(target, results.get(target.section) or [])
        value = None if row is None else row.get(target.column)
        if value is None:
            status = "not run"
        else:
            status = "met" if value <= target.bound else "MISSED"
        out.append(
            {
                "target": target.label,
                "size": None
                if row is None
                else f"{target.size_key}={row[target.size_key]}",
                "measured": value,
                "bound": target.bound,
                "status": status,
                "other_processes_cores": others.get(target.section),
            }
        )
    return out
