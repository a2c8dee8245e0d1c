"""Seeded uniform streams and masks for the codecs, compiled on the CPU when possible.

The values are those of :func:`fedrot.seeds.uniforms_torch` (the reference, any
device); :mod:`fedrot._kernels` computes them in one pass without the int64
temporaries of the torch path when the kernels are available.
"""

from __future__ import annotations

import torch

from .. import _kernels
from ..seeds import uniforms_torch

__all__ = ["uniforms", "mask", "gather", "scatter"]


def uniforms(key: int, n: int, device: torch.device) -> torch.Tensor:
    """``n`` float32 uniforms in [0, 1) of the key's stream (2**-24 grid)."""
    if device.type == "cpu":
        fast = _kernels.uniforms(key, n)
        if fast is not None:
            return fast
    return uniforms_torch(key, n, device=device)


def mask(key: int, n: int, p: float, device: torch.device) -> tuple[torch.Tensor, int]:
    """The mask ``uniforms(key, n) < p`` (bool) and its number of True values."""
    if device.type == "cpu":
        fast = _kernels.mask(key, n, p)
        if fast is not None:
            return fast
    m = uniforms_torch(key, n, device=device) < p
    return m, int(m.sum())


def gather(v: torch.Tensor, keep: torch.Tensor, kept: int) -> torch.Tensor:
    """``v[keep]`` (a new vector of the ``kept`` values where the mask is True)."""
    if v.device.type == "cpu":
        fast = _kernels.compress(v, keep, kept)
        if fast is not None:
            return fast
    return v[keep]


def scatter(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`gather`: zeros of ``keep``'s length with ``values``
    where the mask is True (``values`` holds one value per True, in order)."""
    if values.device.type == "cpu" and values.numel() > 0:
        fast = _kernels.expand(values, keep)
        if fast is not None:
            return fast
    out = torch.zeros(keep.numel(), dtype=values.dtype, device=values.device)
    out[keep] = values
    return out
