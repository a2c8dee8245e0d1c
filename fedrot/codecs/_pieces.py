"""Per-piece arithmetic of the rotated codecs: norms, normalization, scales.

A rotated vector is cut into power-of-two pieces (:mod:`fedrot.chunking`); each piece
is normalized and scaled on its own. The functions here work on the (rows, size)
views of :func:`fedrot.rotation.piece_views`, one row per piece.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import _kernels, bitpack
from ..chunking import ChunkPlan
from ..reductions import row_sums
from ..rotation import piece_views
from ._rotation import Rotated, Rotation
from ._scaling import decode_exponent, rescaled, restore

__all__ = [
    "row_norms2",
    "row_factors",
    "normalize_rows",
    "unbiasing_scale",
    "scale_pieces_",
    "dequantize_pieces_",
    "scaled_inverse",
    "dequantize",
    "Dequantizable",
    "streamed_sum",
]


def row_norms2(view: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Squared L2 norm of each row of a (rows, size) piece view.

    ``scratch`` (same shape) receives the squares instead of a new tensor; the
    reduction, and so the result, is the same (and independent of the thread
    count, see :func:`row_sums`).
    """
    if scratch is None:
        return row_sums(view.square())
    return row_sums(torch.square(view, out=scratch))


def row_factors(view: torch.Tensor, norm2: torch.Tensor) -> torch.Tensor:
    """Per-row ``sqrt(size) / ||y||`` (0 for rows of zeros), as used by
    :func:`normalize_rows`."""
    inv = torch.where(norm2 > 0, norm2.rsqrt(), torch.zeros_like(norm2))
    return inv * math.sqrt(view.shape[1])


def normalize_rows(view: torch.Tensor, norm2: torch.Tensor) -> torch.Tensor:
    """``z = sqrt(size) * y / ||y||`` per row (rows of zeros stay zero)."""
    return view * row_factors(view, norm2)[:, None]


def unbiasing_scale(norm2: torch.Tensor, dot: torch.Tensor) -> torch.Tensor:
    """EDEN's per-piece scale ``S = ||y||^2 / <c, y>`` (0 when either is not > 0).

    With this scale ``S * c`` is an unbiased estimate of ``y`` under a uniform
    random rotation (EDEN, https://arxiv.org/abs/2108.08842, and VQ on top of it).
    Scalar quantizers that keep the sign of every coordinate have ``<c, y> > 0``
    whenever ``y != 0``; a block quantizer can have ``<c, y> <= 0`` on very short
    pieces, which then get scale 0.
    """
    ok = (norm2 > 0) & (dot > 0)
    return torch.where(ok, norm2 / torch.where(ok, dot, 1.0), 0.0)


def scale_pieces_(c: torch.Tensor, plan: ChunkPlan, scales: torch.Tensor) -> None:
    """Multiply each piece of ``c`` by its own scale (one per piece), in place."""
    start = 0
    for view in piece_views(c, plan):
        view.mul_(scales[start : start + view.shape[0], None])
        start += view.shape[0]


def dequantize_pieces_(
    out: torch.Tensor,
    plan: ChunkPlan,
    raw: torch.Tensor,
    width: int,
    table: torch.Tensor,
    scales: torch.Tensor,
) -> bool:
    """``out = table[unpack(raw)]`` times each piece's scale, fused (False: the
    compiled kernels are unavailable; ``out`` may then be partly written).

    Bit-identical to the lookup followed by :func:`scale_pieces_`.
    """
    start = 0
    for g, view in zip(plan.groups, piece_views(out, plan), strict=True):
        if not _kernels.dequantize_(
            view,
            raw,
            start=g.offset,
            width=width,
            table=table,
            scales=scales[start : start + g.rows],
        ):
            return False
        start += g.rows
    return True


def scaled_inverse(
    rotation: Rotation,
    rotated: Rotated,
    scales: torch.Tensor,
    exp: int,
    *,
    seed: int,
    client: int,
) -> torch.Tensor:
    """The common decoder tail: scale each piece of ``rotated.y`` (a private buffer)
    by its scale, invert the rotation in place and undo the rescaling by ``2**exp``
    of :func:`fedrot.codecs._scaling.rescaled`."""
    scale_pieces_(rotated.y, rotated.plan, scales)
    return restore(rotation.inverse_(rotated, seed=seed, client=client), exp)


def dequantize(
    rotation: Rotation,
    plan: ChunkPlan,
    layers: int,
    raw: torch.Tensor,
    *,
    width: int,
    table: torch.Tensor,
    scales: torch.Tensor,
    seed: int,
    client: int,
) -> torch.Tensor:
    """``R^{-1}(S_piece * table[codes])[:d]`` for packed ``width``-bit codes: the
    decoder of DRIVE and integer-bit EDEN (fused kernel when available)."""
    scales, exp = rescaled(scales)
    c = torch.empty(plan.padded, dtype=torch.float32, device=table.device)
    if dequantize_pieces_(c, plan, raw, width, table, scales):
        rotated = Rotated(plan, layers, c)
        return restore(rotation.inverse_(rotated, seed=seed, client=client), exp)
    c = table[bitpack.unpack(raw, plan.padded, width)]
    rotated = Rotated(plan, layers, c)
    return scaled_inverse(rotation, rotated, scales, exp, seed=seed, client=client)


@dataclass(frozen=True)
class Dequantizable:
    """A parsed payload that :func:`dequantize` decodes: ``R^{-1}(S_piece *
    table[codes])[:d]`` with ``width``-bit codes packed in ``raw`` (uint8)."""

    plan: ChunkPlan
    layers: int
    raw: torch.Tensor
    width: int
    table: torch.Tensor
    scales: torch.Tensor


def streamed_sum(
    rotation: Rotation,
    parts: Sequence[Dequantizable | None],
    *,
    seed: int,
    clients: Sequence[int],
    weights: Sequence[float],
) -> torch.Tensor | None:
    """``sum_c w_c * decode_c`` streamed client by client into one float32 sum.

    Each client's pieces are decoded in cache and added at once (compiled kernel),
    so no dense per-client vector is made; the values are those of decoding every
    payload with :func:`dequantize` and summing with ``mul_(w)`` then
    ``add_(x, alpha=w)`` in the same client order. None (nothing done) when the
    kernels cannot run, a part is not dequantizable, has no rotation layer, or
    needs rescaling (scales beyond float32's comfortable range): the caller then
    decodes one by one.
    """
    if not parts or not _kernels.available():
        return None
    usable: list[Dequantizable] = []
    for p in parts:
        if (
            p is None
            or p.layers < 1
            or p.width > 8
            or p.raw.device.type != "cpu"
            or decode_exponent(p.scales) != 0
        ):
            return None
        usable.append(p)
    acc = torch.empty(usable[0].plan.d, dtype=torch.float32)
    for i, (p, client, w) in enumerate(zip(usable, clients, weights, strict=True)):
        keys = rotation.keys(seed, client, p.layers)
        start = 0
        for g in p.plan.groups:
            done = _kernels.dequantize_accumulate_(
                acc,
                p.raw,
                offset=g.offset,
                rows=g.rows,
                size=g.size,
                width=p.width,
                table=p.table,
                scales=p.scales[start : start + g.rows],
                keys=keys,
                scale=1.0 / math.sqrt(g.size),
                weight=w,
                first=i == 0,
            )
            if not done:
                if i == 0 and start == 0:
                    return None
                raise RuntimeError(  # pragma: no cover - same checks for every call
                    f"streamed aggregation stopped midway: {_kernels.status()}"
                )
            start += g.rows
    return acc
