"""QUIC-FL's per-coordinate operations: shared randomness, sender, receiver, kernels.

The torch functions are the reference (any device); :class:`QuicTables` holds one
table's tensors and runs the compiled CPU kernels of :mod:`fedrot._kernels` when they
are available (same values: see ``tests/test_quic_fl_kernels.py``). The codec itself
(rotation, payload layout) is :mod:`fedrot.codecs.quic_fl`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from .. import _kernels
from ..chunking import ChunkPlan
from ..seeds import Stream, derive_seed, words_torch
from ..tables.quic_fl import QuicFLTable

__all__ = ["shared_h", "private_uniforms", "sender", "receiver", "QuicTables"]

_M53 = (1 << 53) - 1
#: Cells of the compiled sender's search grid over the state means.
_GRID = 4096


def shared_h(
    seed: int, client: int, n: int, sr_log2: int, device: torch.device
) -> torch.Tensor:
    """Client-specific shared randomness: n values in 0..2**sr_log2-1 (int64)."""
    w = words_torch(derive_seed(seed, client, Stream.SHARED_H), n, device=device)
    return (w >> (64 - sr_log2)) & ((1 << sr_log2) - 1)


def private_uniforms(key: int, n: int, device: torch.device) -> torch.Tensor:
    """n float64 uniforms in [0, 1) on a 2**-53 grid from the key's stream."""
    w = words_torch(key, n, device=device)
    return ((w >> 11) & _M53).to(torch.float64).mul_(2.0**-53)


def sender(
    z: torch.Tensor, h: torch.Tensor, u: torch.Tensor, tab: dict[str, torch.Tensor]
) -> torch.Tensor:
    """LP-optimal unbiased messages X for ``|z| <= T`` (float64 z, int64 h, uniforms u).

    In the state sweep of the table (see :mod:`fedrot.tables.quic_fl`), find the
    segment ``m_j <= z < m_{j+1}``; column h sends its level of state j, and the one
    column that moves between j and j+1 sends one level higher with probability
    ``(z - m_j) / (m_{j+1} - m_j)``.
    """
    means, levels, movers = tab["means"], tab["levels"], tab["movers"]
    last = means.numel() - 1
    j = (torch.searchsorted(means, z, right=True) - 1).clamp_(0, last)
    x = levels[j, h]
    jj = j.clamp(max=last - 1)
    lo, hi = means[jj], means[jj + 1]
    p = (z - lo) / (hi - lo)
    move = (movers[jj] == h) & (u < p) & (j < last)
    return x + move.to(x.dtype)


