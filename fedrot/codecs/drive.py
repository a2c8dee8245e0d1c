"""DRIVE: one bit per coordinate of the rotated vector plus one scale per piece.

Vargaftik et al., "DRIVE: One-bit Distributed Mean Estimation", NeurIPS 2021,
https://arxiv.org/abs/2105.08339.

Client, per power-of-two piece of D coordinates:
  1. rotate with the client's own k-RHT stack: ``y = R(x_p)``;
  2. send the sign bits ``q = sign(y)`` (sign(0) = +1; bit 1 means negative);
  3. send one float32 scale: ``S = ||y||_2^2 / ||y||_1`` (``scale="unbiased"``, the
     default: unbiased under a uniform random rotation, vNMSE -> pi/2 - 1 = 0.5708) or
     ``S = ||y||_1 / D`` (``scale="biased"``: minimizes this vector's error, vNMSE =
     (1 - 2/pi)(1 - 1/D) = 0.3634, but shrinks the mean by about 2/pi).
Server: ``x_hat = R^{-1}(S * q)[:d]``, inverted in reverse order.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch

from .. import bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE, ChunkPlan, plan_chunks
from ..rotation import piece_views
from . import _rotated as rot
from ._scaling import decode_exponent, mul_pow2_, restore, unscale
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["DriveCodec"]

_SCALES = ("unbiased", "biased")


class DriveCodec(Codec):
    """1-bit DRIVE with the unbiased or the MSE-minimizing (biased) scale."""

    name = "drive"
    codec_id = 2
    prescales = True

    def __init__(
        self,
        *,
        scale: str = "unbiased",
        rotations: int | str = 2,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(device=device)
        if scale not in _SCALES:
            raise ValueError(
                f"`scale` must be one of {list(_SCALES)}. Found {scale!r}."
            )
        self.scale = scale
        #: only the unbiased scale gives an unbiased estimate
        self.unbiased = scale == "unbiased"
        #: decoded value of a sign bit: 0 -> +1, 1 -> -1 (== 1 - 2 * bit)
        self._pm1 = torch.tensor([1.0, -1.0], device=self.device)
        self.rotations = rot.check_rotations(rotations)
        self.chunk_log2 = rot.check_chunk_size(chunk_size)

    def params(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "rotations": self.rotations,
            "chunk_size": 1 << self.chunk_log2,
        }

    def _param_block(self) -> bytes:
        return struct.pack("<B", _SCALES.index(self.scale)) + rot.rotation_params(
            self.rotations
        )

    def _chunk_log2(self) -> int:
        return self.chunk_log2

    def _expected_vnmse(self) -> float:
        return math.pi / 2 - 1 if self.scale == "unbiased" else 1 - 2 / math.pi

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        plan, k, y = rot.forward_(
            v,
            chunk_log2=self.chunk_log2,
            rotations=self.rotations,
            seed=seed,
            client=client,
        )
        scales = []
        scratch = torch.empty_like(y)
        for view, tmp in zip(
            piece_views(y, plan), piece_views(scratch, plan), strict=True
        ):
            l1 = torch.abs(view, out=tmp).sum(dim=1)
            if self.scale == "unbiased":
                n2 = rot.row_norms2(view, tmp)
                s = torch.where(l1 > 0, n2 / l1, torch.zeros_like(l1))
            else:
                s = l1 / view.shape[1]
            scales.append(s)
        bits = bitpack.pack(y < 0, 1)
        body = [
            tensor_bytes(unscale(torch.cat(scales), exp, "scale")),
            tensor_bytes(bits),
        ]
        return self._pack(d=v.numel(), rotations=k, body=body)

    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[ChunkPlan, torch.Tensor, memoryview]:
        rot.check_k(header.rotations, self.rotations, (1, 2))
        plan = plan_chunks(header.d, self.chunk_log2)
        reader.expect_remaining(
            4 * plan.num_pieces + bitpack.packed_size(plan.padded, 1),
            "scales and signs",
        )
        return plan, read_f32(reader, plan.num_pieces, self.device), reader.rest()

    def _decode(
        self,
        header: wire.Header,
        parsed: tuple[ChunkPlan, torch.Tensor, memoryview],
        seed: int,
        client: int,
    ) -> torch.Tensor:
        plan, scales, raw_view = parsed
        exp = decode_exponent(scales)
        if exp:
            scales = mul_pow2_(scales.clone(), exp)
        raw = read_tensor(raw_view, torch.uint8, self.device)
        q = torch.empty(plan.padded, dtype=torch.float32, device=self.device)
        if rot.dequantize_pieces_(q, plan, raw, 1, self._pm1, scales):
            out = rot.inverse_(q, plan, header.rotations, seed=seed, client=client)
            return restore(out, exp)
        q = 1.0 - 2.0 * bitpack.unpack(raw, plan.padded, 1).to(torch.float32)
        rot.scale_pieces_(q, plan, scales)
        out = rot.inverse(q, plan, header.rotations, seed=seed, client=client)
        return restore(out, exp)

    def _sizes(self, d: int) -> tuple[int, int]:
        plan = plan_chunks(d, self.chunk_log2)
        codes = bitpack.packed_size(plan.padded, 1)
        fixed = wire.FIXED_BYTES + len(self._param_block())
        return fixed + 4 * plan.num_pieces + codes, codes
