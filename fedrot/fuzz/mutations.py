"""Hostile payloads made from a valid one: noise, cuts, flips, forgeries, grafts.

Each mutation takes ``(rng, source, corpus)`` and returns bytes that the decoder of
``source``'s codec must reject with :class:`fedrot.PayloadError` or decode to a finite
tensor of the declared length. The fixed envelope is described in :mod:`fedrot.wire`:
16 header bytes (magic, version, codec id, rotations, chunk log2, parameter length,
d), the parameter block, the body, and a CRC-32 of everything before it.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable

from .corpus import Corpus, Source

__all__ = ["MUTATIONS"]

_HUGE = (0, 1, 2, 255, 2**16 - 1, 2**31 - 1, 2**32, 2**40, 2**47 - 1, 2**48, 2**64 - 1)
_FLOATS = (float("nan"), float("inf"), -float("inf"), 3.4e38, -3.4e38, 1e-45, -0.0)
_HEAD = 16  # bytes before the parameter block (fedrot.wire)


def _with_crc(b: bytes | bytearray) -> bytes:
    body = bytes(b[:-4]) if len(b) >= 4 else bytes(b)
    return body + struct.pack("<I", zlib.crc32(body))


def _put(b: bytearray, pos: int, value: int, size: int) -> None:
    b[pos : pos + size] = (value % (1 << (8 * size))).to_bytes(size, "little")


def _plen(blob: bytes) -> int:
    return int.from_bytes(blob[6:8], "little") if len(blob) >= 8 else 0


# Each takes (rng, source, corpus) and returns hostile bytes for source's codec.
_Mutation = Callable[[random.Random, Source, Corpus], bytes]


def _random(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    return rng.randbytes(rng.randrange(200))


def _random_body(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    """A well-formed envelope (this codec's header and parameters) around noise."""
    head = bytearray(src.blob[: _HEAD + _plen(src.blob)])
    _put(head, 8, rng.choice([src.d, rng.randrange(1, 1 << 20), *_HUGE]), 8)
    return _with_crc(bytes(head) + rng.randbytes(rng.randrange(300)) + bytes(4))


def _truncate(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    cut = src.blob[: rng.randrange(len(src.blob))]
    return _with_crc(cut) if rng.random() < 0.5 and len(cut) >= 4 else cut


def _extend(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    longer = src.blob + rng.randbytes(rng.randrange(1, 64))
    return _with_crc(longer) if rng.random() < 0.5 else longer


def _bitflip(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    b = bytearray(src.blob)
    fix = rng.random() < 0.5
    for _ in range(rng.randrange(1, 5)):
        b[rng.randrange(len(b) - 4 if fix else len(b))] ^= 1 << rng.randrange(8)
    return _with_crc(b) if fix else bytes(b)


def _forge_d(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    b = bytearray(src.blob)
    near = [src.d - 1, src.d + 1, src.d + 7, 2 * src.d, src.d // 2, 1 << 16]
    _put(b, 8, rng.choice([*near, *_HUGE]), 8)
    return _with_crc(b)


def _forge_header(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    b = bytearray(src.blob)
    pos, size = rng.choice([(2, 1), (3, 1), (4, 1), (5, 1), (6, 2)])
    _put(b, pos, rng.choice([*_HUGE, rng.randrange(256), int(b[pos]) + 1]), size)
    return _with_crc(b)


def _forge_params(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    plen = _plen(src.blob)
    if plen == 0:
        return _forge_header(rng, src, corpus)
    b = bytearray(src.blob)
    pos = _HEAD + rng.randrange(plen)
    if rng.random() < 0.5:
        b[pos] = rng.randrange(256)
    else:
        b[pos : pos + 4] = struct.pack("<f", rng.choice(_FLOATS))  # may spill over
    return _with_crc(b[: len(src.blob)])


def _forge_word(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    """A count, index or scale in the body replaced by a hostile value."""
    b = bytearray(src.blob)
    start = _HEAD + _plen(src.blob)
    room = len(b) - 4 - start
    if room < 1:
        return _forge_d(rng, src, corpus)
    pos = start + rng.randrange(min(room, 96))
    if rng.random() < 0.3:
        word = struct.pack("<f", rng.choice(_FLOATS))
    else:
        size = rng.choice([1, 2, 4, 8])
        value = rng.choice([*_HUGE, src.d, src.d + 1, src.d // 2, 2**39])
        word = (value % (1 << (8 * size))).to_bytes(size, "little")
    word = word[: len(b) - 4 - pos]
    b[pos : pos + len(word)] = word
    return _with_crc(b)


def _forge_d_and_count(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    """A consistent lie: a huge d and a 64-bit body count that fits it (the fraction
    of d a sub-bit, top-k or rand-k payload would declare)."""
    b = bytearray(src.blob)
    d = rng.choice([2**20, 2**32, 2**40, 2**47 - 1])
    _put(b, 8, d, 8)
    start = _HEAD + _plen(src.blob)
    words = (len(b) - 4 - start) // 8
    if words >= 1:
        pos = start + (0 if rng.random() < 0.5 else 8 * rng.randrange(min(words, 4)))
        fraction = rng.choice([1.0, 0.75, 0.5, 0.25, 0.01, 1e-6])
        _put(b, pos, round(d * fraction), 8)
    return _with_crc(b)


def _graft(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    """This codec's header and parameters on another payload's body."""
    other = corpus.any_source(rng)
    head = src.blob[: _HEAD + _plen(src.blob)]
    body = other.blob[_HEAD + _plen(other.blob) :]
    b = bytearray(head + body)
    if rng.random() < 0.5:
        _put(b, 8, other.d, 8)
    return _with_crc(b)


def _foreign(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    """Another setting's valid payload, as is or relabelled with this codec's id."""
    other = corpus.any_source(rng).blob
    if rng.random() < 0.5:
        return other
    b = bytearray(other)
    b[3] = src.blob[3]
    return _with_crc(b)


def _valid(rng: random.Random, src: Source, corpus: Corpus) -> bytes:
    return src.blob


#: name -> (mutation, weight). Forgeries that pass the CRC reach the deepest code,
#: so they are drawn more often than noise the envelope check rejects at once.
MUTATIONS: dict[str, tuple[_Mutation, int]] = {
    "random": (_random, 1),
    "random-body": (_random_body, 2),
    "truncate": (_truncate, 1),
    "extend": (_extend, 1),
    "bitflip": (_bitflip, 2),
    "forge-d": (_forge_d, 2),
    "forge-header": (_forge_header, 1),
    "forge-params": (_forge_params, 1),
    "forge-word": (_forge_word, 2),
    "forge-d+count": (_forge_d_and_count, 3),
    "graft": (_graft, 2),
    "foreign": (_foreign, 1),
    "valid": (_valid, 1),
}
