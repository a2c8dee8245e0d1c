"""Top-k sparsification: send the k largest-magnitude coordinates exactly.

Aji & Heafield, "Sparse Communication for Distributed Gradient Descent", EMNLP 2017;
Stich, Cordonnier & Jaggi, "Sparsified SGD with Memory", NeurIPS 2018
(https://arxiv.org/abs/1809.07599). Biased: use it with error feedback.

Client: ``k = max(1, ceil(fraction * d))``; pick the k coordinates with the largest
|x_i|, sort their indices ascending and send them bit-packed with ``ceil(log2 d)``
bits each, followed by their float32 values. Server: zeros elsewhere.
vNMSE = energy outside the top k (Gaussian, k = d/32: about 0.80).
"""

from __future__ import annotations

import torch

from .. import bitpack, wire
from ..errors import PayloadError
from . import _sparse
from ._io import read_f32, read_tensor, tensor_bytes
from ._params import ParamLayout
from .base import Codec

__all__ = ["TopKCodec"]


class TopKCodec(Codec):
    """Keep the largest ``fraction`` of the coordinates (indices + float32 values)."""

    name = "topk"
    codec_id = 8
    unbiased = False
    layout = ParamLayout((_sparse.FRACTION_FIELD,))
    fraction: float
    __init__ = _sparse.init  # keyword-only `fraction` and `device`

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        d = v.numel()
        k = _sparse.num_kept(self.fraction, d)
        idx = torch.topk(v.abs(), k, sorted=False).indices.sort().values
        indices = bitpack.pack(idx, bitpack.index_width(d))
        body = [tensor_bytes(indices), tensor_bytes(v[idx])]
        return self._pack(d=d, layers=0, body=body)

    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[memoryview, torch.Tensor]:
        k = _sparse.num_kept(self.fraction, header.d)
        index_bytes = bitpack.packed_size(k, bitpack.index_width(header.d))
        reader.expect_remaining(index_bytes + 4 * k, "indices and values")
        return reader.take(index_bytes), read_f32(reader, k, self.device)

    def _decode(
        self,
        header: wire.Header,
        parsed: tuple[memoryview, torch.Tensor],
        seed: int,
        client: int,
    ) -> torch.Tensor:
        d = header.d
        raw, values = parsed
        packed = read_tensor(raw, torch.uint8, self.device)
        idx = bitpack.unpack(packed, values.numel(), bitpack.index_width(d))
        if bool((idx >= d).any()) or bool((idx[1:] <= idx[:-1]).any()):
            raise PayloadError(
                "Payload corrupt: indices out of range or not increasing."
            )
        out = torch.zeros(d, dtype=torch.float32, device=self.device)
        out[idx] = values
        return out

    def _body_sizes(self, d: int) -> tuple[int, int]:
        k = _sparse.num_kept(self.fraction, d)
        codes = bitpack.packed_size(k, bitpack.index_width(d)) + 4 * k
        return codes, codes
