"""Validated codec inputs and payload sections as tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import wire
from ..errors import PayloadError
from ..seeds import MASK64

__all__ = [
    "as_vector",
    "max_abs",
    "check_finite",
    "check_id",
    "check_int",
    "check_length",
    "tensor_bytes",
    "read_tensor",
    "read_f32",
    "scales_and_codes",
    "ScalesAndCodes",
    "aggregate_weights",
]

#: Parsed body sections: float32 scales (as read) and the packed codes.
ScalesAndCodes = tuple[torch.Tensor, memoryview]


def as_vector(x: Any, device: torch.device) -> tuple[torch.Tensor, float]:
    """Validate an input update; returns a float32 copy on ``device`` and its
    largest magnitude.

    Raises
    ------
    TypeError
        If ``x`` is neither a torch tensor nor a numpy array, or is not floating.
    ValueError
        If ``x`` is not 1-D, is empty, or holds NaN/Inf.
    """
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"`x` must hold floats (float16/32/64). Found dtype {x.dtype}."
            )
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(
            f"`x` must be a 1-D torch.Tensor or numpy array. Found {type(x).__name__}."
        )
    if not x.is_floating_point():
        raise TypeError(f"`x` must be a floating-point tensor. Found dtype {x.dtype}.")
    if x.dim() != 1:
        raise ValueError(
            f"`x` must be 1-D (flatten the update first). Found shape {tuple(x.shape)}."
        )
    if x.numel() == 0:
        raise ValueError(
            "`x` must have at least one coordinate. Found an empty vector."
        )
    v = x.detach().to(device=device, dtype=torch.float32, copy=True)
    amax = max_abs(v)
    if not math.isfinite(amax):
        bad = int((~torch.isfinite(v)).sum())
        raise ValueError(
            f"`x` holds {bad} NaN/Inf value(s) (or values beyond float32 range); "
            "refusing to encode a non-finite update."
        )
    return v, amax


def max_abs(t: torch.Tensor) -> float:
    """``max |t|`` in one reduction pass without a copy (NaN or inf when a value is
    not finite: min and max propagate NaN, and an infinity is the min or the max)."""
    if t.numel() == 0:
        return 0.0
    lo, hi = (float(v) for v in torch.aminmax(t))
    if math.isnan(lo) or math.isnan(hi):
        return math.nan
    return max(-lo, hi)


def check_finite(out: torch.Tensor) -> None:
    """Reject a decoded vector with NaN/Inf (only a forged payload decodes so)."""
    if not math.isfinite(max_abs(out)):
        raise PayloadError(
            "Payload decodes to non-finite values (its scales overflow float32): "
            "corrupt or forged payload."
        )


def check_length(d: Any) -> int:
    """Validate a vector length argument (an int >= 1)."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"`d` must be an int >= 1. Found {d!r}.")
    return int(d)


def check_int(name: str, value: Any, lo: int, hi: int, why: str = "") -> int:
    """Validate an int knob in ``lo..hi`` (the message names it and the range)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(
            f"`{name}` must be an int in {lo}..{hi}{why}. Found {value!r}."
        )
    return value


def check_id(name: str, value: Any) -> int:
    """Validate a seed or client id (an int in 0..2**64-1)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int. Found {type(value).__name__}.")
    number = int(value)
    if not 0 <= number <= MASK64:
        raise ValueError(f"`{name}` must be in 0..2**64-1. Found {number}.")
    return number


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Little-endian bytes of a uint8 / float32 / float16 tensor (moved to the CPU)."""
    arr = t.detach().cpu().numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def read_tensor(
    view: memoryview, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A tensor of ``dtype`` copied from payload bytes, on ``device``."""
    if len(view) == 0:
        return torch.empty(0, dtype=dtype, device=device)
    return torch.frombuffer(bytearray(view), dtype=dtype).to(device)


def read_f32(reader: wire.Reader, n: int, device: torch.device) -> torch.Tensor:
    """The next ``n`` finite float32 values of a payload body, on ``device``."""
    return torch.from_numpy(reader.f32(n).copy()).to(device)


def scales_and_codes(
    reader: wire.Reader, n: int, code_bytes: int, what: str, device: torch.device
) -> ScalesAndCodes:
    """The common body tail: ``n`` float32 scales, then exactly ``code_bytes`` of
    packed codes (checked before anything is read)."""
    reader.expect_remaining(4 * n + code_bytes, what)
    return read_f32(reader, n, device), reader.rest()


def aggregate_weights(
    n: int, clients: Sequence[int], weights: Sequence[float] | None
) -> torch.Tensor:
    """Validate the arguments of an aggregation of ``n`` payloads; returns the
    normalized float64 weights (uniform when ``weights`` is None)."""
    if n == 0:
        raise ValueError("`blobs` is empty; aggregate needs at least one payload.")
    if len(clients) != n:
        raise ValueError(
            f"`clients` must have one id per payload: {n} payloads, {len(clients)} ids."
        )
    for c in clients:
        check_id("clients[i]", c)
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(list(weights), dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(
                f"`weights` must have one value per payload: {n} payloads, "
                f"{w.size} weights."
            )
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"`weights` must be finite, >= 0 and not all zero. Found {w.tolist()}."
            )
    return torch.from_numpy(w / w.sum())
