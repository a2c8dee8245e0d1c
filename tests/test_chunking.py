"""The chunk plan: power-of-two pieces, only the last one padded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrot.chunking import MIN_PIECE, plan_chunks
from fedrot.hadamard import is_power_of_two


@given(d=st.integers(1, 10**7), chunk_log2=st.integers(5, 20))
def test_plan_invariants(d: int, chunk_log2: int) -> None:
    plan = plan_chunks(d, chunk_log2)
    sizes = plan.piece_sizes()
    assert all(is_power_of_two(s) and s <= 1 << chunk_log2 for s in sizes)
    assert 0 <= plan.padded - d < MIN_PIECE // 2
    # every piece but the last is full of data: the padding lives in the last piece
    assert sum(sizes[:-1]) < d <= sum(sizes)
    assert plan.num_pieces <= d // (1 << chunk_log2) + chunk_log2 - 3
    offsets = [g.offset for g in plan.groups]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_examples() -> None:
    assert plan_chunks(1, 16).piece_sizes() == [1]
    assert plan_chunks(1000, 16).piece_sizes() == [512, 256, 128, 64, 32, 8]
    assert plan_chunks(1 << 16, 16).piece_sizes() == [1 << 16]
    assert plan_chunks((1 << 16) + 1, 16).piece_sizes() == [1 << 16, 1]
    assert plan_chunks(17, 16).padded == 32


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="d"):
        plan_chunks(0, 16)
    with pytest.raises(ValueError, match="chunk_log2"):
        plan_chunks(10, 4)
