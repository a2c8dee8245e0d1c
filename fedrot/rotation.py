"""Seeded randomized Hadamard transform (RHT) stacks over a chunked vector.

One RHT layer is ``RHT_s(v) = H (s * v) / sqrt(D)`` with ``s`` a ±1 vector and ``H``
the Sylvester-Hadamard matrix; its inverse is ``s * (H y) / sqrt(D)``. A k-stack
applies k layers with independent sign vectors ``s_1 .. s_k`` (s_1 first) and is
inverted in reverse order. Each power-of-two piece of the chunk plan is transformed on
its own; the signs of layer ``l`` for the whole padded vector are the first
``padded`` bits of the stream of key ``derive_seed(seed, client, Stream.ROTATION, l)``
(or ``derive_seed(seed, Stream.SHARED_ROTATION, l)`` for a rotation shared by all
clients of a round).

Why stacks: with one RHT each rotated coordinate is a Rademacher sum weighted by the
input itself, which is far from Gaussian for sparse inputs; two RHTs make every
coordinate's marginal O(d^-1/2)-close to N(0, 1) for any input, three also decorrelate
blocks (Ben-Basat et al., https://arxiv.org/abs/2605.06014).
"""

from __future__ import annotations

import math

import torch

from . import _kernels
from .chunking import ChunkPlan
from .hadamard import fwht_
from .reductions import row_sums
from .seeds import Stream, derive_seed, signs_torch

__all__ = [
    "AUTO_TAU",
    "rotation_keys",
    "rotate",
    "unrotate",
    "rotate_",
    "unrotate_",
    "piece_views",
    "kurtosis_ratio",
    "choose_rotations",
]

#: Threshold on kappa = D * sum(x^4) / sum(x^2)^2 for the "auto" rule. kappa is 1 for a
#: flat ±c vector, about 3 for Gaussian data and D/k for a k-sparse flat vector. After
#: one RHT the Berry-Esseen distance of a coordinate to N(0,1) is at most about
#: 0.56 * sqrt(kappa / D); with kappa <= 64 that is within a constant (~4.5) of the
#: O(D^-1/2) guarantee of two RHTs, so the second transform buys nothing measurable.
#: Gaussian (3), lognormal(0,1) (~35) and dense ±1 (1) inputs pass with one RHT; every
#: sparse input with fewer than D/64 active coordinates gets two.
AUTO_TAU = 64.0


def rotation_keys(seed: int, client: int | None, k: int) -> list[int]:
    """Keys of the k sign vectors: per client, or shared when ``client`` is None."""
    if client is None:
        return [derive_seed(seed, Stream.SHARED_ROTATION, layer) for layer in range(k)]
    return [derive_seed(seed, client, Stream.ROTATION, layer) for layer in range(k)]


def piece_views(buf: torch.Tensor, plan: ChunkPlan) -> list[torch.Tensor]:
    """2-D (rows, size) views of a padded buffer, one per group of equal pieces."""
    return [
        buf[g.offset : g.offset + g.rows * g.size].view(g.rows, g.size)
        for g in plan.groups
    ]


def _transform_pieces_(buf: torch.Tensor, plan: ChunkPlan) -> None:
    for view in piece_views(buf, plan):
        fwht_(view)


def _fused_(buf: torch.Tensor, plan: ChunkPlan, keys: list[int], inverse: bool) -> bool:
    """The whole stack with the compiled kernel, piece by piece (False: unavailable).

    Each piece goes through all k layers while it sits in cache; per element the
    operations and their order are those of the torch path, so the result is
    bit-identical to it.
    """
    for g, view in zip(plan.groups, piece_views(buf, plan), strict=True):
        done = _kernels.rht_(
            view,
            offset=g.offset,
            keys=keys,
            inverse=inverse,
            scale=1.0 / math.sqrt(g.size),
        )
        if not done:
            return False
    return True


def rotate(xp: torch.Tensor, plan: ChunkPlan, keys: list[int]) -> torch.Tensor:
    """Apply the RHT stack given by ``keys`` to a padded vector; returns a new tensor.

    Steps, for each key in order: multiply by that key's ±1 signs, then transform every
    piece with the orthonormal FWHT. Inverted in reverse order by :func:`unrotate`.
    On the CPU the compiled kernel runs all layers of a piece while it is in cache,
    bit-identical to this torch path (``fedrot._kernels.enabled(False)`` forces it).

    Examples
    --------
    >>> from fedrot.chunking import plan_chunks
    >>> plan = plan_chunks(8, 16); x = torch.arange(8.0)
    >>> y = rotate(x, plan, rotation_keys(7, 3, 2))
    >>> bool(torch.allclose(unrotate(y, plan, rotation_keys(7, 3, 2)), x, atol=1e-6))
    True
    """
    buf = _checked(xp, plan).clone()
    _stack_(buf, plan, keys, inverse=False)
    return buf


