"""Shared settings of the sparsifying codecs (top-k, rand-k)."""

from __future__ import annotations

import math
from typing import Any


def check_fraction(fraction: Any) -> float:
    """Validate ``fraction`` in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(
            f"`fraction` must be a number. Found {type(fraction).__name__}."
        )
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1]. Found {fraction}.")
    return fraction


def num_kept(fraction: float, d: int) -> int:
    """Coordinates kept out of d: ``max(1, ceil(fraction * d))``."""
    return max(1, math.ceil(fraction * d - 1e-9))


def index_width(d: int) -> int:
    """Bits per packed coordinate index: ``max(1, ceil(log2 d))``."""
    return max(1, (d - 1).bit_length())
