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
from ..chunking import DEFAULT_CHUNK_SIZE, ChunkPlan
from ..errors import PayloadError
from ..reductions import row_sums
from ..rotation import piece_views
from ..seeds import Stream, derive_seed
from ..tables.lloyd_max import lloyd_max
from . import _pieces
from ._io import read_f32, read_tensor, tensor_bytes
from ._params import Field, ParamLayout
from ._rotation import MODE_FIELD, Rotated, Rotation
from ._scaling import rescaled, scale_bytes
from ._streams import gather, mask, scatter
from .base import Codec, Payloads

__all__ = ["EdenCodec"]

#: Dense sections of a payload: plan, layers, ceil-bit count, scales, packed codes.
_Dense = tuple[ChunkPlan, int, int, torch.Tensor, memoryview]


def _check_bits(bits: Any) -> float:
    if isinstance(bits, bool) or not isinstance(bits, (int, float)):
        raise TypeError(f"`bits` must be a number. Found {type(bits).__name__}.")
    value = float(bits)
    if not 0 < value <= 8:
        raise ValueError(f"`bits` must be in (0, 8]. Found {value}.")
    return value


class EdenCodec(Codec):
    """EDEN with integer, fractional (> 1) or sub-1-bit budgets."""

    name = "eden"
    codec_id = 3
    prescales = True
    layout = ParamLayout((Field("bits", "d"), MODE_FIELD))
    rotation: Rotation

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
        self.rotation = Rotation(rotations, chunk_size)
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
        return {"bits": bits, **self.rotation.params()}

    def _expected_vnmse(self) -> float:
        if self.bits < 1:
            return (1.0 + lloyd_max(1).unbiased_vnmse) / self.bits - 1.0
        e = (1 - self._frac) * lloyd_max(self._lo).e_zq
        if self._frac:
            e += self._frac * lloyd_max(self._hi).e_zq
        return 1.0 / e - 1.0

    # ----------------------------------------------------------------- helpers
    def _mask(
        self, n: int, p: float, seed: int, client: int
    ) -> tuple[torch.Tensor, int]:
        """The shared-seed mask ``u < p`` over n coordinates (MASK stream) and its
        number of True values."""
        return mask(derive_seed(seed, client, Stream.MASK), n, p, self.device)

    def _code_bytes(self, n: int, n_hi: int) -> int:
        return bitpack.packed_size(n_hi, self._hi) + bitpack.packed_size(
            n - n_hi, self._lo
        )

    # ------------------------------------------------------------------ encode
    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        d = v.numel()
        if self.bits >= 1:
            layers, body = self._encode_dense(v, seed, client, exp)
            return self._pack(d=d, layers=layers, body=body)
        sub = gather(v, *self._mask(d, self.bits, seed, client)).div_(self.bits)
        head = struct.pack("<Q", sub.numel())
        if sub.numel() == 0:
            return self._pack(d=d, layers=0, body=[head])
        layers, body = self._encode_dense(sub, seed, client, exp)
        return self._pack(d=d, layers=layers, body=[head, *body])

    def _encode_dense(
        self, v: torch.Tensor, seed: int, client: int, exp: int
    ) -> tuple[int, list[bytes]]:
        plan, layers, y = self.rotation.forward_(v, seed=seed, client=client)
        hi, n_hi = (
            self._mask(plan.padded, self._frac, seed, client)
            if self._frac
            else (None, 0)
        )
        fast = self._encode_fast(plan, y, exp, hi, n_hi)
        if fast is not None:
            return layers, fast
        codes = torch.empty(plan.padded, dtype=torch.int64, device=self.device)
        scales = []
        cent_lo, bnd_lo = self._tables[self._lo]
        cent_hi, bnd_hi = self._tables[self._hi]
        code_views = piece_views(codes, plan)
        hi_views = piece_views(hi, plan) if hi is not None else [None] * len(code_views)
        for view, cview, hview in zip(
            piece_views(y, plan), code_views, hi_views, strict=True
        ):
            norm2 = _pieces.row_norms2(view)
            z = _pieces.normalize_rows(view, norm2)
            q = torch.bucketize(z, bnd_lo)
            c = cent_lo[q]
            if hview is not None:
                q_hi = torch.bucketize(z, bnd_hi)
                q = torch.where(hview, q_hi, q)
                c = torch.where(hview, cent_hi[q_hi], c)
            cview.copy_(q)
            scales.append(_pieces.unbiasing_scale(norm2, row_sums(c * view)))
        body = [scale_bytes(torch.cat(scales), exp, "scale")]
        if hi is None:
            body.append(tensor_bytes(bitpack.pack(codes, self._lo)))
        else:
            body.insert(0, struct.pack("<Q", n_hi))
            body.append(tensor_bytes(bitpack.pack(codes[hi], self._hi)))
            body.append(tensor_bytes(bitpack.pack(codes[~hi], self._lo)))
        return layers, body

    def _encode_fast(
        self,
        plan: ChunkPlan,
        y: torch.Tensor,
        exp: int,
        hi: torch.Tensor | None,
        n_hi: int,
    ) -> list[bytes] | None:
        """Quantization with the fused kernels (None: unavailable).

        Same operations as the torch loop of :meth:`_encode_dense`: norms and dot
        products are torch reductions over the same tensors, the elementwise steps
        (normalize, bucketize, centroid lookup, the ceil/floor choice by the mask
        ``hi`` of fractional budgets, product) are fused, and the two code streams
        of a fractional budget are packed in one pass.
        """
        if not _kernels.available():
            return None
        low, high = self._tables[self._lo][::-1], self._tables[self._hi][::-1]
        codes = torch.empty(plan.padded, dtype=torch.uint8, device=self.device)
        prod = torch.empty_like(y)  # squares, then centroid * y
        scales = []
        hi_views = piece_views(hi, plan) if hi is not None else None
        for i, (view, cview, pview) in enumerate(
            zip(
                piece_views(y, plan),
                piece_views(codes, plan),
                piece_views(prod, plan),
                strict=True,
            )
        ):
            norm2 = _pieces.row_norms2(view, pview)
            factor = _pieces.row_factors(view, norm2)
            if hi_views is None:
                done = _kernels.eden_quantize_(view, factor, *low, cview, pview)
            else:
                done = _kernels.eden_quantize2_(
                    view, factor, hi_views[i], low, high, cview, pview
                )
            if not done:
                return None
            scales.append(_pieces.unbiasing_scale(norm2, row_sums(pview)))
        body = [scale_bytes(torch.cat(scales), exp, "scale")]
        if hi is None:
            return [*body, tensor_bytes(bitpack.pack(codes, self._lo))]
        split = _kernels.pack_split(codes, hi, n_hi, self._hi, self._lo)
        if split is None:
            return None
        return [struct.pack("<Q", n_hi), *body, *map(tensor_bytes, split)]

    # ------------------------------------------------------------------ decode
    def _check_layers(self, header: wire.Header) -> None:
        # a sub-bit payload that keeps nothing declares no rotation (see _parse)
        self.rotation.check(header.chunk_log2, header.rotations, empty_ok=self.bits < 1)

    def _parse(self, header: wire.Header, reader: wire.Reader) -> tuple[int, Any]:
        """(number of kept coordinates, dense sections or None when none is kept)."""
        d, layers = header.d, header.rotations
        if self.bits >= 1:
            return d, self._parse_dense(d, layers, reader)
        m = reader.u64()
        _check_plausible_count(m, d, self.bits, "kept")
        if (m == 0) != (layers == 0):
            raise PayloadError(
                f"Payload keeps {m} coordinate(s) but declares {layers} RHT layer(s)."
            )
        if m == 0:
            reader.expect_remaining(0, "an empty selection")
            return 0, None
        return m, self._parse_dense(m, layers, reader)

    def _parse_dense(self, n: int, layers: int, reader: wire.Reader) -> _Dense:
        plan = self.rotation.plan(n)
        n_hi = 0
        if self._frac:
            n_hi = reader.u64()
            _check_plausible_count(n_hi, plan.padded, self._frac, "ceil-bit")
        reader.expect_remaining(
            4 * plan.num_pieces + self._code_bytes(plan.padded, n_hi),
            "scales and codes",
        )
        scales = read_f32(reader, plan.num_pieces, self.device)
        return plan, layers, n_hi, scales, reader.rest()

    def _decode(
        self, header: wire.Header, parsed: tuple[int, Any], seed: int, client: int
    ) -> torch.Tensor:
        m, dense = parsed
        if self.bits >= 1:
            return self._decode_dense(dense, seed, client)
        if m == 0:
            return torch.zeros(header.d, dtype=torch.float32, device=self.device)
        keep, kept = self._mask(header.d, self.bits, seed, client)
        if kept != m:
            raise PayloadError(
                "Payload's kept-coordinate count does not match the mask regenerated "
                "from (seed, client): wrong seed/client id or a corrupt payload."
            )
        return scatter(self._decode_dense(dense, seed, client), keep)

    def _decode_dense(self, dense: _Dense, seed: int, client: int) -> torch.Tensor:
        plan, layers, n_hi, scales, raw_view = dense
        raw = read_tensor(raw_view, torch.uint8, self.device)
        cent_lo = self._tables[self._lo][0]
        if not self._frac:
            return _pieces.dequantize(
                self.rotation,
                plan,
                layers,
                raw,
                width=self._lo,
                table=cent_lo,
                scales=scales,
                seed=seed,
                client=client,
            )
        hi, count = self._mask(plan.padded, self._frac, seed, client)
        if count != n_hi:
            raise PayloadError(
                "Payload's ceil-bit count does not match the mask regenerated from "
                "(seed, client): wrong seed/client id or a corrupt payload."
            )
        split = bitpack.packed_size(n_hi, self._hi)
        cent_hi = self._tables[self._hi][0]
        c = _kernels.dequantize_split(
            raw[:split], self._hi, cent_hi, raw[split:], self._lo, cent_lo, hi
        )
        if c is None:
            c = torch.empty(plan.padded, dtype=torch.float32, device=self.device)
            c[hi] = cent_hi[bitpack.unpack(raw[:split], n_hi, self._hi)]
            c[~hi] = cent_lo[bitpack.unpack(raw[split:], plan.padded - n_hi, self._lo)]
        scales, exp = rescaled(scales)
        rotated = Rotated(plan, layers, c)
        return _pieces.scaled_inverse(
            self.rotation, rotated, scales, exp, seed=seed, client=client
        )

    def _aggregate(
        self, payloads: Payloads, seed: int, clients: list[int], weights: torch.Tensor
    ) -> torch.Tensor:
        """Integer-bit payloads are decoded piece by piece into one running sum
        (:func:`fedrot.codecs._pieces.streamed_sum`); others one by one."""
        parts = [self._dequantizable(parsed) for _, parsed in payloads]
        out = _pieces.streamed_sum(
            self.rotation, parts, seed=seed, clients=clients, weights=weights.tolist()
        )
        if out is not None:
            return out
        return super()._aggregate(payloads, seed, clients, weights)

    def _dequantizable(self, parsed: tuple[int, Any]) -> _pieces.Dequantizable | None:
        if self.bits < 1 or self._frac:
            return None
        plan, layers, _, scales, raw_view = parsed[1]
        raw = read_tensor(raw_view, torch.uint8, self.device)
        table = self._tables[self._lo][0]
        return _pieces.Dequantizable(plan, layers, raw, self._lo, table, scales)

    # ------------------------------------------------------------------- sizes
    def _body_sizes(self, d: int) -> tuple[int, int]:
        head, n = 0, d
        if self.bits < 1:  # the kept count, then EDEN on about bits * d values
            head, n = 8, max(1, round(self.bits * d))
        plan = self.rotation.plan(n)
        if self._frac:
            head += 8
        codes = self._code_bytes(plan.padded, round(self._frac * plan.padded))
        return head + 4 * plan.num_pieces + codes, codes


def _check_plausible_count(m: int, n: int, p: float, what: str) -> None:
    """A count of a shared-seed mask (Binomial(n, p)) more than 12 standard
    deviations off is corrupt (a genuine one is, with probability 1 - 1e-32).

    For the kept count this bounds the allocation of size d by the payload length,
    which carries about p*d/8 bytes of codes.
    """
    sd = math.sqrt(n * p * (1 - p))
    if m > n or abs(m - p * n) > 12 * sd + 12:
        raise PayloadError(
            f"Payload declares {m} {what} coordinates out of {n} at probability "
            f"{p:g}; that is impossible for a genuine payload."
        )
