"""Explicit integer seeds and the counter-based PRF behind every random choice.

Every random quantity in fedrot (rotation signs, stochastic rounding, masks, QUIC-FL's
shared randomness) is a pure function of 64-bit integers, computed by the same
specified algorithm in numpy and in torch (CPU or CUDA). Nothing depends on a
library's generator stream, so a client using torch on a GPU and a server using
numpy on a CPU regenerate bit-identical values.

Specification (version 1)
-------------------------
* ``mix64(z)`` is the SplitMix64 finalizer (Steele, Lea & Flood, OOPSLA 2014)::

      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
      z = (z ^ (z >> 27)) * 0x94D049BB133111EB
      z =  z ^ (z >> 31)                      # all arithmetic mod 2**64

* ``derive_seed(*parts)`` folds 64-bit integers into one key::

      h = mix64(DOMAIN)
      for p in parts: h = mix64((h ^ mix64(p + GAMMA)) + GAMMA)

* The stream of a key is ``word(key, i) = mix64(key + (i + 1) * GAMMA)``, i >= 0: the
  i-th output of SplitMix64 started at ``key``. It is counter-based: any word can be
  computed without the ones before it.
* Bit ``j`` of a key's bit stream is bit ``j % 64`` (least significant first) of
  ``word(key, j // 64)``.
* A uniform float in [0, 1) for coordinate ``j`` is ``(word(key, j) >> 40) / 2**24``
  (exact in float32).

with ``GAMMA = 0x9E3779B97F4A7C15`` and ``DOMAIN = 0x66656472_6F745F31`` ("fedrot_1").
"""

from __future__ import annotations

import sys
from enum import IntEnum

import numpy as np
import torch

__all__ = [
    "Stream",
    "DOWNLINK_CLIENT",
    "derive_seed",
    "downlink_seed",
    "round_seed",
    "words_numpy",
    "words_torch",
    "sign_bits_numpy",
    "signs_torch",
    "uniforms_torch",
]

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
DOMAIN = 0x666564726F745F31
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

if sys.byteorder != "little":  # pragma: no cover - every supported platform is LE
    raise ImportError("fedrot's sign streams are specified for little-endian hosts.")


class Stream(IntEnum):
    """Purposes of random streams; a stream id is one part of every derived key."""

    ROTATION = 1  # per-client RHT sign vectors (DRIVE, EDEN, SQ)
    SHARED_ROTATION = 2  # one RHT stack for all clients of a round (QUIC-FL)
    PRIVATE = 3  # client-only randomness: stochastic rounding
    MASK = 4  # randomness shared by client and server: masks, fractional bits
    SHARED_H = 5  # QUIC-FL's per-client shared randomness h
    ROUND = 6  # per-round seeds derived from a run seed
    DOWNLINK = 7  # seeds of the server's broadcasts, per model version


def _mix64_int(z: int) -> int:
    z &= MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def _check_u64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer. Found {type(value).__name__}.")
    value = int(value)
    if not 0 <= value <= MASK64:
        raise ValueError(
            f"`{name}` must be in 0..2**64-1. Found {value}. "
            "Map negative or wider ids into that range first."
        )
    return value


def derive_seed(*parts: int) -> int:
    """Fold 64-bit integers into one 64-bit key; the ONE seed-derivation function.

    Client and server both call this (directly or through the codecs), so they agree
    on every key without sending any seed.

    Parameters
    ----------
    *parts : int
        Integers in 0..2**64-1 (seed, client id, stream, layer, ...). Order matters.

    Returns
    -------
    int
        A 64-bit key in 0..2**64-1.

    Raises
    ------
    ValueError
        If a part is outside 0..2**64-1.

    Examples
    --------
    >>> derive_seed(7, 3) == derive_seed(7, 3) != derive_seed(3, 7)
    True
    """
    h = _mix64_int(DOMAIN)
    for i, p in enumerate(parts):
        p = _check_u64(f"parts[{i}]", p)
        h = _mix64_int(((h ^ _mix64_int(p + GAMMA)) + GAMMA) & MASK64)
    return h


def round_seed(run_seed: int, server_round: int) -> int:
    """Per-round seed shared by all clients, from the run seed and the round number.

    Examples
    --------
    >>> round_seed(0, 1) != round_seed(0, 2)
    True
    """
    return derive_seed(
        _check_u64("run_seed", run_seed),
        Stream.ROUND,
        _check_u64("round", server_round),
    )


def downlink_seed(run_seed: int, version: int) -> int:
    """Seed of the broadcast of model version ``version`` (one per run and version).

    Every node decodes the broadcast with this seed and the client id
    :data:`DOWNLINK_CLIENT`, so all nodes share its rotation and its bytes.

    Examples
    --------
    >>> downlink_seed(0, 1) != downlink_seed(0, 2) != round_seed(0, 1)
    True
    """
    return derive_seed(
        _check_u64("run_seed", run_seed),
        Stream.DOWNLINK,
        _check_u64("version", version),
    )


#: The client id every broadcast is encoded and decoded with (no node sends it).
DOWNLINK_CLIENT = MASK64


def words_numpy(key: int, n: int, *, start: int = 0) -> np.ndarray:
    """Words ``start .. start+n-1`` of the key's SplitMix64 stream, as uint64."""
    key = _check_u64("key", key)
    i = np.arange(start + 1, start + n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + i * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def _as_i64(value: int) -> int:
    """Two's-complement view of a uint64 value, for torch.int64 arithmetic."""
    value &= MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 values holding uint64 bit patterns."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def words_torch(
    key: int, n: int, *, device: torch.device | str = "cpu", start: int = 0
) -> torch.Tensor:
    """Same words as :func:`words_numpy`, as an int64 tensor holding the bit patterns.

    int64 multiplication wraps modulo 2**64 on CPU and CUDA, so the bit patterns equal
    the uint64 specification exactly (tested against :func:`words_numpy`).
    """
    key = _check_u64("key", key)
    z = torch.arange(start + 1, start + n + 1, dtype=torch.int64, device=device)
    z.mul_(_as_i64(GAMMA)).add_(_as_i64(key))
    z = (z ^ _srl(z, 30)).mul_(_as_i64(_M1))
    z = (z ^ _srl(z, 27)).mul_(_as_i64(_M2))
    return z ^ _srl(z, 31)


def sign_bits_numpy(key: int, n: int) -> np.ndarray:
    """First ``n`` bits of the key's bit stream as uint8 0/1 (1 means a minus sign)."""
    words = words_numpy(key, (n + 63) // 64)
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n]


_SIGN_LUT: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _sign_lut(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    lut = _SIGN_LUT.get((device, dtype))
    if lut is None:
        byte = torch.arange(256, dtype=torch.int64)
        bits = (byte[:, None] >> torch.arange(8)) & 1
        lut = (1 - 2 * bits).to(dtype=dtype, device=device)
        _SIGN_LUT[(device, dtype)] = lut
    return lut


def signs_torch(
    key: int,
    n: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """±1 vector of length ``n`` from the key's bit stream (bit 1 gives -1)."""
    dev = torch.device(device)
    words = words_torch(key, (n + 63) // 64, device=dev)
    as_bytes = words.view(torch.uint8).long()
    return _sign_lut(dev, dtype)[as_bytes].reshape(-1)[:n]


def uniforms_torch(
    key: int, n: int, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Uniform float32 values in [0, 1) on a 2**-24 grid, one stream word each."""
    words = words_torch(key, n, device=device)
    return _srl(words, 40).to(torch.float32).mul_(2.0**-24)
