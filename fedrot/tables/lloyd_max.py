"""Lloyd-Max quantizers for N(0, 1): EDEN's scalar quantization tables (loader).

A b-bit Lloyd-Max quantizer has 2**b centroids, each the conditional mean of its
cell, and cell boundaries at the midpoints of neighbouring centroids. The tables
are produced by this project, not copied: ``python -m fedrot.tables.solvers.lloyd_max``
(:mod:`fedrot.tables.solvers.lloyd_max`) solves the conditions for 1..8 bits and
writes ``lloyd_max.json``; this module only reads it (numpy only, no scipy).

Reference: Lloyd, "Least squares quantization in PCM" (1982); Max, "Quantizing for
minimum distortion" (1960); EDEN, https://arxiv.org/abs/2108.08842, section 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from ._shipped import ShippedFile

__all__ = ["MAX_BITS", "SHIPPED", "LloydMax", "lloyd_max"]

#: Bit widths shipped: 1..MAX_BITS.
MAX_BITS = 8
SHIPPED = ShippedFile(
    name="lloyd_max.json",
    section="tables",
    regenerate="python -m fedrot.tables.solvers.lloyd_max",
)


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

    Parameters
    ----------
    bits
        Bits per coordinate; the quantizer has ``2**bits`` levels.

    Returns
    -------
    LloydMax
        Centroids, boundaries and ``E[Z Q(Z)]``.

    Raises
    ------
    ValueError
        If ``bits`` is outside 1..8, or the shipped file is damaged.

    Examples
    --------
    >>> float(lloyd_max(1).centroids[1])  # E|Z| = sqrt(2 / pi)
    0.7978845608028654
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"`bits` must be in 1..{MAX_BITS}. Found {bits}.")
    key = str(bits)
    entry = SHIPPED.entry(
        key, missing=f"No Lloyd-Max table for bits={bits} in {SHIPPED.name}."
    )
    pos = SHIPPED.array(key, entry, "positive_centroids", shape=(1 << (bits - 1),))
    cent = np.concatenate([-pos[::-1], pos])
    return LloydMax(
        bits=bits,
        centroids=cent,
        boundaries=(cent[:-1] + cent[1:]) / 2,
        e_zq=float(entry["e_zq"]),
    )
