"""Shared steps of the rotation-based codecs: settings, forward and inverse stacks."""

from __future__ import annotations

import math
import struct
from typing import Any

import torch

from .. import _kernels
from ..chunking import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_LOG2,
    MIN_CHUNK_LOG2,
    ChunkPlan,
    plan_chunks,
)
from ..errors import PayloadError
from ..hadamard import is_power_of_two
from ..rotation import (
    choose_rotations,
    piece_views,
    rotate,
    rotate_,
    rotation_keys,
    unrotate,
    unrotate_,
)

ROTATION_CHOICES = (1, 2, 3, "auto")
_AUTO_CODE = 0


def check_rotations(
    rotations: Any, *, allowed: tuple[Any, ...] = ROTATION_CHOICES
) -> int | str:
    """Validate the ``rotations`` knob (an int number of RHTs, or "auto")."""
    if isinstance(rotations, bool) or rotations not in allowed:
        raise ValueError(
            f"`rotations` must be one of {list(allowed)}. Found {rotations!r}."
        )
    return rotations


def check_chunk_size(chunk_size: Any) -> int:
    """Validate ``chunk_size`` (a power of two in 2**5..2**30); returns its log2."""
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not is_power_of_two(chunk_size)
        or not MIN_CHUNK_LOG2 <= chunk_size.bit_length() - 1 <= MAX_CHUNK_LOG2
    ):
        raise ValueError(
            f"`chunk_size` must be a power of two in 2**{MIN_CHUNK_LOG2}..2**"
            f"{MAX_CHUNK_LOG2}. Found {chunk_size!r} (default {DEFAULT_CHUNK_SIZE})."
        )
    return chunk_size.bit_length() - 1


def rotation_code(rotations: int | str) -> int:
    """Byte that records the configured rotation mode in a parameter block."""
    return _AUTO_CODE if rotations == "auto" else int(rotations)


def rotation_params(rotations: int | str) -> bytes:
    """Parameter-block bytes for the rotation mode."""
    return struct.pack("<B", rotation_code(rotations))


def resolve_k(
    xp: torch.Tensor, plan: ChunkPlan, rotations: int | str, auto: tuple[int, int]
) -> int:
    """Number of RHT layers to apply: fixed, or chosen by the moment check."""
    if rotations == "auto":
        return choose_rotations(xp, plan, low=auto[0], high=auto[1])
    return int(rotations)


def check_k(k: int, rotations: int | str, auto: tuple[int, int]) -> None:
    """Reject a payload whose layer count the configured mode could not produce."""
    ok = k in auto if rotations == "auto" else k == rotations
    if not ok:
        raise PayloadError(
            f"Payload declares {k} RHT layer(s), impossible for "
            f"rotations={rotations!r}."
        )


def pad(v: torch.Tensor, plan: ChunkPlan) -> torch.Tensor:
    """``[v, 0, ..., 0]`` of the plan's padded length (a new tensor)."""
    if plan.padded == plan.d:
        return v
    out = v.new_zeros(plan.padded)
    out[: plan.d] = v
    return out


def forward(
    v: torch.Tensor,
    *,
    chunk_log2: int,
    rotations: int | str,
    seed: int,
    client: int | None,
    auto: tuple[int, int] = (1, 2),
) -> tuple[ChunkPlan, int, torch.Tensor]:
    """Chunk, pad and rotate ``v``; returns (plan, number of layers, rotated vector)."""
    plan = plan_chunks(v.numel(), chunk_log2)
    xp = pad(v, plan)
    k = resolve_k(xp, plan, rotations, auto)
    return plan, k, rotate(xp, plan, rotation_keys(seed, client, k))


def forward_(
    v: torch.Tensor,
    *,
    chunk_log2: int,
    rotations: int | str,
    seed: int,
    client: int | None,
    auto: tuple[int, int] = (1, 2),
) -> tuple[ChunkPlan, int, torch.Tensor]:
    """:func:`forward` that may overwrite ``v`` (a private copy): it rotates in place
    when no padding is needed, which saves one vector-sized allocation."""
    plan = plan_chunks(v.numel(), chunk_log2)
    xp = pad(v, plan)
    k = resolve_k(xp, plan, rotations, auto)
    rotate_(xp, plan, rotation_keys(seed, client, k))
    return plan, k, xp


def inverse(
    y: torch.Tensor, plan: ChunkPlan, k: int, *, seed: int, client: int | None
) -> torch.Tensor:
    """Undo :func:`forward` and drop the padding; returns a length-d vector."""
    return unrotate(y, plan, rotation_keys(seed, client, k))[: plan.d]


def inverse_(
    y: torch.Tensor, plan: ChunkPlan, k: int, *, seed: int, client: int | None
) -> torch.Tensor:
    """:func:`inverse` computed in place in ``y`` (a private buffer); returns the
    length-d prefix view of ``y``."""
    unrotate_(y, plan, rotation_keys(seed, client, k))
    return y[: plan.d]


def row_norms2(view: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Squared L2 norm of each row of a (rows, size) piece view.

    ``scratch`` (same shape) receives the squares instead of a new tensor; the
    reduction, and so the result, is the same.
    """
    if scratch is None:
        return view.square().sum(dim=1)
    return torch.square(view, out=scratch).sum(dim=1)


def row_factors(view: torch.Tensor, norm2: torch.Tensor) -> torch.Tensor:
    """Per-row ``sqrt(size) / ||y||`` (0 for rows of zeros), as used by
    :func:`normalize_rows`."""
    inv = torch.where(norm2 > 0, norm2.rsqrt(), torch.zeros_like(norm2))
    return inv * math.sqrt(view.shape[1])


def normalize_rows(view: torch.Tensor, norm2: torch.Tensor) -> torch.Tensor:
    """``z = sqrt(size) * y / ||y||`` per row (rows of zeros stay zero)."""
    return view * row_factors(view, norm2)[:, None]


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


def scale_pieces_(c: torch.Tensor, plan: ChunkPlan, scales: torch.Tensor) -> None:
    """Multiply each piece of ``c`` by its own scale (one per piece), in place."""
    start = 0
    for view in piece_views(c, plan):
        view.mul_(scales[start : start + view.shape[0], None])
        start += view.shape[0]
