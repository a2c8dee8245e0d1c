"""QUIC-FL: unbiased b-bit table quantization with one rotation shared by the round.

Ben-Basat et al., "Accelerating Federated Learning with Quick Distributed Mean
Estimation", ICML 2024, https://arxiv.org/abs/2205.13341. The receiver tables are
solved by this project (:mod:`fedrot.quic_fl_tables`).

Client ``i``, per power-of-two piece of ``D`` coordinates (see :mod:`fedrot.chunking`):
  1. rotate with the round's SHARED k-RHT stack (keys from ``seed`` only):
     ``y = R(x_p)``;
  2. normalize: ``z = sqrt(D) * y / ||y||``;
  3. bounded support: coordinates with ``|z| > T`` (a Gaussian has outlier fraction
     ``p``, default 1/512) are sent exactly, as their float32 ``y`` value and index;
  4. shared randomness ``h_j`` = top ``l`` bits of word j of the SplitMix64 stream of
     ``derive_seed(seed, client, Stream.SHARED_H)``; private uniforms from
     ``Stream.PRIVATE``;
  5. every other coordinate sends ``X_j = S(z_j, h_j)``, the LP-optimal sender for
     the receiver table ``R`` (at most one h randomized per z), so that
     ``E[R[X_j, h_j]] = z_j`` exactly for every ``|z_j| <= T``.
Server: ``y_hat = (||y|| / sqrt(D)) * R[X, h]`` with the outliers put back exactly;
inverted in reverse order. ``aggregate`` sums the clients' weighted ``y_hat`` in the
rotated domain and applies ONE inverse stack per round (per distinct k with
``rotations="auto"``): ``O(n d) + O(k d log d)`` instead of ``O(n k d log d)``.
A shared rotation is allowed because the estimate is unbiased per coordinate for any
fixed rotation, so with independent h the n errors average out (NMSE = vNMSE / n).

Payload (bytes; ``P`` = padded length, ``n_p`` = pieces, ``N`` = outliers,
``w = max(1, ceil(log2 P))``)::

    20 (envelope) + 7 (parameters) + 8 (N) + 4 n_p (norms)
      + ceil(P b / 8) (codes) + ceil(N w / 8) (outlier indices) + 4 N (values)

i.e. ``P b + 32 n_p + N (32 + w)`` bits plus a 35-byte header; see
:meth:`QuicFLCodec.payload_size`.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import torch

from .. import _kernels, bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE, ChunkPlan, plan_chunks
from ..errors import PayloadError
from ..rotation import piece_views
from ..seeds import Stream, derive_seed, words_torch
from ..tables.quic_fl import QuicFLTable, quic_fl_table, shipped_outlier_log2
from . import _rotated as rot
from ._scaling import decode_exponent, mul_pow2_, restore, unscale
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["QuicFLCodec", "shared_h", "private_uniforms", "sender", "receiver"]

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

    In the state sweep of the table (see :mod:`fedrot.quic_fl_tables`), find the
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


class QuicFLCodec(Codec):
    """QUIC-FL with bits in 1..4, a shared rotation and the project's own tables."""

    name = "quic-fl"
    codec_id = 11
    unbiased = True
    shared_rotation = True
    prescales = True
    exact_size = False  # the outlier count depends on the data

    def __init__(
        self,
        *,
        bits: int = 2,
        rotations: int | str = 2,
        outlier_fraction: float = 1 / 512,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(device=device)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 4:
            raise ValueError(
                f"`bits` must be an int in 1..4 for QUIC-FL. Found {bits!r}."
            )
        allowed = {2.0**-m: m for m in shipped_outlier_log2()}
        if isinstance(outlier_fraction, bool) or outlier_fraction not in allowed:
            raise ValueError(
                f"`outlier_fraction` must be one of the shipped values "
                f"{[f'2**-{m}' for m in shipped_outlier_log2()]}. Found "
                f"{outlier_fraction!r}. Solve tables for another value with "
                "`python -m fedrot.quic_fl_tables`."
            )
        self.bits = bits
        self.rotations = rot.check_rotations(rotations)
        self.chunk_log2 = rot.check_chunk_size(chunk_size)
        self.outlier_fraction = float(outlier_fraction)
        self.table: QuicFLTable = quic_fl_table(bits, allowed[outlier_fraction])
        t = self.table
        dev = self.device
        self._tab = {
            "means": torch.tensor(t.means, dtype=torch.float64, device=dev),
            "levels": torch.tensor(t.levels, dtype=torch.int64, device=dev),
            "movers": torch.tensor(t.movers, dtype=torch.int64, device=dev),
            "flat": torch.tensor(t.table.reshape(-1), dtype=torch.float32, device=dev),
            "H": torch.tensor(1 << t.sr_log2, device=dev),
        }
        self._fast: dict[str, Any] | None = None

    def _fast_tables(self) -> dict[str, Any]:
        """The sender's tables in the compiled kernel's layout (CPU, built once).

        ``grid[g]`` is ``#{means <= lo + g / inv} - 1`` (at least 0), a starting
        point for the kernel's search; the kernel walks from it to the exact state
        (``means`` ends with a +inf sentinel for that walk).
        """
        if self._fast is None:
            t = self.table
            means = np.asarray(t.means, dtype=np.float64)
            lo, hi = float(means[0]), float(means[-1])
            inv = _GRID / (hi - lo)
            edges = lo + np.arange(_GRID + 1, dtype=np.float64) / inv
            grid = np.maximum(np.searchsorted(means, edges, side="right") - 1, 0)
            self._fast = {
                "means": torch.tensor([*means, math.inf], dtype=torch.float64),
                "levels": torch.tensor(np.asarray(t.levels), dtype=torch.uint8),
                "movers": torch.tensor(np.asarray(t.movers), dtype=torch.uint8),
                "grid": torch.tensor(grid, dtype=torch.int32),
                "grid_lo": lo,
                "grid_inv": inv,
                "flat": torch.tensor(t.table.reshape(-1), dtype=torch.float32),
            }
        return self._fast

    def params(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "rotations": self.rotations,
            "outlier_fraction": self.outlier_fraction,
            "chunk_size": 1 << self.chunk_log2,
        }

    def _param_block(self) -> bytes:
        return struct.pack(
            "<BBBI",
            self.bits,
            rot.rotation_code(self.rotations),
            self.table.outlier_log2,
            self.table.crc,
        )

    def _chunk_log2(self) -> int:
        return self.chunk_log2

    def _expected_vnmse(self) -> float:
        return self.table.vnmse

    # ------------------------------------------------------------------- sizes
    @staticmethod
    def _index_width(padded: int) -> int:
        return max(1, (padded - 1).bit_length())

    def _body_bytes(self, plan: ChunkPlan, outliers: int) -> int:
        w = self._index_width(plan.padded)
        return (
            4 * plan.num_pieces
            + 8
            + bitpack.packed_size(plan.padded, self.bits)
            + bitpack.packed_size(outliers, w)
            + 4 * outliers
        )

    def payload_size(self, d: int, *, outliers: int) -> int:
        """Exact payload bytes for length ``d`` with ``outliers`` exact coordinates.

        Examples
        --------
        >>> QuicFLCodec(bits=2).payload_size(65536, outliers=128)
        17191
        """
        plan = plan_chunks(d, self.chunk_log2)
        return (
            wire.FIXED_BYTES
            + len(self._param_block())
            + self._body_bytes(plan, outliers)
        )

    def _sizes(self, d: int) -> tuple[int, int]:
        plan = plan_chunks(d, self.chunk_log2)
        n_out = math.ceil(self.outlier_fraction * plan.padded)
        total = self.payload_size(d, outliers=n_out)
        w = self._index_width(plan.padded)
        codes = (
            bitpack.packed_size(plan.padded, self.bits)
            + bitpack.packed_size(n_out, w)
            + 4 * n_out
        )
        return total, codes

    # ------------------------------------------------------------------ encode
    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        plan, k, y = rot.forward(
            v,
            chunk_log2=self.chunk_log2,
            rotations=self.rotations,
            seed=seed,
            client=None,
            auto=(1, 2),
        )
        z = torch.empty_like(y)
        norms = []
        for view, zview in zip(piece_views(y, plan), piece_views(z, plan), strict=True):
            norm2 = rot.row_norms2(view)
            zview.copy_(rot.normalize_rows(view, norm2))
            norms.append(norm2.sqrt() / math.sqrt(view.shape[1]))
        x, idx = self._quantize(z, seed, client)
        w = self._index_width(plan.padded)
        body = [
            struct.pack("<Q", idx.numel()),
            tensor_bytes(unscale(torch.cat(norms), exp, "norm")),
            tensor_bytes(bitpack.pack(x, self.bits)),
            tensor_bytes(bitpack.pack(idx, w)),
            tensor_bytes(unscale(y[idx], exp, "outlier value")),
        ]
        return self._pack(d=v.numel(), rotations=k, body=body)

    def _quantize(
        self, z: torch.Tensor, seed: int, client: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages (0 at outliers) and increasing outlier indices of normalized z."""
        n = z.numel()
        hkey = derive_seed(seed, client, Stream.SHARED_H)
        ukey = derive_seed(seed, client, Stream.PRIVATE)
        if z.device.type == "cpu" and _kernels.available():
            codes = torch.empty(n, dtype=torch.uint8)
            oidx = torch.empty(n, dtype=torch.int64)
            ft = self._fast_tables()
            n_out = _kernels.quic_send(
                z,
                threshold=self.table.threshold,
                hkey=hkey,
                ukey=ukey,
                sr_log2=self.table.sr_log2,
                means=ft["means"],
                levels=ft["levels"],
                movers=ft["movers"],
                grid=ft["grid"],
                grid_lo=ft["grid_lo"],
                grid_inv=ft["grid_inv"],
                codes=codes,
                oidx=oidx,
            )
            if n_out is not None:
                return codes, oidx[:n_out]
        out = z.abs() > self.table.threshold
        idx = torch.nonzero(out).reshape(-1)
        z64 = z.to(torch.float64).masked_fill_(out, 0.0)
        h = shared_h(seed, client, n, self.table.sr_log2, self.device)
        u = private_uniforms(ukey, n, self.device)
        return sender(z64, h, u, self._tab).masked_fill_(out, 0), idx

    # ------------------------------------------------------------------ decode
    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[ChunkPlan, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked body sections: plan, norms, packed codes, outlier indices, values."""
        rot.check_k(header.rotations, self.rotations, (1, 2))
        plan = plan_chunks(header.d, self.chunk_log2)
        n_out = reader.u64()
        if n_out > plan.padded:
            raise PayloadError(
                f"Payload declares {n_out} outliers out of {plan.padded} coordinates."
            )
        reader.expect_remaining(
            self._body_bytes(plan, n_out) - 8, "norms, codes and outliers"
        )
        norms = read_f32(reader, plan.num_pieces, self.device)
        w = self._index_width(plan.padded)
        codes = read_tensor(
            reader.take(bitpack.packed_size(plan.padded, self.bits)),
            torch.uint8,
            self.device,
        )
        raw_idx = read_tensor(
            reader.take(bitpack.packed_size(n_out, w)), torch.uint8, self.device
        )
        values = read_f32(reader, n_out, self.device)
        idx = bitpack.unpack(raw_idx, n_out, w)
        if n_out and (int(idx[-1]) >= plan.padded or bool((idx[1:] <= idx[:-1]).any())):
            raise PayloadError(
                "Payload corrupt: outlier indices must be strictly increasing and "
                f"below the padded length {plan.padded}."
            )
        return plan, norms, codes, idx, values

    def _estimate(
        self, parts: tuple[Any, ...], seed: int, client: int, exp: int = 0
    ) -> torch.Tensor:
        """The client's estimate of its rotated vector (before the inverse stack)
        from its parsed body, times ``2**exp``."""
        plan, norms, codes, idx, values = parts
        if exp:
            norms = mul_pow2_(norms.clone(), exp)
            values = mul_pow2_(values.clone(), exp)
        x = bitpack.unpack(codes, plan.padded, self.bits)
        h = shared_h(seed, client, plan.padded, self.table.sr_log2, self.device)
        est = receiver(x, h, self._tab)
        rot.scale_pieces_(est, plan, norms)
        est[idx] = values
        return est

    def _decode(
        self, header: wire.Header, parts: tuple[Any, ...], seed: int, client: int
    ) -> torch.Tensor:
        exp = decode_exponent(parts[1], parts[4])
        est = self._estimate(parts, seed, client, exp)
        out = rot.inverse(est, parts[0], header.rotations, seed=seed, client=None)
        return restore(out, exp)

    def _aggregate(
        self,
        payloads: list[tuple[wire.Header, Any]],
        seed: int,
        clients: list[int],
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """Sum the weighted estimates in the rotated domain; one inverse per k.

        Payloads whose scales need rescaling (inputs beyond 2**±32) are decoded one
        by one instead, so that no sum leaves float32's range.
        """
        parsed = [(header.rotations, parts) for header, parts in payloads]
        if any(decode_exponent(p[1], p[4]) for _, p in parsed):
            return super()._aggregate(payloads, seed, clients, weights)
        plan = parsed[0][1][0]
        if self.device.type == "cpu" and _kernels.available():
            return self._aggregate_fused(parsed, plan, seed, clients, weights)
        sums: dict[int, torch.Tensor] = {}
        for (k, parts), client, wt in zip(
            parsed, clients, weights.tolist(), strict=True
        ):
            est = self._estimate(parts, seed, client)
            if k in sums:
                sums[k].add_(est, alpha=wt)
            else:
                sums[k] = est.mul_(wt)
        return self._invert_sums(sums, plan, seed)

    def _aggregate_fused(
        self,
        parsed: list[tuple[int, tuple[Any, ...]]],
        plan: ChunkPlan,
        seed: int,
        clients: list[int],
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`_aggregate` with the compiled kernel: the same sums, per element the
        same operations in the same client order (``add_`` as one fused
        multiply-add, as torch's vectorized CPU kernel does), without per-client
        tensors: each block of coordinates is accumulated over all clients in cache.
        """
        groups: dict[int, dict[str, list[Any]]] = {}
        for (k, parts), client, wt in zip(
            parsed, clients, weights.tolist(), strict=True
        ):
            _, norms, codes, idx, values = parts
            g = groups.setdefault(
                k, {key: [] for key in ("codes", "hkeys", "norms", "idx", "vals", "w")}
            )
            g["codes"].append(codes)
            g["hkeys"].append(derive_seed(seed, client, Stream.SHARED_H))
            g["norms"].append(norms)
            g["idx"].append(idx)
            g["vals"].append(values)
            g["w"].append(wt)
        starts = [g.offset + r * g.size for g in plan.groups for r in range(g.rows)]
        piece_starts = torch.tensor([*starts, plan.padded], dtype=torch.int64)
        flat = self._fast_tables()["flat"]
        sums: dict[int, torch.Tensor] = {}
        for k, g in groups.items():
            acc = torch.empty(plan.padded, dtype=torch.float32)
            done = _kernels.quic_aggregate_(
                acc,
                codes=g["codes"],
                hkeys=g["hkeys"],
                norms=g["norms"],
                outlier_idx=g["idx"],
                outlier_values=g["vals"],
                weights=g["w"],
                bits=self.bits,
                sr_log2=self.table.sr_log2,
                table=flat,
                piece_starts=piece_starts,
            )
            if not done:  # pragma: no cover - kernels were checked above
                raise RuntimeError(f"QUIC-FL aggregation kernel: {_kernels.status()}")
            sums[k] = acc
        return self._invert_sums(sums, plan, seed)

    @staticmethod
    def _invert_sums(
        sums: dict[int, torch.Tensor], plan: ChunkPlan, seed: int
    ) -> torch.Tensor:
        """One inverse stack per layer count k, added in increasing k."""
        out: torch.Tensor | None = None
        for k, acc in sorted(sums.items()):
            x = rot.inverse(acc, plan, k, seed=seed, client=None)
            out = x if out is None else out.add_(x)
        assert out is not None
        return out
