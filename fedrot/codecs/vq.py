"""VQ: block vector quantization of the rotated, normalized vector (3 RHTs by default).

Codebooks: Lloyd/k-means for i.i.d. N(0, I_m) blocks, trained by this project
(:mod:`fedrot.vq_codebooks`). Why three RHTs: two make every coordinate's marginal
Gaussian but not blocks independent; for ``x = (e_0 + e_1)/sqrt(2)`` every pair after
two RHTs is ``(g, ±g)``, which a codebook for i.i.d. pairs quantizes badly. Three
RHTs give decaying covariance across blocks (Ben-Basat et al., "Quantizing With
Randomized Hadamard Transforms", https://arxiv.org/abs/2605.06014). One RHT is never
allowed: even a dense input (x_i = 1, 0.1 alternating) breaks 1-RHT VQ.

Client, per power-of-two piece of ``D`` coordinates (see :mod:`fedrot.chunking`):
  1. rotate with the client's own k-RHT stack (k = 3, 2, or "auto" = 2 or 3 by the
     moment check): ``y = R(x_p)``;
  2. normalize: ``z = sqrt(D) * y / ||y||``;
  3. cut the whole padded ``z`` into blocks of m coordinates (the last block is
     zero-filled if m does not divide the padded length) and send the index of the
     nearest codeword of each block, ``m b`` bits per block;
  4. per piece, EDEN's unbiasing scale ``S = ||y||^2 / <c, y>`` (float32; 0 if
     ``<c, y> <= 0``, possible only for pieces shorter than a few coordinates), which
     makes the estimate unbiased under a uniform random rotation.
Server: ``x_hat = R^{-1}(S * c)[:d]``, inverted in reverse order.

Payload (bytes; ``P`` = padded length, ``n_p`` = pieces, ``B = ceil(P / m)``)::

    20 (envelope) + 7 (parameters) + 4 n_p (scales) + ceil(B m b / 8) (indices)

i.e. about ``b`` bits per coordinate plus 32 bits per piece.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import torch

from .. import bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE, ChunkPlan, plan_chunks
from ..rotation import piece_views
from ..tables.vq import CONFIGS, codebook, nearest
from . import _rotated as rot
from ._scaling import decode_exponent, mul_pow2_, restore, unscale
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["VQCodec"]

_ROTATIONS = (2, 3, "auto")


class VQCodec(Codec):
    """Block VQ (block 2 or 4) with an unbiasing scale, on 3 RHTs by default."""

    name = "vq"
    codec_id = 12
    prescales = True
    unbiased = True

    def __init__(
        self,
        *,
        bits: int = 2,
        block: int = 2,
        rotations: int | str = 3,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(device=device)
        if (
            (block, bits) not in CONFIGS
            or isinstance(bits, bool)
            or isinstance(block, bool)
        ):
            raise ValueError(
                "(`block`, `bits`) must be one of the shipped codebooks "
                f"{list(CONFIGS)}. Found ({block!r}, {bits!r})."
            )
        if rotations == 1:
            raise ValueError(
                "`rotations` must be 2, 3 or 'auto' for VQ. Found 1: one RHT leaves "
                "neighbouring coordinates correlated even for dense inputs, which "
                "breaks block quantization (use 3, the default)."
            )
        self.bits, self.block = bits, block
        self.rotations = rot.check_rotations(rotations, allowed=_ROTATIONS)
        self.chunk_log2 = rot.check_chunk_size(chunk_size)
        self.book = codebook(block, bits)
        self._codewords = torch.tensor(
            self.book.codewords, dtype=torch.float32, device=self.device
        )
        raw = np.ascontiguousarray(self.book.codewords, dtype="<f8").tobytes()
        self._crc = zlib.crc32(raw)

    def params(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "block": self.block,
            "rotations": self.rotations,
            "chunk_size": 1 << self.chunk_log2,
        }

    def _param_block(self) -> bytes:
        return struct.pack(
            "<BBBI", self.block, self.bits, rot.rotation_code(self.rotations), self._crc
        )

    def _chunk_log2(self) -> int:
        return self.chunk_log2

    def _expected_vnmse(self) -> float:
        return self.book.vnmse

    def _index_bytes(self, padded: int) -> int:
        blocks = -(-padded // self.block)
        return bitpack.packed_size(blocks, self.block * self.bits)

    def _sizes(self, d: int) -> tuple[int, int]:
        plan = plan_chunks(d, self.chunk_log2)
        codes = self._index_bytes(plan.padded)
        fixed = wire.FIXED_BYTES + len(self._param_block())
        return fixed + 4 * plan.num_pieces + codes, codes

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        plan, k, y = rot.forward(
            v,
            chunk_log2=self.chunk_log2,
            rotations=self.rotations,
            seed=seed,
            client=client,
            auto=(2, 3),
        )
        m = self.block
        blocks = -(-plan.padded // m)
        z = y.new_zeros(blocks * m)
        norms2 = []
        for view, zview in zip(piece_views(y, plan), piece_views(z, plan), strict=True):
            n2 = rot.row_norms2(view)
            zview.copy_(rot.normalize_rows(view, n2))
            norms2.append(n2)
        idx = nearest(z.view(blocks, m), self._codewords)
        c = self._codewords[idx].reshape(-1)[: plan.padded]
        scales = []
        for view, cview, n2 in zip(
            piece_views(y, plan), piece_views(c, plan), norms2, strict=True
        ):
            dot = (cview * view).sum(dim=1)
            ok = (n2 > 0) & (dot > 0)
            scales.append(torch.where(ok, n2 / torch.where(ok, dot, 1.0), 0.0))
        body = [
            tensor_bytes(unscale(torch.cat(scales), exp, "scale")),
            tensor_bytes(bitpack.pack(idx, m * self.bits)),
        ]
        return self._pack(d=v.numel(), rotations=k, body=body)

    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[ChunkPlan, torch.Tensor, memoryview]:
        rot.check_k(header.rotations, self.rotations, (2, 3))
        plan = plan_chunks(header.d, self.chunk_log2)
        reader.expect_remaining(
            4 * plan.num_pieces + self._index_bytes(plan.padded), "scales and indices"
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
        blocks = -(-plan.padded // self.block)
        idx = bitpack.unpack(raw, blocks, self.block * self.bits)
        c = self._codewords[idx].reshape(-1)[: plan.padded].clone()
        rot.scale_pieces_(c, plan, scales)
        out = rot.inverse(c, plan, header.rotations, seed=seed, client=client)
        return restore(out, exp)
