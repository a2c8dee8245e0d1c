"""Facts about a codec applied to vectors of a given length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CodecInfo"]


@dataclass(frozen=True)
class CodecInfo:
    """Facts about a codec applied to vectors of length ``d``.

    Attributes
    ----------
    name, params
        Registry name and keyword parameters.
    d
        Vector length the facts refer to.
    payload_bytes
        Payload size in bytes: exact when ``exact_size`` is True; otherwise the
        *expected* size (fractional and sub-bit EDEN, whose counts come from a
        seeded mask; QUIC-FL, whose outlier count depends on the data), for
        Gaussian-like input.
    exact_size
        Whether every payload for an input of length ``d`` has exactly
        ``payload_bytes`` bytes.
    header_bytes
        Bytes of the payload that are not packed codes/values: envelope, parameters,
        counts and per-piece scales.
    bits_per_coordinate
        ``8 * payload_bytes / d``.
    unbiased
        Whether E[decode(encode(x))] = x.
    shared_rotation
        Whether all clients of a round share one rotation (server inverts once).
    expected_vnmse
        vNMSE for Gaussian input at large d (theory), or None when it depends on
        the data.
    """

    name: str
    params: dict[str, Any]
    d: int
    payload_bytes: int
    exact_size: bool
    header_bytes: int
    bits_per_coordinate: float
    unbiased: bool
    shared_rotation: bool
    expected_vnmse: float | None
