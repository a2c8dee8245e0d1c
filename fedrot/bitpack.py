"""Bit packing of integer codes into real bytes (torch, any device).

Layout: code ``i`` of width ``w`` occupies bits ``i*w .. i*w + w - 1`` of the stream,
least significant bit first, and bit ``j`` of the stream is bit ``j % 8`` of byte
``j // 8``. Unused bits of the last byte are zero. ``n`` codes take
``ceil(n * w / 8)`` bytes. Trits (TernGrad) are packed five per byte in base 3.

On the CPU, :func:`pack` and :func:`unpack` use the compiled kernels of
:mod:`fedrot._kernels` when available (same bytes; the torch code below is the
reference and the path on other devices).
"""

from __future__ import annotations

import torch

from . import _kernels

__all__ = [
    "packed_size",
    "index_width",
    "pack",
    "unpack",
    "trit_size",
    "pack_trits",
    "unpack_trits",
]


def packed_size(n: int, width: int) -> int:
    """Bytes taken by ``n`` codes of ``width`` bits."""
    return (n * width + 7) // 8


def index_width(n: int) -> int:
    """Bits per packed index in ``0..n-1``: ``max(1, ceil(log2 n))``.

    Examples
    --------
    >>> index_width(1), index_width(2), index_width(1000), index_width(1024)
    (1, 1, 10, 10)
    """
    return max(1, (n - 1).bit_length())


def _check_width(width: int) -> None:
    if not 1 <= width <= 32:
        raise ValueError(f"`width` must be in 1..32. Found {width}.")


def pack(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integer codes (< 2**width) into a uint8 tensor.

    Examples
    --------
    >>> pack(torch.tensor([1, 0, 3, 2]), 2).tolist()
    [177]
    """
    _check_width(width)
    fast = _kernels.pack(codes, width)
    if fast is not None:
        return fast
    n = codes.numel()
    codes = codes.reshape(-1)
    if 8 % width == 0:
        per = 8 // width
        pad = (-n) % per
        c = codes.to(torch.int32)
        if pad:
            c = torch.cat([c, c.new_zeros(pad)])
        c = c.view(-1, per)
        shifts = torch.arange(0, 8, width, device=c.device, dtype=torch.int32)
        return (c << shifts).sum(dim=1).to(torch.uint8)
    bits = (
        codes.to(torch.int64)[:, None] >> torch.arange(width, device=codes.device)
    ) & 1
    bits = bits.reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    weights = torch.arange(8, device=codes.device)
    return (bits.view(-1, 8) << weights).sum(dim=1).to(torch.uint8)


def unpack(data: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``n`` codes (int64) from a uint8 tensor.

    The caller guarantees ``data.numel() >= packed_size(n, width)``.
    """
    _check_width(width)
    fast = _kernels.unpack(data, n, width)
    if fast is not None:
        return fast
    data = data.reshape(-1)
    if 8 % width == 0:
        shifts = torch.arange(0, 8, width, device=data.device, dtype=torch.int32)
        codes = (data.to(torch.int32)[:, None] >> shifts) & ((1 << width) - 1)
        return codes.reshape(-1)[:n].to(torch.int64)
    nbits = n * width
    nbytes = packed_size(n, width)
    bits = (
        data[:nbytes].to(torch.int64)[:, None] >> torch.arange(8, device=data.device)
    ) & 1
    bits = bits.reshape(-1)[:nbits].view(n, width)
    return (bits << torch.arange(width, device=data.device)).sum(dim=1)


def trit_size(n: int) -> int:
    """Bytes taken by ``n`` trits packed five per byte."""
    return (n + 4) // 5


_POW3 = (1, 3, 9, 27, 81)


def pack_trits(trits: torch.Tensor) -> torch.Tensor:
    """Pack values in {0, 1, 2} five per byte, ``t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4``.

    Examples
    --------
    >>> pack_trits(torch.tensor([2, 1, 0, 0, 1, 2])).tolist()
    [86, 2]
    """
    t = trits.reshape(-1).to(torch.int32)
    pad = (-t.numel()) % 5
    if pad:
        t = torch.cat([t, t.new_zeros(pad)])
    w = torch.tensor(_POW3, dtype=torch.int32, device=t.device)
    return (t.view(-1, 5) * w).sum(dim=1).to(torch.uint8)


def unpack_trits(data: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_trits`; callers reject bytes above 242."""
    w = torch.tensor(_POW3, dtype=torch.int32, device=data.device)
    t = (data.reshape(-1).to(torch.int32)[:, None] // w) % 3
    return t.reshape(-1)[:n].to(torch.int64)