def rotate_(buf: torch.Tensor, plan: ChunkPlan, keys: list[int]) -> None:
    """In-place :func:`rotate` of a contiguous padded vector; returns None."""
    _stack_(_checked(buf, plan), plan, keys, inverse=False)


def unrotate(y: torch.Tensor, plan: ChunkPlan, keys: list[int]) -> torch.Tensor:
    """Invert :func:`rotate`: keys in reverse; FWHT every piece, then apply signs."""
    buf = _checked(y, plan).clone()
    _stack_(buf, plan, keys, inverse=True)
    return buf


def unrotate_(buf: torch.Tensor, plan: ChunkPlan, keys: list[int]) -> None:
    """In-place :func:`unrotate` of a contiguous padded vector; returns None."""
    _stack_(_checked(buf, plan), plan, keys, inverse=True)


def _stack_(
    buf: torch.Tensor, plan: ChunkPlan, keys: list[int], *, inverse: bool
) -> None:
    """The RHT stack in place: per key signs then FWHT, or (inverse) keys reversed,
    FWHT then signs; the compiled kernel when available."""
    if keys and _fused_(buf, plan, keys, inverse=inverse):
        return
    for key in reversed(keys) if inverse else keys:
        if inverse:
            _transform_pieces_(buf, plan)
        buf.mul_(signs_torch(key, plan.padded, device=buf.device, dtype=buf.dtype))
        if not inverse:
            _transform_pieces_(buf, plan)


def _checked(v: torch.Tensor, plan: ChunkPlan) -> torch.Tensor:
    if v.dim() != 1 or v.shape[0] != plan.padded:
        raise ValueError(
            f"Expected a 1-D vector of padded length {plan.padded}. "
            f"Found shape {tuple(v.shape)}."
        )
    return v


def kurtosis_ratio(xp: torch.Tensor, plan: ChunkPlan) -> list[torch.Tensor]:
    """Per-piece ``kappa = size * sum(x^4) / sum(x^2)^2`` (NaN for all-zero pieces).

    Computed on ``x / max|x|`` so that float32 neither overflows nor underflows.
    """
    lo, hi = torch.aminmax(xp)
    amax = torch.maximum(lo.abs(), hi.abs())  # == xp.abs().max(), one pass, no copy
    # Two scratch buffers: the scaled vector (later overwritten by the 4th powers)
    # and the squares; the values reduced are exactly x/amax, its squares and theirs.
    scaled = torch.div(xp, amax) if float(amax) > 0 else xp.clone()
    squares = torch.empty_like(scaled)
    out = []
    for view, sq in zip(
        piece_views(scaled, plan), piece_views(squares, plan), strict=True
    ):
        torch.square(view, out=sq)
        m2 = row_sums(sq)
        m4 = row_sums(torch.square(sq, out=view))
        out.append(view.shape[1] * m4 / m2.square())
    return out


def choose_rotations(
    xp: torch.Tensor,
    plan: ChunkPlan,
    *,
    low: int = 1,
    high: int = 2,
    tau: float = AUTO_TAU,
) -> int:
    """The "auto" rule: ``low`` RHTs when every piece has kappa <= tau, else ``high``.

    One O(d) pass over the input's second and fourth moments. Pieces of at most
    ``tau`` coordinates cannot exceed the threshold (kappa <= size) and all-zero
    pieces are ignored. Scalar quantizers use (low, high) = (1, 2); block vector
    quantizers use (2, 3), because no moment check can certify one RHT for them.

    Examples
    --------
    >>> from fedrot.chunking import plan_chunks
    >>> plan = plan_chunks(4096, 16)
    >>> choose_rotations(torch.randn(4096), plan)
    1
    >>> choose_rotations(torch.eye(4096)[0], plan)
    2
    """
    for kappa in kurtosis_ratio(xp, plan):
        if bool((kappa > tau).any()):  # NaN compares False: zero pieces pass
            return high
    return low
