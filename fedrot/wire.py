"""The versioned, self-describing payload: real bytes, validated before allocation.

Layout of format version 1 (all integers little-endian)::

    offset  size  field
    0       2     magic b"FR"
    2       1     format version (1)
    3       1     codec id (see fedrot.codecs.CODEC_IDS)
    4       1     rotations k: number of RHT layers (0 = no rotation, 1..3)
    5       1     log2 of the chunk size (0 for codecs that do not chunk)
    6       2     P, length of the codec parameter block (uint16)
    8       8     d, length of the original vector (uint64, 1 <= d < 2**48)
    16      P     codec parameters (fixed layout per codec; must equal the decoder's)
    16+P    ...   body: per-piece scales, counts, packed codes (layout per codec)
    end-4   4     CRC-32 (zlib) of every preceding byte

``parse`` checks magic, version, lengths and the CRC before anything else, then each
codec's ``check`` (run first by ``decode`` and ``aggregate``) checks its parameter
block and that the body length equals the exact value its formula gives for the
declared d and the counts the body declares, before allocating anything of size d.
Every failure raises :class:`fedrot.PayloadError` saying what was wrong.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import PayloadError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "FIXED_BYTES",
    "Header",
    "build",
    "parse",
    "Reader",
]

MAGIC = b"FR"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<2sBBBBHQ")
_CRC = struct.Struct("<I")
#: Bytes of every payload outside the parameter block and body (16 + 4 CRC).
FIXED_BYTES = _HEAD.size + _CRC.size
MAX_D = 1 << 48


@dataclass(frozen=True)
class Header:
    """The fixed fields of a payload."""

    version: int
    codec_id: int
    rotations: int
    chunk_log2: int
    d: int
    params: bytes


def build(
    *,
    codec_id: int,
    rotations: int,
    chunk_log2: int,
    d: int,
    params: bytes,
    body: list[bytes],
) -> bytes:
    """Assemble header, parameters, body parts and CRC into one payload."""
    head = _HEAD.pack(
        MAGIC, FORMAT_VERSION, codec_id, rotations, chunk_log2, len(params), d
    )
    blob = b"".join([head, params, *body])
    return blob + _CRC.pack(zlib.crc32(blob))


def parse(blob: bytes | bytearray | memoryview) -> tuple[Header, memoryview]:
    """Validate the envelope of a payload; returns its header and body.

    Raises
    ------
    PayloadError
        If the payload is not bytes, too short, has a wrong magic, an unknown version,
        a bad CRC, an impossible length or rotations/d fields out of range.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise PayloadError(f"A payload must be bytes. Found {type(blob).__name__}.")
    view = memoryview(blob).cast("B")
    if len(view) < FIXED_BYTES:
        raise PayloadError(
            f"Payload truncated: {len(view)} bytes, shorter than the "
            f"{FIXED_BYTES}-byte envelope."
        )
    magic, version, codec_id, rotations, chunk_log2, plen, d = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise PayloadError(
            f"Not a fedrot payload: magic {bytes(magic)!r}, expected {MAGIC!r}."
        )
    if version != FORMAT_VERSION:
        raise PayloadError(
            f"Unknown payload format version {version}; this fedrot reads version "
            f"{FORMAT_VERSION}. Use the same fedrot version on clients and server."
        )
    if FIXED_BYTES + plen > len(view):
        raise PayloadError(
            f"Payload truncated: its parameter block claims {plen} bytes but only "
            f"{len(view) - FIXED_BYTES} remain."
        )
    (crc,) = _CRC.unpack_from(view, len(view) - _CRC.size)
    if zlib.crc32(view[: len(view) - _CRC.size]) != crc:
        raise PayloadError(
            "Payload corrupt: CRC-32 mismatch (truncated or altered bytes)."
        )
    if rotations > 3:
        raise PayloadError(f"Payload declares {rotations} rotations; at most 3 exist.")
    if not 1 <= d < MAX_D:
        raise PayloadError(f"Payload declares d = {d}; expected 1 <= d < 2**48.")
    start = _HEAD.size
    params = bytes(view[start : start + plen])
    body = view[start + plen : len(view) - _CRC.size]
    return Header(version, codec_id, rotations, chunk_log2, d, params), body


class Reader:
    """Sequential reader over a payload body that never reads past its end."""

    def __init__(self, body: memoryview) -> None:
        self._body = body
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._body) - self._pos

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes."""
        if n < 0 or n > self.remaining:
            raise PayloadError(
                f"Payload truncated: needed {n} more bytes, {self.remaining} remain."
            )
        out = self._body[self._pos : self._pos + n]
        self._pos += n
        return out

    def rest(self) -> memoryview:
        """All bytes not read yet."""
        return self.take(self.remaining)

    def u64(self) -> int:
        """The next little-endian uint64."""
        return int.from_bytes(self.take(8), "little")

    def f32(self, n: int) -> np.ndarray:
        """The next ``n`` float32 values; non-finite values are rejected."""
        arr = np.frombuffer(self.take(4 * n), dtype="<f4")
        if not np.isfinite(arr).all():
            raise PayloadError("Payload corrupt: a scale or value is NaN or infinite.")
        return arr

    def expect_remaining(self, n: int, what: str) -> None:
        """Check that exactly ``n`` bytes remain before decoding ``what``."""
        if self.remaining != n:
            raise PayloadError(
                f"Payload length inconsistent with its header: {what} needs exactly "
                f"{n} bytes, found {self.remaining}."
            )
