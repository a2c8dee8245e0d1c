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

from typing import Any

import torch

from .. import bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE
from ..reductions import row_sums
from ..rotation import piece_views
from ..tables.vq import CONFIGS, codebook, nearest
from . import _pieces
from ._io import ScalesAndCodes, read_tensor, tensor_bytes
from ._params import Field, ParamLayout
from ._rotation import MODE_FIELD, Rotated, Rotation
from ._scaling import rescaled, scale_bytes
from .base import Codec

__all__ = ["VQCodec"]


class VQCodec(Codec):
    """Block VQ (block 2 or 4) with an unbiasing scale, on 3 RHTs by default."""

    name = "vq"
    codec_id = 12
    prescales = True
    layout = ParamLayout(
        (
            Field("block", "B"),
            Field("bits", "B"),
            MODE_FIELD,
            Field("codebook", "I", show=lambda crc: f"CRC {crc:#010x}"),
        )
    )
    rotation: Rotation

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
        self.rotation = Rotation(
            rotations, chunk_size, auto=(2, 3), modes=(2, 3, "auto")
        )
        self.book = codebook(block, bits)
        self._codewords = torch.tensor(
            self.book.codewords, dtype=torch.float32, device=self.device
        )

    def params(self) -> dict[str, Any]:
        return {"bits": self.bits, "block": self.block, **self.rotation.params()}

    def _param_values(self) -> dict[str, Any]:
        return {**self.params(), "codebook": self.book.crc}

    def _expected_vnmse(self) -> float:
        return self.book.vnmse

    def _index_bytes(self, padded: int) -> int:
        blocks = -(-padded // self.block)
        return bitpack.packed_size(blocks, self.block * self.bits)

    def _body_sizes(self, d: int) -> tuple[int, int]:
        plan = self.rotation.plan(d)
        codes = self._index_bytes(plan.padded)
        return 4 * plan.num_pieces + codes, codes

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        plan, layers, y = self.rotation.forward(v, seed=seed, client=client)
        m = self.block
        blocks = -(-plan.padded // m)
        z = y.new_zeros(blocks * m)
        norms2 = []
        for view, zview in zip(piece_views(y, plan), piece_views(z, plan), strict=True):
            n2 = _pieces.row_norms2(view)
            zview.copy_(_pieces.normalize_rows(view, n2))
            norms2.append(n2)
        idx = nearest(z.view(blocks, m), self._codewords)
        c = self._codewords[idx].reshape(-1)[: plan.padded]
        scales = [
            _pieces.unbiasing_scale(n2, row_sums(cview * view))
            for view, cview, n2 in zip(
                piece_views(y, plan), piece_views(c, plan), norms2, strict=True
            )
        ]
        body = [
            scale_bytes(torch.cat(scales), exp, "scale"),
            tensor_bytes(bitpack.pack(idx, m * self.bits)),
        ]
        return self._pack(d=v.numel(), layers=layers, body=body)

    def _decode(
        self, header: wire.Header, parsed: ScalesAndCodes, seed: int, client: int
    ) -> torch.Tensor:
        plan = self.rotation.plan(header.d)
        scales, exp = rescaled(parsed[0])
        raw = parsed[1]
        blocks = -(-plan.padded // self.block)
        packed = read_tensor(raw, torch.uint8, self.device)
        idx = bitpack.unpack(packed, blocks, self.block * self.bits)
        c = self._codewords[idx].reshape(-1)[: plan.padded].clone()
        rotated = Rotated(plan, header.rotations, c)
        return _pieces.scaled_inverse(
            self.rotation, rotated, scales, exp, seed=seed, client=client
        )
