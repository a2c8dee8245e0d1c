"""QUIC-FL: unbiased b-bit table quantization with one rotation shared by the round.

Ben-Basat et al., "Accelerating Federated Learning with Quick Distributed Mean
Estimation", ICML 2024, https://arxiv.org/abs/2205.13341. The receiver tables are
solved by this project (:mod:`fedrot.tables.quic_fl`).

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

import torch

from .. import _kernels, bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE, ChunkPlan
from ..errors import PayloadError
from ..rotation import piece_views
from ..tables.quic_fl import quic_fl_table, shipped_outlier_log2
from . import _pieces
from ._io import check_int, read_f32, read_tensor, tensor_bytes
from ._params import Field, ParamLayout
from ._quic_fl_ops import QuicTables, private_uniforms, receiver, sender, shared_h
from ._rotation import MODE_FIELD, Rotated, Rotation
from ._scaling import decode_exponent, mul_pow2_, restore, scale_bytes
from .base import Codec, Payloads

__all__ = ["QuicFLCodec", "shared_h", "private_uniforms", "sender", "receiver"]

#: Parsed body: plan, norms, packed codes (uint8), outlier indices, outlier values.
_Body = tuple[ChunkPlan, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class QuicFLCodec(Codec):
    """QUIC-FL with bits in 1..4, a shared rotation and the project's own tables."""

    name = "quic-fl"
    codec_id = 11
    shared_rotation = True
    prescales = True
    exact_size = False  # the outlier count depends on the data
    layout = ParamLayout(
        (
            Field("bits", "B"),
            MODE_FIELD,
            Field(
                "outlier_fraction",
                "B",
                to_wire=lambda p: round(-math.log2(p)),
                from_wire=lambda m: 2.0**-m,
            ),
            Field("table", "I", show=lambda crc: f"CRC {crc:#010x}"),
        )
    )
    rotation: Rotation

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
        self.bits = check_int("bits", bits, 1, 4, " for QUIC-FL")
        allowed = {2.0**-m: m for m in shipped_outlier_log2()}
        if isinstance(outlier_fraction, bool) or outlier_fraction not in allowed:
            raise ValueError(
                f"`outlier_fraction` must be one of the shipped values "
                f"{[f'2**-{m}' for m in shipped_outlier_log2()]}. Found "
                f"{outlier_fraction!r}. Solve tables for another value with "
                "`python -m fedrot.tables.solvers.quic_fl`."
            )
        self.outlier_fraction = float(outlier_fraction)
        self.rotation = Rotation(rotations, chunk_size, shared=True)
        self.table = quic_fl_table(bits, allowed[outlier_fraction])
        self._ops = QuicTables(self.table, self.device)
        self._tab = self._ops.reference

    def params(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "rotations": self.rotation.mode,
            "outlier_fraction": self.outlier_fraction,
            "chunk_size": self.rotation.chunk_size,
        }

    def _param_values(self) -> dict[str, Any]:
        return {**self.params(), "table": self.table.crc}

    def _expected_vnmse(self) -> float:
        return self.table.vnmse

    # ------------------------------------------------------------------- sizes
    def _body_bytes(self, plan: ChunkPlan, outliers: int) -> int:
        w = bitpack.index_width(plan.padded)
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
        return self._envelope_bytes + self._body_bytes(self.rotation.plan(d), outliers)

    def _body_sizes(self, d: int) -> tuple[int, int]:
        plan = self.rotation.plan(d)
        n_out = math.ceil(self.outlier_fraction * plan.padded)
        body = self._body_bytes(plan, n_out)
        return body, body - 4 * plan.num_pieces - 8

    # ------------------------------------------------------------------ encode
    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        # v is the encoder's private copy (see Codec.encode): rotate it in place
        plan, layers, y = self.rotation.forward_(v, seed=seed, client=client)
        z = torch.empty_like(y)
        norms = []
        for view, zview in zip(piece_views(y, plan), piece_views(z, plan), strict=True):
            norm2 = _pieces.row_norms2(view, zview)  # zview: scratch for the squares
            factor = _pieces.row_factors(view, norm2)[:, None]
            torch.mul(view, factor, out=zview)  # normalize_rows, written in place
            norms.append(norm2.sqrt() / math.sqrt(view.shape[1]))
        x, idx = self._quantize(z, seed, client)
        body = [
            struct.pack("<Q", idx.numel()),
            scale_bytes(torch.cat(norms), exp, "norm"),
            tensor_bytes(bitpack.pack(x, self.bits)),
            tensor_bytes(bitpack.pack(idx, bitpack.index_width(plan.padded))),
            scale_bytes(y[idx], exp, "outlier value"),
        ]
        return self._pack(d=v.numel(), layers=layers, body=body)

    def _quantize(
        self, z: torch.Tensor, seed: int, client: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages (0 at outliers) and increasing outlier indices of normalized z."""
        return self._ops.quantize(z, seed, client)

    # ------------------------------------------------------------------ decode
    def _parse(self, header: wire.Header, reader: wire.Reader) -> _Body:
        """Checked body sections: plan, norms, packed codes, outlier indices, values."""
        plan = self.rotation.plan(header.d)
        n_out = reader.u64()
        # Each piece has sum(z^2) = D, so at most D / T^2 of its |z| exceed T (with
        # a margin for float32 rounding).
        t = self.table.threshold
        limit = int(plan.padded * 1.001 / t**2) + plan.num_pieces
        if n_out > limit:
            raise PayloadError(
                f"Payload declares {n_out} outliers out of {plan.padded} coordinates; "
                f"normalized pieces have at most {limit} beyond the threshold {t:.3g}."
            )
        reader.expect_remaining(
            self._body_bytes(plan, n_out) - 8, "norms, codes and outliers"
        )
        w = bitpack.index_width(plan.padded)
        norms = read_f32(reader, plan.num_pieces, self.device)
        codes = reader.take(bitpack.packed_size(plan.padded, self.bits))
        packed_idx = reader.take(bitpack.packed_size(n_out, w))
        values = read_f32(reader, n_out, self.device)
        idx = bitpack.unpack(
            read_tensor(packed_idx, torch.uint8, self.device), n_out, w
        )
        if n_out and (int(idx[-1]) >= plan.padded or bool((idx[1:] <= idx[:-1]).any())):
            raise PayloadError(
                "Payload corrupt: outlier indices must be strictly increasing and "
                f"below the padded length {plan.padded}."
            )
        return plan, norms, read_tensor(codes, torch.uint8, self.device), idx, values

    def _estimate(
        self, body: _Body, seed: int, client: int, exp: int = 0
    ) -> torch.Tensor:
        """The client's estimate of its rotated vector (before the inverse stack)
        from its parsed body, times ``2**exp``."""
        plan, norms, codes, idx, values = body
        if exp:
            norms = mul_pow2_(norms.clone(), exp)
            values = mul_pow2_(values.clone(), exp)
        fused = self._ops.estimate(
            plan,
            bits=self.bits,
            seed=seed,
            client=client,
            body=(plan, norms, codes, idx, values),
        )
        if fused is not None:
            return fused
        x = bitpack.unpack(codes, plan.padded, self.bits)
        h = shared_h(seed, client, plan.padded, self.table.sr_log2, self.device)
        est = receiver(x, h, self._tab)
        _pieces.scale_pieces_(est, plan, norms)
        est[idx] = values
        return est

    def _decode(
        self, header: wire.Header, parsed: _Body, seed: int, client: int
    ) -> torch.Tensor:
        exp = decode_exponent(parsed[1], parsed[4])
        est = self._estimate(parsed, seed, client, exp)
        rotated = Rotated(parsed[0], header.rotations, est)  # est: a private buffer
        return restore(self.rotation.inverse_(rotated, seed=seed, client=client), exp)

    def _aggregate(
        self, payloads: Payloads, seed: int, clients: list[int], weights: torch.Tensor
    ) -> torch.Tensor:
        """Sum the weighted estimates in the rotated domain; ONE inverse stack per
        layer count k, added in increasing k (compiled kernel when available).

        Payloads whose scales need rescaling (inputs beyond 2**±32) are decoded one
        by one instead, so that no sum leaves float32's range.
        """
        if any(decode_exponent(body[1], body[4]) for _, body in payloads):
            return super()._aggregate(payloads, seed, clients, weights)
        groups: dict[int, list[tuple[int, _Body, float]]] = {}
        for (header, body), client, w in zip(
            payloads, clients, weights.tolist(), strict=True
        ):
            groups.setdefault(header.rotations, []).append((client, body, w))
        plan = payloads[0][1][0]
        fused = self.device.type == "cpu" and _kernels.available()
        out: torch.Tensor | None = None
        for layers, bodies in sorted(groups.items()):
            if fused:
                acc = torch.empty(plan.padded, dtype=torch.float32)
                self._ops.sum_(acc, plan, bits=self.bits, seed=seed, bodies=bodies)
            else:
                acc = self._estimate(bodies[0][1], seed, bodies[0][0]).mul_(
                    bodies[0][2]
                )
                for client, body, w in bodies[1:]:
                    acc.add_(self._estimate(body, seed, client), alpha=w)
            x = self.rotation.inverse(Rotated(plan, layers, acc), seed=seed, client=0)
            out = x if out is None else out.add_(x)
        assert out is not None
        return out
