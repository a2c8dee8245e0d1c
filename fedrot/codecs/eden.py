"""EDEN: b-bit quantization of the rotated, normalized vector with an unbiasing scale.

Vargaftik et al., "EDEN: Communication-Efficient and Robust Distributed Mean
Estimation for Federated Learning", ICML 2022, https://arxiv.org/abs/2108.08842.

Client, per power-of-two piece (see :mod:`fedrot.chunking`):
  1. rotate with the client's own k-RHT stack: ``y = R(x_p)``;
  2. normalize: ``z = sqrt(D) * y / ||y||``;
  3. quantize each coordinate to the nearest Lloyd-Max centroid for N(0,1):
     ``c_i = Q_b(z_i)`` (boundaries are midpoints; an exact 0 goes to the negative
     neighbour);
  4. scale ``S = ||y||^2 / <c, y>``, which makes the estimate unbiased under a uniform
     random rotation; send the b-bit codes and S (float32).
Server: ``x_hat = R^{-1}(S * c)[:d]``, inverted in reverse order.

Fractional ``bits > 1``: coordinate i uses ceil(bits) bits when a shared-seed uniform
(stream MASK of (seed, client)) is below frac(bits), else floor(bits); the number of
ceil-bit coordinates is sent (8 bytes) and checked against the regenerated mask.
``0 < bits < 1``: each input coordinate is kept with probability p = bits
(shared-seed mask), the kept ones are scaled by 1/p and sent with 1-bit EDEN; the
number kept is sent (8 bytes). vNMSE = (1 + 0.5708) / p - 1.

Each client has its own rotation: a shared rotation would make the quantization errors
of different clients identical, so they would not average out.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch

from .. import _kernels, bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE, ChunkPlan, plan_chunks
from ..errors import PayloadError
from ..rotation import piece_views
from ..seeds import Stream, derive_seed, uniforms_torch
from ..tables.lloyd_max import lloyd_max
from . import _rotated as rot
from ._scaling import decode_exponent, mul_pow2_, restore, unscale
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["EdenCodec"]


def _check_bits(bits: Any) -> float:
    if isinstance(bits, bool) or not isinstance(bits, (int, float)):
        raise TypeError(f"`bits` must be a number. Found {type(bits).__name__}.")
    bits = float(bits)
    if not 0 < bits <= 8:
        raise ValueError(f"`bits` must be in (0, 8]. Found {bits}.")
    return bits


class EdenCodec(Codec):
    """EDEN with integer, fractional (> 1) or sub-1-bit budgets."""

    name = "eden"
    codec_id = 3
    unbiased = True
    prescales = True

    def __init__(
        self,
        *,
        bits: float = 2,
        rotations: int | str = 2,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(device=device)
        self.bits = _check_bits(bits)
        self.rotations = rot.check_rotations(rotations)
        self.chunk_log2 = rot.check_chunk_size(chunk_size)
        #: fractional budgets send seeded-mask counts: the size varies by seed
        self.exact_size = self.bits.is_integer()
        if self.bits < 1:
            self._lo, self._hi, self._frac = 1, 1, 0.0
        else:
            self._lo = int(math.floor(self.bits))
            self._frac = self.bits - self._lo
            self._hi = self._lo + 1 if self._frac > 0 else self._lo
        self._tables = {}
        for b in {self._lo, self._hi}:
            lm = lloyd_max(b)
            self._tables[b] = (
                torch.tensor(lm.centroids, dtype=torch.float32, device=self.device),
                torch.tensor(lm.boundaries, dtype=torch.float32, device=self.device),
            )

    def params(self) -> dict[str, Any]:
        bits: float | int = int(self.bits) if self.bits.is_integer() else self.bits
        return {
            "bits": bits,
            "rotations": self.rotations,
            "chunk_size": 1 << self.chunk_log2,
        }

    def _param_block(self) -> bytes:
        return struct.pack("<d", self.bits) + rot.rotation_params(self.rotations)

    def _chunk_log2(self) -> int:
        return self.chunk_log2

    def _expected_vnmse(self) -> float:
        if self.bits < 1:
            return (1.0 + lloyd_max(1).unbiased_vnmse) / self.bits - 1.0
        e = (1 - self._frac) * lloyd_max(self._lo).e_zq
        if self._frac:
            e += self._frac * lloyd_max(self._hi).e_zq
        return 1.0 / e - 1.0

    # ----------------------------------------------------------------- helpers
    def _mask_key(self, seed: int, client: int) -> int:
        return derive_seed(seed, client, Stream.MASK)

    def _hi_mask(self, n: int, seed: int, client: int) -> torch.Tensor | None:
        if not self._frac:
            return None
        u = uniforms_torch(self._mask_key(seed, client), n, device=self.device)
        return u < self._frac

    def _code_bytes(self, n: int, n_hi: int) -> int:
        return bitpack.packed_size(n_hi, self._hi) + bitpack.packed_size(
            n - n_hi, self._lo
        )

    # ------------------------------------------------------------------ encode
    def _encode_dense(
        self, v: torch.Tensor, seed: int, client: int, exp: int
    ) -> tuple[int, list[bytes]]:
        plan, k, y = rot.forward_(
            v,
            chunk_log2=self.chunk_log2,
            rotations=self.rotations,
            seed=seed,
            client=client,
        )
        hi = self._hi_mask(plan.padded, seed, client)
        if hi is None:
            fast = self._encode_fast(plan, y, exp)
            if fast is not None:
                return k, fast
        codes = torch.empty(plan.padded, dtype=torch.int64, device=self.device)
        scales = []
        cent_lo, bnd_lo = self._tables[self._lo]
        cent_hi, bnd_hi = self._tables[self._hi]
        code_views = piece_views(codes, plan)
        hi_views = piece_views(hi, plan) if hi is not None else [None] * len(code_views)
        for view, cview, hview in zip(
            piece_views(y, plan), code_views, hi_views, strict=True
        ):
            norm2 = rot.row_norms2(view)
            z = rot.normalize_rows(view, norm2)
            q = torch.bucketize(z, bnd_lo)
            c = cent_lo[q]
            if hview is not None:
                q_hi = torch.bucketize(z, bnd_hi)
                q = torch.where(hview, q_hi, q)
                c = torch.where(hview, cent_hi[q_hi], c)
            cview.copy_(q)
            dot = (c * view).sum(dim=1)
            scales.append(torch.where(norm2 > 0, norm2 / dot, torch.zeros_like(norm2)))
        body = [tensor_bytes(unscale(torch.cat(scales), exp, "scale"))]
        if hi is None:
            body.append(tensor_bytes(bitpack.pack(codes, self._lo)))
        else:
            n_hi = int(hi.sum())
            body.insert(0, struct.pack("<Q", n_hi))
            body.append(tensor_bytes(bitpack.pack(codes[hi], self._hi)))
            body.append(tensor_bytes(bitpack.pack(codes[~hi], self._lo)))
        return k, body

    def _encode_fast(
        self, plan: ChunkPlan, y: torch.Tensor, exp: int
    ) -> list[bytes] | None:
        """Integer-bit quantization with the fused kernel (None: unavailable).

        Same operations as the torch loop of :meth:`_encode_dense`: norms and dot
        products are torch reductions over the same tensors, the elementwise steps
        (normalize, bucketize, centroid lookup, product) are fused.
        """
        cent, bnd = self._tables[self._lo]
        codes = torch.empty(plan.padded, dtype=torch.uint8, device=self.device)
        prod = torch.empty_like(y)  # squares, then centroid * y
        scales = []
        for view, cview, pview in zip(
            piece_views(y, plan),
            piece_views(codes, plan),
            piece_views(prod, plan),
            strict=True,
        ):
            norm2 = rot.row_norms2(view, pview)
            if not _kernels.eden_quantize_(
                view, rot.row_factors(view, norm2), bnd, cent, cview, pview
            ):
                return None
            dot = pview.sum(dim=1)
            scales.append(torch.where(norm2 > 0, norm2 / dot, torch.zeros_like(norm2)))
        return [
            tensor_bytes(unscale(torch.cat(scales), exp, "scale")),
            tensor_bytes(bitpack.pack(codes, self._lo)),
        ]

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        d = v.numel()
        if self.bits >= 1:
            k, body = self._encode_dense(v, seed, client, exp)
            return self._pack(d=d, rotations=k, body=body)
        keep = (
            uniforms_torch(self._mask_key(seed, client), d, device=self.device)
            < self.bits
        )
        sub = v[keep].div_(self.bits)
        head = struct.pack("<Q", sub.numel())
        if sub.numel() == 0:
            return self._pack(d=d, rotations=0, body=[head])
        k, body = self._encode_dense(sub, seed, client, exp)
        return self._pack(d=d, rotations=k, body=[head, *body])

    # ------------------------------------------------------------------ decode
    def _parse_dense(
        self, n: int, k: int, reader: wire.Reader
    ) -> tuple[ChunkPlan, int, int, torch.Tensor, memoryview]:
        """Checked sections of the dense part for n coordinates: plan, layers,
        ceil-bit count, scales and packed codes."""
        rot.check_k(k, self.rotations, (1, 2))
        plan = plan_chunks(n, self.chunk_log2)
        n_hi = 0
        if self._frac:
            n_hi = reader.u64()
            if n_hi > plan.padded:
                raise PayloadError(
                    f"Payload declares {n_hi} ceil-bit coordinates out of "
                    f"{plan.padded}."
                )
        reader.expect_remaining(
            4 * plan.num_pieces + self._code_bytes(plan.padded, n_hi),
            "scales and codes",
        )
        scales = read_f32(reader, plan.num_pieces, self.device)
        return plan, k, n_hi, scales, reader.rest()

    def _decode_dense(
        self,
        parts: tuple[ChunkPlan, int, int, torch.Tensor, memoryview],
        seed: int,
        client: int,
    ) -> torch.Tensor:
        plan, k, n_hi, scales, raw_view = parts
        exp = decode_exponent(scales)
        if exp:
            scales = mul_pow2_(scales.clone(), exp)
        raw = read_tensor(raw_view, torch.uint8, self.device)
        cent_lo, _ = self._tables[self._lo]
        hi = self._hi_mask(plan.padded, seed, client)
        if hi is None:
            c = torch.empty(plan.padded, dtype=torch.float32, device=self.device)
            if rot.dequantize_pieces_(c, plan, raw, self._lo, cent_lo, scales):
                return restore(rot.inverse_(c, plan, k, seed=seed, client=client), exp)
            c = cent_lo[bitpack.unpack(raw, plan.padded, self._lo)]
        else:
            if int(hi.sum()) != n_hi:
                raise PayloadError(
                    "Payload's ceil-bit count does not match the mask regenerated from "
                    "(seed, client): wrong seed/client id or a corrupt payload."
                )
            split = bitpack.packed_size(n_hi, self._hi)
            c = torch.empty(plan.padded, dtype=torch.float32, device=self.device)
            c[hi] = self._tables[self._hi][0][
                bitpack.unpack(raw[:split], n_hi, self._hi)
            ]
            c[~hi] = cent_lo[bitpack.unpack(raw[split:], plan.padded - n_hi, self._lo)]
        rot.scale_pieces_(c, plan, scales)
        return restore(rot.inverse(c, plan, k, seed=seed, client=client), exp)

    def _parse(self, header: wire.Header, reader: wire.Reader) -> tuple[int, Any]:
        """(number of kept coordinates, dense sections or None when none is kept)."""
        d, k = header.d, header.rotations
        if self.bits >= 1:
            return d, self._parse_dense(d, k, reader)
        m = reader.u64()
        _check_plausible_count(m, d, self.bits)
        if m == 0:
            if k != 0:
                raise PayloadError(
                    f"Payload keeps no coordinate but declares {k} RHT layer(s)."
                )
            reader.expect_remaining(0, "an empty selection")
            return 0, None
        return m, self._parse_dense(m, k, reader)

    def _decode(
        self, header: wire.Header, parsed: tuple[int, Any], seed: int, client: int
    ) -> torch.Tensor:
        d = header.d
        m, dense = parsed
        if self.bits >= 1:
            return self._decode_dense(dense, seed, client)
        out = torch.zeros(d, dtype=torch.float32, device=self.device)
        if m == 0:
            return out
        sub = self._decode_dense(dense, seed, client)
        keep = (
            uniforms_torch(self._mask_key(seed, client), d, device=self.device)
            < self.bits
        )
        if int(keep.sum()) != m:
            raise PayloadError(
                "Payload's kept-coordinate count does not match the mask regenerated "
                "from (seed, client): wrong seed/client id or a corrupt payload."
            )
        out[keep] = sub
        return out

    # ------------------------------------------------------------------- sizes
    def _sizes(self, d: int) -> tuple[int, int]:
        fixed = wire.FIXED_BYTES + len(self._param_block())
        n = d
        if self.bits < 1:
            fixed += 8
            n = max(1, round(self.bits * d))
        plan = plan_chunks(n, self.chunk_log2)
        n_hi = round(self._frac * plan.padded)
        if self._frac:
            fixed += 8
        codes = self._code_bytes(plan.padded, n_hi)
        return fixed + 4 * plan.num_pieces + codes, codes


def _check_plausible_count(m: int, d: int, p: float) -> None:
    """A Binomial(d, p) count more than 12 standard deviations off is corrupt.

    This bounds the allocation of size d by the payload length, which carries about
    p*d/8 bytes of codes.
    """
    sd = math.sqrt(d * p * (1 - p))
    if m > d or abs(m - p * d) > 12 * sd + 12:
        raise PayloadError(
            f"Payload declares {m} kept coordinates out of d = {d} at keep "
            f"probability {p}; that is impossible for a genuine payload."
        )
