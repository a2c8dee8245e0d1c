"""Fast Walsh-Hadamard transform (orthonormal, natural / Sylvester order).

The transform computes ``H x / sqrt(D)`` over the last dimension of a tensor, where
``H[i, j] = (-1) ** popcount(i & j)`` is the D x D Sylvester-Hadamard matrix and D is a
power of two. The normalized matrix is orthonormal, symmetric and its own inverse, so
``fwht(fwht(x)) == x`` up to rounding.

Reference: Fino & Algazi, "Unified Matrix Treatment of the Fast Walsh-Hadamard
Transform", IEEE Trans. Computers, 1976; used as the rotation of DRIVE
(https://arxiv.org/abs/2105.08339) and EDEN (https://arxiv.org/abs/2108.08842).
"""

from __future__ import annotations

import math

import torch

from . import _kernels

__all__ = ["fwht", "fwht_", "fwht_reference", "hadamard_matrix", "is_power_of_two"]


def is_power_of_two(n: int) -> bool:
    """Return True when ``n`` is a positive power of two (1, 2, 4, ...)."""
    return n >= 1 and (n & (n - 1)) == 0


def _check(x: torch.Tensor) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor. Found {type(x).__name__}.")
    if x.dim() == 0:
        raise ValueError("`x` must have at least one dimension. Found a 0-d tensor.")
    if not x.is_floating_point():
        raise TypeError(f"`x` must be a floating-point tensor. Found dtype {x.dtype}.")
    size = x.shape[-1]
    if not is_power_of_two(size):
        raise ValueError(
            f"The last dimension of `x` must be a power of two. Found {size}; "
            "zero-pad it to the next power of two first."
        )
    return size


def _butterflies(src: torch.Tensor, dst: torch.Tensor, size: int) -> torch.Tensor:
    """Run the log2(size) unnormalized butterfly stages, ping-ponging two buffers.

    Both buffers are contiguous with shape (rows, size); the result ends in the
    returned buffer (one of the two). No allocation happens per stage.
    """
    rows = src.shape[0]
    h = 1
    while h < size:
        s = src.view(rows, size // (2 * h), 2, h)
        t = dst.view(rows, size // (2 * h), 2, h)
        torch.add(s[:, :, 0], s[:, :, 1], out=t[:, :, 0])
        torch.sub(s[:, :, 0], s[:, :, 1], out=t[:, :, 1])
        src, dst = dst, src
        h *= 2
    return src


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform over the last dimension.

    Steps:
      1. check that the last dimension D is a power of two;
      2. run log2(D) butterfly stages ``(a, b) -> (a + b, a - b)`` with strides
         1, 2, 4, ..., D/2 (natural order);
      3. scale by ``1 / sqrt(D)``.

    The input is not modified. Batched over all leading dimensions; works on any
    device and floating dtype.

    Parameters
    ----------
    x : torch.Tensor
        Floating tensor whose last dimension is a power of two.

    Returns
    -------
    torch.Tensor
        ``x @ H / sqrt(D)`` with the same shape, dtype and device as ``x``.

    Raises
    ------
    ValueError
        If the last dimension is not a power of two.
    TypeError
        If ``x`` is not a floating-point tensor.

    On the CPU (float32/float64) this runs the compiled cache-blocked kernel of
    :mod:`fedrot._kernels` when it is available; it performs the same butterflies in
    the same order per element, so the result is bit-identical to
    :func:`fwht_reference`.

    Equivalent to ``fwht_reference(x)``, bit for bit.

    Examples
    --------
    >>> fwht(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
    [5.0, -1.0, -2.0, 0.0]
    """
    size = _check(x)
    shape = x.shape
    src = x.reshape(-1, size).clone()
    if size == 1:
        return src.reshape(shape)
    if _kernels.rht_(src, scale=1.0 / math.sqrt(size)):
        return src.reshape(shape)
    dst = torch.empty_like(src)
    out = _butterflies(src, dst, size)
    out.mul_(1.0 / math.sqrt(size))
    return out.reshape(shape)


def fwht_(x: torch.Tensor) -> None:
    """In-place variant of :func:`fwht`; ``x`` must be contiguous.

    Uses one scratch buffer the size of ``x``. Returns None.

    Examples
    --------
    >>> v = torch.tensor([1.0, 1.0, 1.0, 1.0]); fwht_(v); v.tolist()
    [2.0, 0.0, 0.0, 0.0]
    """
    size = _check(x)
    if not x.is_contiguous():
        raise ValueError("`x` must be contiguous for the in-place transform `fwht_`.")
    if size == 1:
        return
    src = x.view(-1, size)
    if _kernels.rht_(src, scale=1.0 / math.sqrt(size)):
        return
    out = _butterflies(src, torch.empty_like(src), size)
    if out.data_ptr() != src.data_ptr():
        src.copy_(out)
    src.mul_(1.0 / math.sqrt(size))


def fwht_reference(x: torch.Tensor) -> torch.Tensor:
    """The plain-torch FWHT: the reference that defines every fast path's result.

    Steps: clone ``x`` as (rows, D); for h = 1, 2, ..., D/2 compute
    ``(a, b) -> (a + b, a - b)`` for every pair ``(i, i + h)`` with ``i & h == 0``
    (one ``torch.add`` and one ``torch.sub`` per stage, ping-ponging two buffers);
    multiply by ``1 / sqrt(D)``. Runs on any device and dtype. :func:`fwht` gives
    bit-identical results on every path.

    Equivalent to ``x @ torch.tensor(scipy.linalg.hadamard(D)) / sqrt(D)``.

    Examples
    --------
    >>> fwht_reference(torch.ones(2, 4)).tolist()  # rows transform separately
    [[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    """
    size = _check(x)
    src = x.reshape(-1, size).clone()
    if size > 1:
        out = _butterflies(src, torch.empty_like(src), size)
        out.mul_(1.0 / math.sqrt(size))
        src = out
    return src.reshape(x.shape)


def hadamard_matrix(size: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense normalized Sylvester-Hadamard matrix ``H / sqrt(size)`` (an oracle).

    Built entry by entry from ``H[i, j] = (-1) ** popcount(i & j)``; O(size^2)
    memory, meant for tests and documentation only.

    Examples
    --------
    >>> (hadamard_matrix(2) * 2**0.5).round().tolist()
    [[1.0, 1.0], [1.0, -1.0]]
    """
    if not is_power_of_two(size):
        raise ValueError(f"`size` must be a power of two. Found {size}.")
    idx = torch.arange(size)
    both = idx[:, None] & idx[None, :]
    parity = torch.zeros_like(both)
    while bool(both.any()):
        parity ^= both & 1
        both = both >> 1
    return (1 - 2 * parity).to(dtype) / math.sqrt(size)
