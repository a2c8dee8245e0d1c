"""Shared settings of the sparsifying codecs (top-k, rand-k)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ._params import Field
from .base import Codec

__all__ = ["FRACTION_FIELD", "init", "check_fraction", "num_kept"]

#: The parameter block of both sparsifiers: the kept fraction as float64.
FRACTION_FIELD = Field("fraction", "d")


def init(
    self: Any, *, fraction: float = 1 / 32, device: str | torch.device = "cpu"
) -> None:
    """``__init__`` of both sparsifiers: the device and the kept ``fraction``."""
    Codec.__init__(self, device=device)
    self.fraction = check_fraction(fraction)


def check_fraction(fraction: Any) -> float:
    """Validate ``fraction`` in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(
            f"`fraction` must be a number. Found {type(fraction).__name__}."
        )
    value = float(fraction)
    if not 0 < value <= 1:
        raise ValueError(f"`fraction` must be in (0, 1]. Found {value}.")
    return value


def num_kept(fraction: float, d: int) -> int:
    """Coordinates kept out of d: ``max(1, ceil(fraction * d))``."""
    return max(1, math.ceil(fraction * d - 1e-9))
