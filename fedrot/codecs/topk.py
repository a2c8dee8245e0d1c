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

import struct
from typing import Any

import torch

from .. import bitpack, wire
from ..errors import PayloadError
from . import _sparse
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["TopKCodec"]


class TopKCodec(Codec):
    """Keep the largest ``fraction`` of the coordinates (indices + float32 values)."""

    name = "topk"
    codec_id = 8
    unbiased = False
    rotates = False

    def __init__(
        self, *, fraction: float = 1 / 32, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(device=device)
        self.fraction = _sparse.check_fraction(fraction)

    def params(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def _param_block(self) -> bytes:
        return struct.pack("<d", self.fraction)

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        d = v.numel()
        k = _sparse.num_kept(self.fraction, d)
        idx = torch.topk(v.abs(), k, sorted=False).indices.sort().values
        body = [
            tensor_bytes(bitpack.pack(idx, _sparse.index_width(d))),
            tensor_bytes(v[idx]),
        ]
        return self._pack(d=d, rotations=0, body=body)

    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[memoryview, torch.Tensor]:
        d = header.d
        k = _sparse.num_kept(self.fraction, d)
        ibytes = bitpack.packed_size(k, _sparse.index_width(d))
        reader.expect_remaining(ibytes + 4 * k, "indices and values")
        return reader.take(ibytes), read_f32(reader, k, self.device)

    def _decode(
        self,
        header: wire.Header,
        parsed: tuple[memoryview, torch.Tensor],
        seed: int,
        client: int,
    ) -> torch.Tensor:
        d = header.d
        raw, values = parsed
        raw_t = read_tensor(raw, torch.uint8, self.device)
        idx = bitpack.unpack(raw_t, values.numel(), _sparse.index_width(d))
        if bool((idx >= d).any()) or bool((idx[1:] <= idx[:-1]).any()):
            raise PayloadError(
                "Payload corrupt: indices out of range or not increasing."
            )
        out = torch.zeros(d, dtype=torch.float32, device=self.device)
        out[idx] = values
        return out

    def _sizes(self, d: int) -> tuple[int, int]:
        k = _sparse.num_kept(self.fraction, d)
        codes = bitpack.packed_size(k, _sparse.index_width(d)) + 4 * k
        return wire.FIXED_BYTES + len(self._param_block()) + codes, codes
