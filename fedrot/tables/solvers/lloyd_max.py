"""Solve the Lloyd-Max conditions for N(0, 1) and write ``lloyd_max.json``.

``python -m fedrot.tables.solvers.lloyd_max`` solves 1..8 bits: 200 Lloyd iterations
from the half-normal quantiles, then the fixed point ``lloyd_step(c) = c`` with
Powell's hybrid method (scipy, a dev dependency; residual < 1e-10). The runtime
loader is :func:`fedrot.tables.lloyd_max.lloyd_max`.
"""

from __future__ import annotations

import math

import numpy as np

from .._shipped import regenerate
from ..lloyd_max import MAX_BITS, SHIPPED

__all__ = ["solve_lloyd_max", "write_tables"]


def _phi(t: np.ndarray) -> np.ndarray:
    density: np.ndarray = np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    return density


def solve_lloyd_max(bits: int) -> tuple[np.ndarray, float, float]:
    """Solve the Lloyd-Max conditions; returns (positive centroids, E[ZQ], residual).

    Needs scipy (dev extra). Deterministic.
    """
    from scipy.optimize import root
    from scipy.special import ndtr, ndtri

    m = 1 << (bits - 1)

    def step(c: np.ndarray) -> np.ndarray:
        t = np.concatenate([[0.0], (c[:-1] + c[1:]) / 2, [np.inf]])
        pt, cdf = _phi(t), ndtr(t)
        means: np.ndarray = (pt[:-1] - pt[1:]) / (cdf[1:] - cdf[:-1])
        return means

    c = ndtri(0.5 + 0.5 * (np.arange(m) + 0.5) / m)
    for _ in range(200):
        c = step(c)
    c = root(lambda v: step(v) - v, c, method="hybr", tol=1e-15).x
    residual = float(np.max(np.abs(step(c) - c)))
    t = np.concatenate([[0.0], (c[:-1] + c[1:]) / 2, [np.inf]])
    e_zq = float(2 * np.sum(c * (_phi(t[:-1]) - _phi(t[1:]))))
    return c, e_zq, residual


def write_tables(path: str) -> None:
    """Solve 1..MAX_BITS bits and write the table file to ``path``.

    Raises
    ------
    RuntimeError
        If a solve leaves a residual above 1e-10.
    """
    tables = {}
    for bits in range(1, MAX_BITS + 1):
        pos, e_zq, residual = solve_lloyd_max(bits)
        if residual > 1e-10:
            raise RuntimeError(
                f"Lloyd-Max did not converge for {bits} bits: {residual}"
            )
        tables[str(bits)] = {
            "positive_centroids": [float(v) for v in pos],
            "e_zq": e_zq,
            "residual": residual,
        }
    SHIPPED.write(
        path, tables, source="fedrot/tables/solvers/lloyd_max.py:solve_lloyd_max"
    )


if __name__ == "__main__":
    regenerate(SHIPPED, write_tables)
