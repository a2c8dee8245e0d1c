"""Lloyd-Max centroids for N(0, 1): EDEN's scalar quantization tables.

The tables are produced by this project, not copied: ``python -m fedrot.centroids``
solves the Lloyd-Max conditions (each centroid is the conditional mean of its cell,
each boundary is the midpoint of its neighbours) for 1..8 bits and writes
``fedrot/data/lloyd_max.json``. It runs 200 Lloyd iterations from the half-normal
quantiles, then solves the fixed point ``lloyd_step(c) = c`` with Powell's hybrid
method (scipy, a dev dependency; residual < 1e-10). The package only reads the JSON.

Reference: Lloyd, "Least squares quantization in PCM" (1982); Max, "Quantizing for
minimum distortion" (1960); EDEN, https://arxiv.org/abs/2108.08842, section 3.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

__all__ = ["LloydMax", "lloyd_max", "solve_lloyd_max"]

_TABLE = "lloyd_max.json"
MAX_BITS = 8


@dataclass(frozen=True)
class LloydMax:
    """A symmetric 2**bits-level Lloyd-Max quantizer for N(0, 1).

    ``centroids`` are sorted ascending (negative half then positive half);
    ``boundaries`` are the 2**bits - 1 midpoints. ``e_zq`` is E[Z Q(Z)], so the
    Lloyd-Max MSE is ``1 - e_zq`` and EDEN's unbiased vNMSE (large d) is
    ``1 / e_zq - 1``.
    """

    bits: int
    centroids: np.ndarray
    boundaries: np.ndarray
    e_zq: float

    @property
    def unbiased_vnmse(self) -> float:
        """EDEN's vNMSE with the unbiasing scale under a uniform random rotation."""
        return 1.0 / self.e_zq - 1.0

    @property
    def mse(self) -> float:
        """Lloyd-Max MSE per coordinate (biased-scale EDEN's vNMSE)."""
        return 1.0 - self.e_zq


@cache
def lloyd_max(bits: int) -> LloydMax:
    """The shipped Lloyd-Max quantizer for ``bits`` in 1..8.

    Examples
    --------
    >>> round(float(lloyd_max(1).centroids[1]), 12) == round(math.sqrt(2 / math.pi), 12)
    True
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"`bits` must be in 1..{MAX_BITS}. Found {bits}.")
    text = resources.files("fedrot.data").joinpath(_TABLE).read_text()
    entry = json.loads(text)["tables"][str(bits)]
    pos = np.asarray(entry["positive_centroids"], dtype=np.float64)
    cent = np.concatenate([-pos[::-1], pos])
    return LloydMax(
        bits=bits,
        centroids=cent,
        boundaries=(cent[:-1] + cent[1:]) / 2,
        e_zq=float(entry["e_zq"]),
    )


def _phi(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


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
        return (pt[:-1] - pt[1:]) / (cdf[1:] - cdf[:-1])

    c = ndtri(0.5 + 0.5 * (np.arange(m) + 0.5) / m)
    for _ in range(200):
        c = step(c)
    c = root(lambda v: step(v) - v, c, method="hybr", tol=1e-15).x
    residual = float(np.max(np.abs(step(c) - c)))
    t = np.concatenate([[0.0], (c[:-1] + c[1:]) / 2, [np.inf]])
    e_zq = float(2 * np.sum(c * (_phi(t[:-1]) - _phi(t[1:]))))
    return c, e_zq, residual


def _write_tables(path: str) -> None:
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
    doc = {
        "format": 1,
        "generator": "python -m fedrot.centroids (fedrot/centroids.py:solve_lloyd_max)",
        "tables": tables,
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    out = str(resources.files("fedrot.data").joinpath(_TABLE))
    _write_tables(out)
    print(f"wrote {out}")