def receiver(
    x: torch.Tensor, h: torch.Tensor, tab: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Table estimates ``R[X, h]`` (float32)."""
    return tab["flat"][x * tab["H"] + h]


@dataclass(frozen=True)
class QuicTables:
    """One QUIC-FL table as tensors on a device, with the sender and the summation.

    ``reference`` holds the layout of the torch path (:func:`sender`,
    :func:`receiver`); ``kernel`` the compiled kernels' layout, built on first use.
    """

    table: QuicFLTable
    device: torch.device

    @cached_property
    def reference(self) -> dict[str, torch.Tensor]:
        """``means``, ``levels``, ``movers``, ``flat`` and ``H`` for the torch path."""
        t, dev = self.table, self.device
        return {
            "means": torch.tensor(t.means, dtype=torch.float64, device=dev),
            "levels": torch.tensor(t.levels, dtype=torch.int64, device=dev),
            "movers": torch.tensor(t.movers, dtype=torch.int64, device=dev),
            "flat": torch.tensor(t.table.reshape(-1), dtype=torch.float32, device=dev),
            "H": torch.tensor(1 << t.sr_log2, device=dev),
        }

    @cached_property
    def kernel(self) -> dict[str, Any]:
        """The tables in the compiled kernels' layout (CPU).

        ``grid[g]`` is ``#{means <= lo + g / inv} - 1`` (at least 0), a starting
        point for the kernel's search; the kernel walks from it to the exact state
        (``means`` ends with a +inf sentinel for that walk).
        """
        t = self.table
        means = np.asarray(t.means, dtype=np.float64)
        lo, hi = float(means[0]), float(means[-1])
        inv = _GRID / (hi - lo)
        edges = lo + np.arange(_GRID + 1, dtype=np.float64) / inv
        grid = np.maximum(np.searchsorted(means, edges, side="right") - 1, 0)
        return {
            "means": torch.tensor([*means, math.inf], dtype=torch.float64),
            "levels": torch.tensor(np.asarray(t.levels), dtype=torch.uint8),
            "movers": torch.tensor(np.asarray(t.movers), dtype=torch.uint8),
            "grid": torch.tensor(grid, dtype=torch.int32),
            "grid_lo": lo,
            "grid_inv": inv,
            "flat": torch.tensor(t.table.reshape(-1), dtype=torch.float32),
        }

    def quantize(
        self, z: torch.Tensor, seed: int, client: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages (0 at outliers) and increasing outlier indices of normalized z."""
        n, t = z.numel(), self.table
        hkey = derive_seed(seed, client, Stream.SHARED_H)
        ukey = derive_seed(seed, client, Stream.PRIVATE)
        if z.device.type == "cpu" and _kernels.available():
            codes = torch.empty(n, dtype=torch.uint8)
            oidx = torch.empty(n, dtype=torch.int64)
            k = self.kernel
            n_out = _kernels.quic_send(
                z,
                threshold=t.threshold,
                hkey=hkey,
                ukey=ukey,
                sr_log2=t.sr_log2,
                means=k["means"],
                levels=k["levels"],
                movers=k["movers"],
                grid=k["grid"],
                grid_lo=k["grid_lo"],
                grid_inv=k["grid_inv"],
                codes=codes,
                oidx=oidx,
            )
            if n_out is not None:
                return codes, oidx[:n_out]
        out = z.abs() > t.threshold
        idx = torch.nonzero(out).reshape(-1)
        z64 = z.to(torch.float64).masked_fill_(out, 0.0)
        h = shared_h(seed, client, n, t.sr_log2, z.device)
        u = private_uniforms(ukey, n, z.device)
        return sender(z64, h, u, self.reference).masked_fill_(out, 0), idx

    def sum_(
        self,
        acc: torch.Tensor,
        plan: ChunkPlan,
        *,
        bits: int,
        seed: int,
        bodies: list[tuple[int, tuple[Any, ...], float]],
    ) -> None:
        """``acc = sum_c w_c * estimate_c`` in the rotated domain with the compiled
        kernel, for (client, parsed body, weight) triples: per element the same
        operations in the same client order as the torch path (``add_`` as one
        fused multiply-add), each block of coordinates accumulated in cache."""
        done = self._fused_(
            acc,
            plan,
            bits=bits,
            seed=seed,
            bodies=[(client, body) for client, body, _ in bodies],
            weights=[w for _, _, w in bodies],
        )
        if not done:  # pragma: no cover - the caller checked the kernels
            raise RuntimeError(f"QUIC-FL aggregation kernel: {_kernels.status()}")

    def estimate(
        self,
        plan: ChunkPlan,
        *,
        bits: int,
        seed: int,
        client: int,
        body: tuple[Any, ...],
    ) -> torch.Tensor | None:
        """One client's estimate of its rotated vector (a new float32 vector of the
        padded length) with the compiled kernel, from its parsed body (plan, norms,
        packed codes, outlier indices, values); None when the kernels cannot run.

        Bit-identical to :func:`receiver`, the per-piece norm scaling and the
        outliers put back, in one pass without the int64 temporaries."""
        if self.device.type != "cpu" or not _kernels.available():
            return None
        out = torch.empty(plan.padded, dtype=torch.float32)
        done = self._fused_(
            out, plan, bits=bits, seed=seed, bodies=[(client, body)], weights=None
        )
        return out if done else None

    def _fused_(
        self,
        out: torch.Tensor,
        plan: ChunkPlan,
        *,
        bits: int,
        seed: int,
        bodies: list[tuple[int, tuple[Any, ...]]],
        weights: list[float] | None,
    ) -> bool:
        """:func:`fedrot._kernels.quic_aggregate_` on (client, parsed body) pairs:
        their weighted sum, or with ``weights=None`` one client's estimate."""
        return _kernels.quic_aggregate_(
            out,
            codes=[body[2] for _, body in bodies],
            hkeys=[derive_seed(seed, c, Stream.SHARED_H) for c, _ in bodies],
            norms=[body[1] for _, body in bodies],
            outlier_idx=[body[3] for _, body in bodies],
            outlier_values=[body[4] for _, body in bodies],
            weights=weights,
            bits=bits,
            sr_log2=self.table.sr_log2,
            table=self.kernel["flat"],
            piece_starts=_piece_starts(plan),
        )


def _piece_starts(plan: ChunkPlan) -> torch.Tensor:
    """The pieces' start offsets followed by the padded length (int64)."""
    starts = [g.offset + r * g.size for g in plan.groups for r in range(g.rows)]
    return torch.tensor([*starts, plan.padded], dtype=torch.int64)
