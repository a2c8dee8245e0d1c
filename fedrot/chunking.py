"""Split a flattened update into power-of-two pieces instead of padding the whole model.

Padding a whole model to the next power of two can double its size (d = 2^16 + 1 pads
to 2^17). fedrot instead cuts a vector of length d into

1. ``q = d // C`` full chunks of ``C = chunk_size`` coordinates (default 2^16);
2. the tail ``r = d - q*C`` split by its binary expansion into pieces of 2^j >= 32
   coordinates, largest first;
3. the rest ``r % 32`` (if any) as one last piece, zero-padded to the next power of two.

Only the last piece is padded, by at most 15 zeros, so a codec at b bits/coordinate
spends at most ``b*(d + 15)`` code bits. Every piece is rotated and scaled on its own;
the number of pieces is at most ``q + log2(C) - 4``. Because all padding sits at the
end, the padded layout is simply ``[x, 0, ..., 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CHUNK_SIZE", "MIN_PIECE", "ChunkPlan", "plan_chunks"]

DEFAULT_CHUNK_SIZE = 1 << 16
MIN_PIECE = 32
MIN_CHUNK_LOG2 = 5
MAX_CHUNK_LOG2 = 30


@dataclass(frozen=True)
class Group:
    """``rows`` consecutive pieces of ``size`` coordinates starting at ``offset``."""

    offset: int
    rows: int
    size: int


@dataclass(frozen=True)
class ChunkPlan:
    """How a vector of length ``d`` is cut into power-of-two pieces."""

    d: int
    chunk_log2: int
    groups: tuple[Group, ...]

    @property
    def padded(self) -> int:
        """Total length after padding the last piece (sum of piece sizes)."""
        last = self.groups[-1]
        return last.offset + last.rows * last.size

    @property
    def num_pieces(self) -> int:
        """Number of independently rotated pieces."""
        return sum(g.rows for g in self.groups)

    def piece_sizes(self) -> list[int]:
        """Sizes of all pieces in order."""
        return [g.size for g in self.groups for _ in range(g.rows)]


def plan_chunks(d: int, chunk_log2: int) -> ChunkPlan:
    """Cut length ``d`` into power-of-two pieces (see the module docstring).

    Parameters
    ----------
    d : int
        Vector length, >= 1.
    chunk_log2 : int
        log2 of the full chunk size, in 5..30.

    Returns
    -------
    ChunkPlan
        The groups of equal-size pieces, in layout order.

    Examples
    --------
    >>> [(g.rows, g.size) for g in plan_chunks(70000, 16).groups]
    [(1, 65536), (1, 4096), (1, 256), (1, 64), (1, 32), (1, 16)]
    >>> plan_chunks(70000, 16).padded - 70000
    0
    """
    if d < 1:
        raise ValueError(f"`d` must be >= 1. Found {d}.")
    if not MIN_CHUNK_LOG2 <= chunk_log2 <= MAX_CHUNK_LOG2:
        raise ValueError(
            f"`chunk_log2` must be in {MIN_CHUNK_LOG2}..{MAX_CHUNK_LOG2}. "
            f"Found {chunk_log2}."
        )
    chunk = 1 << chunk_log2
    groups: list[Group] = []
    offset = 0
    full, rest = divmod(d, chunk)
    if full:
        groups.append(Group(0, full, chunk))
        offset = full * chunk
    for j in range(chunk_log2 - 1, MIN_PIECE.bit_length() - 2, -1):
        if rest >> j & 1:
            groups.append(Group(offset, 1, 1 << j))
            offset += 1 << j
    small = rest % MIN_PIECE
    if small:
        groups.append(Group(offset, 1, 1 << (small - 1).bit_length()))
    return ChunkPlan(d=d, chunk_log2=chunk_log2, groups=tuple(groups))
