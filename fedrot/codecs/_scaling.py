"""Power-of-two rescaling that keeps float32 norms and scales in range.

A codec's float32 arithmetic (sums of squares, FWHT butterflies, dot products)
overflows for entries above about 1e19 and loses precision for entries below about
1e-19. Multiplying a vector by ``2**e`` is exact for every normal float32, and every
operation of the scale-carrying codecs (sums, products, quotients, square roots of
even powers) commutes with it exactly, so:

1. ``encode`` multiplies an input whose largest magnitude lies outside
   ``[2**-32, 2**32]`` by an even power of two ``2**e`` that brings it to about 1,
   runs the codec unchanged, and writes every scale multiplied back by ``2**-e``
   (computed in float64, rounded once to float32). A scale that does not fit in
   float32 is refused with a ValueError; ordinary inputs are never touched, so their
   payloads are byte-identical to a codec without this step.
2. ``decode`` does the same with the payload's scales: when the largest one lies
   outside ``[2**-32, 2**32]`` it decodes with scales times ``2**e`` and multiplies
   the result by ``2**-e`` (float64, rounded once).

The only values this changes are those that the unscaled float32 path would have
overflowed or rounded into the subnormal range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._io import ScalesAndCodes, read_tensor

__all__ = [
    "SAFE_LOG2",
    "exponent",
    "decode_exponent",
    "mul_pow2_",
    "unscale",
    "scale_bytes",
    "rescaled",
    "restore",
    "scaled_values",
]

#: Magnitudes in ``[2**-SAFE_LOG2, 2**SAFE_LOG2]`` need no rescaling: a piece of up
#: to 2**30 such values has sums of squares and FWHT partial sums far inside float32.
SAFE_LOG2 = 32
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def exponent(amax: float) -> int:
    """Even ``e`` with ``amax * 2**e`` in ``[0.5, 2)``; 0 when no rescaling is needed.

    Examples
    --------
    >>> exponent(3.0), exponent(1e20), exponent(1e-40)
    (0, -66, 132)
    """
    if amax == 0 or 2.0**-SAFE_LOG2 <= amax <= 2.0**SAFE_LOG2:
        return 0
    e = 1 - math.frexp(amax)[1]  # amax * 2**e in [1, 2)
    return e - (e % 2)


def decode_exponent(*scales: torch.Tensor) -> int:
    """:func:`exponent` of the largest magnitude among a payload's scale tensors."""
    amax = max((float(t.abs().max()) for t in scales if t.numel()), default=0.0)
    return exponent(amax)


def mul_pow2_(t: torch.Tensor, e: int) -> torch.Tensor:
    """Multiply a float tensor by ``2**e`` in place (two exact steps when ``2**e``
    itself is not a float32); returns ``t``."""
    while e:
        step = max(-120, min(120, e))
        t.mul_(2.0**step)
        e -= step
    return t


def unscale(scales: torch.Tensor, e: int, what: str) -> torch.Tensor:
    """``scales * 2**-e`` as float32 (one rounding), for a vector encoded times
    ``2**e``.

    Raises
    ------
    ValueError
        If a scale exceeds float32's range: the input cannot be represented by this
        codec (its norm or scale would be infinite).
    """
    if e == 0:
        return scales
    out = (scales.double() * 2.0**-e).to(torch.float32)
    if not bool(torch.isfinite(out).all()):
        big = float((scales.double() * 2.0**-e).abs().max())
        raise ValueError(
            f"`x` is too large for this codec: its {what} would be {big:.3g}, beyond "
            f"float32's range ({_FLOAT32_MAX:.3g}). Scale the update down or use the "
            "'fp32' codec."
        )
    return out


def scale_bytes(scales: torch.Tensor, e: int, what: str) -> bytes:
    """Payload bytes of :func:`unscale` ``(scales, e)`` (little-endian float32)."""
    return unscale(scales, e, what).cpu().numpy().astype("<f4", copy=False).tobytes()


def rescaled(scales: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A payload's scales ready for decoding: ``(scales * 2**e, e)`` with ``e`` from
    :func:`decode_exponent` (the same tensor and 0 for ordinary payloads)."""
    e = decode_exponent(scales)
    return (mul_pow2_(scales.clone(), e) if e else scales), e


def restore(out: torch.Tensor, e: int) -> torch.Tensor:
    """Undo a decode in the rescaled domain: ``out * 2**-e`` rounded once to
    float32 (``out`` itself when ``e == 0``)."""
    if e == 0:
        return out
    return (out.double() * 2.0**-e).to(torch.float32)


def scaled_values(
    parsed: ScalesAndCodes,
    device: torch.device,
    values: Callable[[torch.Tensor], torch.Tensor],
    *,
    per: int = 1,
) -> torch.Tensor:
    """``values(codes) * (scale / per)`` for a body of one float32 scale and packed
    codes (uint8 tensor), rescaled as :func:`rescaled` and :func:`restore` do."""
    scale, e = rescaled(parsed[0])
    codes = read_tensor(parsed[1], torch.uint8, device)
    return restore(values(codes) * (scale / per), e)
