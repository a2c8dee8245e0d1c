"""Shared settings of the sparsifying codecs (top-k, rand-k)."""

from __future__ import annotations

import math
import struct
from typing import Any


def check_fraction(fraction: Any) -> float:
    """Validate ``fraction`` in (0, 1], exactly representable in float32."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"`fraction` must be a number. Found {type(fraction).__name__}.")
    fraction = float(fraction)
    if not 0 < fraction <= 1 or struct.unpack("<f", struct.pack("<f", fraction))[0] != fraction:
        raise ValueError(
            "`fraction` must be in (0, 1] and exactly representable in float32 "
            f"(e.g. 1/32 = 0.03125). Found {fraction}."
        )
    return fraction


def num_kept(fraction: float, d: int) -> int:
    """Coordinates kept out of d: ``max(1, ceil(fraction * d))``."""
    return max(1, math.ceil(fraction * d - 1e-9))


def index_width(d: int) -> int:
    """Bits per packed coordinate index: ``max(1, ceil(log2 d))``."""
    return max(1, (d - 1).bit_length())
