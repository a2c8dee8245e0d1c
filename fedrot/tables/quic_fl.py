"""QUIC-FL receiver tables (loader) and the sender's state sweep.

QUIC-FL (Ben-Basat et al., "Accelerating Federated Learning with Quick Distributed
Mean Estimation", ICML 2024, https://arxiv.org/abs/2205.13341) quantizes each
normalized rotated coordinate ``z in [-T, T]`` to a b-bit message ``X`` using
``l`` bits of randomness ``h`` shared by client and server. The server's estimate is
a table look-up ``R[X, h]``; it must be unbiased for every ``z`` in [-T, T].

For a fixed table the best unbiased sender is found by a sweep (derivation in
:mod:`fedrot.tables.solvers.quic_fl`): raising a multiplier ``t``, every ``h`` sends
the level of column ``h`` nearest to ``t``, which visits ``(2**b - 1) * 2**l + 1``
*states*; between two states exactly one column ``h*_j`` moves up one level (at
threshold ``t_j``, the midpoint of its two levels). State ``j`` has mean ``m_j``
and second moment ``s_j`` over ``h``; the sender for ``z`` randomizes between the
two states whose means bracket ``z``.

The tables are solved by this project (``python -m fedrot.tables.solvers.quic_fl``)
and shipped as ``quic_fl_tables.json``; this module only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ._shipped import ShippedFile

__all__ = [
    "CONFIGS",
    "OUTLIER_LOG2",
    "SHIPPED",
    "QuicFLTable",
    "quic_fl_table",
    "shipped_outlier_log2",
    "state_sweep",
]

#: (bits, log2 of the number of shared-randomness values h) solved and shipped.
CONFIGS: tuple[tuple[int, int], ...] = ((1, 7), (2, 6), (3, 6), (4, 6))
#: Outlier fractions p = 2**-m shipped, as m.
OUTLIER_LOG2: tuple[int, ...] = (7, 9, 11)
SHIPPED = ShippedFile(
    name="quic_fl_tables.json",
    section="tables",
    regenerate="python -m fedrot.tables.solvers.quic_fl",
)


def state_sweep(
    r: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """State means m, second moments s, thresholds t and moving columns h*.

    ``r`` is a table with ascending columns, shape ``(2**b, 2**l)``. Differentiable
    (the solver minimizes through it). Stable sort, so ties move the lower column
    first.
    """
    k, h = r.shape
    t = 0.5 * (r[1:] + r[:-1])
    dm = (r[1:] - r[:-1]) / h
    ds = (r[1:] ** 2 - r[:-1] ** 2) / h
    order = torch.argsort(t.reshape(-1), stable=True)
    t, dm, ds = t.reshape(-1)[order], dm.reshape(-1)[order], ds.reshape(-1)[order]
    cols = torch.arange(h).repeat(k - 1)[order]
    zero = r.new_zeros(1)
    m = r[0].mean() + torch.cat([zero, torch.cumsum(dm, 0)])
    s = (r[0] ** 2).mean() + torch.cat([zero, torch.cumsum(ds, 0)])
    return m, s, t, cols


@dataclass(frozen=True)
class QuicFLTable:
    """A shipped receiver table with the sender's precomputed state sweep.

    Attributes
    ----------
    bits, sr_log2
        Message bits b and log2 of the number of shared-randomness values h.
    outlier_log2
        The table is for outlier fraction ``p = 2**-outlier_log2``.
    threshold
        ``T_eff = min(T, -m_0, m_last)``: coordinates with ``|z| > T_eff`` are sent
        exactly; every ``|z| <= T_eff`` has an exactly unbiased sender.
    table
        ``R[X, h]``, float64, each column ascending.
    vnmse
        Table-exact vNMSE for Gaussian input (outliers contribute 0).
    means
        State means ``m_j`` (ascending), length ``J + 1``.
    levels
        ``levels[j, h]``: the level column ``h`` sends in state ``j``, ``(J+1, H)``.
    movers
        ``movers[j]``: the column that moves up between states j and j+1.
    crc
        CRC-32 of the table's float64 little-endian bytes (sent in the codec's
        parameter block so both sides provably use the same table).
    """

    bits: int
    sr_log2: int
    outlier_log2: int
    threshold: float
    table: np.ndarray
    vnmse: float
    means: np.ndarray
    levels: np.ndarray
    movers: np.ndarray
    crc: int


def _levels(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = torch.from_numpy(table)
    m, _, _, cols = state_sweep(r)
    k, h = table.shape
    levels = np.zeros((len(m), h), dtype=np.int64)
    for j, c in enumerate(cols.tolist()):
        levels[j + 1] = levels[j]
        levels[j + 1, c] += 1
    if not (levels[-1] == k - 1).all():  # pragma: no cover - structural invariant
        raise RuntimeError("state sweep did not end at the top level of every column")
    return m.numpy(), levels, cols.numpy()


def shipped_outlier_log2() -> tuple[int, ...]:
    """The values m of the shipped outlier fractions ``p = 2**-m``."""
    return OUTLIER_LOG2


@cache
def quic_fl_table(bits: int, outlier_log2: int = 9) -> QuicFLTable:
    """Load the shipped table for ``bits`` and outlier fraction ``2**-outlier_log2``.

    Parameters
    ----------
    bits
        Message bits b, one of the shipped :data:`CONFIGS`.
    outlier_log2
        m of the outlier fraction ``p = 2**-m``, one of :data:`OUTLIER_LOG2`.

    Returns
    -------
    QuicFLTable
        The table with its state sweep and effective threshold.

    Raises
    ------
    ValueError
        If no table is shipped for the pair, or the shipped file is damaged.

    Examples
    --------
    >>> t = quic_fl_table(2)
    >>> t.table.shape, round(t.vnmse, 4) < 0.2149
    ((4, 64), True)
    """
    key = f"b{bits}_p{outlier_log2}"
    e = SHIPPED.entry(
        key,
        missing=(
            f"No QUIC-FL table for bits={bits}, outlier fraction 2**-{outlier_log2}. "
            f"Shipped: bits in {[b for b, _ in CONFIGS]}, outlier fraction 2**-m "
            f"for m in {list(OUTLIER_LOG2)}."
        ),
    )
    shape = (1 << bits, 1 << int(e["sr_log2"]))
    table = SHIPPED.array(key, e, "table", shape=shape, crc_field="crc32")
    means, levels, movers = _levels(table)
    thr = min(float(e["T"]), -float(means[0]), float(means[-1]))
    return QuicFLTable(
        bits=bits,
        sr_log2=int(e["sr_log2"]),
        outlier_log2=outlier_log2,
        threshold=thr,
        table=table,
        vnmse=float(e["vnmse"]),
        means=means,
        levels=levels,
        movers=movers,
        crc=int(e["crc32"]),
    )
