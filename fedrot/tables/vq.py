"""Block vector-quantization codebooks for i.i.d. N(0, 1) blocks (loader).

Used by the ``"vq"`` codec (:mod:`fedrot.codecs.vq`). After three RHTs the blocks of
the normalized rotated vector behave like i.i.d. Gaussian blocks (Ben-Basat et al.,
https://arxiv.org/abs/2605.06014), so one fixed codebook per (block size m, bits per
coordinate b) serves every input. A codebook has ``K = 2**(m b)`` codewords in R^m.

The codebooks are trained by this project (``python -m fedrot.tables.solvers.vq``,
:mod:`fedrot.tables.solvers.vq`) and shipped as ``vq_codebooks.json``; this module
only reads them, and holds the nearest-codeword search both sides use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ._shipped import ShippedFile, crc32_f64

__all__ = ["CONFIGS", "SHIPPED", "Codebook", "codebook", "nearest"]

#: (block size m, bits per coordinate b) trained and shipped.
CONFIGS: tuple[tuple[int, int], ...] = ((2, 1), (2, 2), (2, 3), (4, 1), (4, 2))
SHIPPED = ShippedFile(
    name="vq_codebooks.json",
    section="codebooks",
    regenerate="python -m fedrot.tables.solvers.vq",
)
_BATCH = 1 << 16


@dataclass(frozen=True)
class Codebook:
    """A shipped codebook: ``codewords`` (K, m) float64, and its Gaussian statistics.

    ``mse`` is the mean squared error per coordinate, ``e_zq`` is
    ``E<z, Q(z)> / m`` and ``q2`` is ``E|Q(z)|^2 / m``, all measured on held-out
    Gaussian blocks.
    """

    block: int
    bits: int
    codewords: np.ndarray
    mse: float
    e_zq: float
    q2: float

    @property
    def vnmse(self) -> float:
        """vNMSE with EDEN's unbiasing scale for Gaussian blocks (large d)."""
        return self.q2 / self.e_zq**2 - 1.0

    @property
    def crc(self) -> int:
        """CRC-32 of the codewords' float64 little-endian bytes (row-major)."""
        return crc32_f64(self.codewords)


def nearest(z: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword for each row of ``z`` (batched, int64)."""
    c2 = codewords.square().sum(dim=1)
    out = torch.empty(z.shape[0], dtype=torch.int64, device=z.device)
    for s in range(0, z.shape[0], _BATCH):
        zb = z[s : s + _BATCH]
        out[s : s + _BATCH] = torch.argmin(c2[None, :] - 2 * zb @ codewords.T, dim=1)
    return out


@cache
def codebook(block: int, bits: int) -> Codebook:
    """Load the shipped codebook for block size ``block`` and ``bits`` per coordinate.

    Parameters
    ----------
    block
        Block size m (coordinates per codeword).
    bits
        Bits per coordinate b; the codebook has ``2**(m b)`` codewords.

    Returns
    -------
    Codebook
        The codewords and their Gaussian statistics.

    Raises
    ------
    ValueError
        If no codebook is shipped for the pair, or the shipped file is damaged.

    Examples
    --------
    >>> cb = codebook(2, 2)
    >>> cb.codewords.shape, cb.vnmse < 0.1331  # beats scalar 2-bit EDEN
    ((16, 2), True)
    """
    key = f"m{block}_b{bits}"
    e = SHIPPED.entry(
        key,
        missing=(
            f"No VQ codebook for block={block}, bits={bits}. Shipped (block, bits): "
            f"{list(CONFIGS)}."
        ),
    )
    shape = (1 << (block * bits), block)
    cw = SHIPPED.array(key, e, "codewords", shape=shape)
    return Codebook(block, bits, cw, float(e["mse"]), float(e["e_zq"]), float(e["q2"]))
