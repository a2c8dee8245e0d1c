"""Rand-k sparsification: k shared-seed random coordinates, scaled by d/k (unbiased).

Konecny et al., "Federated Learning: Strategies for Improving Communication
Efficiency", 2016, https://arxiv.org/abs/1610.05492 (random mask, structured update).

Client and server both derive the same k = max(1, ceil(fraction * d)) indices from the
client's MASK stream: the k coordinates whose stream words, read as signed int64,
are smallest (all
distinct with overwhelming probability). Only the k float32 values travel.
Server: ``x_hat_i = (d / k) * x_i`` on the kept indices, 0 elsewhere.
vNMSE = d/k - 1 (31 at fraction = 1/32).
"""

from __future__ import annotations

import torch

from .. import wire
from ..seeds import Stream, derive_seed, words_torch
from . import _sparse
from ._io import read_f32, tensor_bytes
from ._params import ParamLayout
from .base import Codec

__all__ = ["RandKCodec"]


class RandKCodec(Codec):
    """Keep a random ``fraction`` of the coordinates, chosen from the shared seed."""

    name = "randk"
    codec_id = 9
    layout = ParamLayout((_sparse.FRACTION_FIELD,))
    fraction: float
    __init__ = _sparse.init  # keyword-only `fraction` and `device`

    def _indices(self, d: int, seed: int, client: int) -> torch.Tensor:
        k = _sparse.num_kept(self.fraction, d)
        keys = words_torch(
            derive_seed(seed, client, Stream.MASK), d, device=self.device
        )
        return torch.topk(keys, k, largest=False, sorted=False).indices.sort().values

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        idx = self._indices(v.numel(), seed, client)
        return self._pack(d=v.numel(), layers=0, body=[tensor_bytes(v[idx])])

    def _parse(self, header: wire.Header, reader: wire.Reader) -> torch.Tensor:
        k = _sparse.num_kept(self.fraction, header.d)
        reader.expect_remaining(4 * k, "values")
        return read_f32(reader, k, self.device)

    def _decode(
        self, header: wire.Header, parsed: torch.Tensor, seed: int, client: int
    ) -> torch.Tensor:
        d = header.d
        out = torch.zeros(d, dtype=torch.float32, device=self.device)
        out[self._indices(d, seed, client)] = parsed * (d / parsed.numel())
        return out

    def _body_sizes(self, d: int) -> tuple[int, int]:
        codes = 4 * _sparse.num_kept(self.fraction, d)
        return codes, codes
