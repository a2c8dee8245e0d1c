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
from typing import Any

import torch

from .. import bitpack, wire
from ..chunking import DEFAULT_CHUNK_SIZE
from ..reductions import row_sums
from ..rotation import piece_views
from . import _pieces
from ._io import ScalesAndCodes, read_tensor, tensor_bytes
from ._params import Field, ParamLayout
from ._rotation import MODE_FIELD, Rotation
from ._scaling import scale_bytes
from .base import Codec, Payloads

__all__ = ["DriveCodec"]

_SCALES = ("unbiased", "biased")


class DriveCodec(Codec):
    """1-bit DRIVE with the unbiased or the MSE-minimizing (biased) scale."""

    name = "drive"
    codec_id = 2
    prescales = True
    layout = ParamLayout(
        (
            Field("scale", "B", to_wire=_SCALES.index, from_wire=_SCALES.__getitem__),
            MODE_FIELD,
        )
    )
    rotation: Rotation

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
        self.rotation = Rotation(rotations, chunk_size)
        #: decoded value of a sign bit: 0 -> +1, 1 -> -1 (== 1 - 2 * bit)
        self._pm1 = torch.tensor([1.0, -1.0], device=self.device)

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale, **self.rotation.params()}

    def _expected_vnmse(self) -> float:
        return math.pi / 2 - 1 if self.unbiased else 1 - 2 / math.pi

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        plan, layers, y = self.rotation.forward_(v, seed=seed, client=client)
        scales = []
        scratch = torch.empty_like(y)
        for view, tmp in zip(
            piece_views(y, plan), piece_views(scratch, plan), strict=True
        ):
            l1 = row_sums(torch.abs(view, out=tmp))
            if self.unbiased:
                n2 = _pieces.row_norms2(view, tmp)
                s = torch.where(l1 > 0, n2 / l1, torch.zeros_like(l1))
            else:
                s = l1 / view.shape[1]
            scales.append(s)
        body = [
            scale_bytes(torch.cat(scales), exp, "scale"),
            tensor_bytes(bitpack.pack(y < 0, 1)),
        ]
        return self._pack(d=v.numel(), layers=layers, body=body)

    def _decode(
        self, header: wire.Header, parsed: ScalesAndCodes, seed: int, client: int
    ) -> torch.Tensor:
        scales, raw = parsed
        return _pieces.dequantize(
            self.rotation,
            self.rotation.plan(header.d),
            header.rotations,
            read_tensor(raw, torch.uint8, self.device),
            width=1,
            table=self._pm1,
            scales=scales,
            seed=seed,
            client=client,
        )

    def _aggregate(
        self, payloads: Payloads, seed: int, clients: list[int], weights: torch.Tensor
    ) -> torch.Tensor:
        """Payloads decoded piece by piece into one running sum
        (:func:`fedrot.codecs._pieces.streamed_sum`) when the kernels run."""
        parts = [
            _pieces.Dequantizable(
                self.rotation.plan(header.d),
                header.rotations,
                read_tensor(parsed[1], torch.uint8, self.device),
                1,
                self._pm1,
                parsed[0],
            )
            for header, parsed in payloads
        ]
        out = _pieces.streamed_sum(
            self.rotation, parts, seed=seed, clients=clients, weights=weights.tolist()
        )
        if out is not None:
            return out
        return super()._aggregate(payloads, seed, clients, weights)

    def _body_sizes(self, d: int) -> tuple[int, int]:
        plan = self.rotation.plan(d)
        codes = bitpack.packed_size(plan.padded, 1)
        return 4 * plan.num_pieces + codes, codes
