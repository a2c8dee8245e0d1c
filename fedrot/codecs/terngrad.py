"""TernGrad: stochastic ternarization ``s * sign(g_i) * Bernoulli(|g_i| / s)``.

Wen et al., "TernGrad: Ternary Gradients to Reduce Communication in Distributed Deep
Learning", NeurIPS 2017, https://arxiv.org/abs/1705.07878.

Client (no rotation):
  1. optionally clip to ``±clip * std(g)`` (the paper uses clip = 2.5; clipping makes
     the estimate biased, ``clip=None``, the default, keeps it unbiased);
  2. ``s = max |g_i|``;
  3. ``t_i = sign(g_i) * [u_i < |g_i| / s]`` with client-private uniforms u;
  4. send the trits five per byte (1.6 bits/coordinate) and s as float32.
Server: ``g_hat_i = s * t_i``. Unclipped vNMSE = ``||g||_inf ||g||_1 / ||g||_2^2 - 1``.
"""

from __future__ import annotations

import struct
from typing import Any

import torch

from .. import bitpack, wire
from ..errors import PayloadError
from ..seeds import Stream, derive_seed, uniforms_torch
from ._scaling import decode_exponent, mul_pow2_, restore, unscale
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["TernGradCodec"]


class TernGradCodec(Codec):
    """Ternary quantization with a max-magnitude scale."""

    name = "terngrad"
    rotates = False
    codec_id = 7
    prescales = True

    def __init__(
        self, *, clip: float | None = None, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(device=device)
        if clip is not None:
            if (
                isinstance(clip, bool)
                or not isinstance(clip, (int, float))
                or not clip > 0
            ):
                raise ValueError(
                    f"`clip` must be None or a number > 0. Found {clip!r}."
                )
            clip = float(clip)
        self.clip = clip
        #: clipping makes the estimate biased
        self.unbiased = clip is None

    def params(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def _param_block(self) -> bytes:
        return struct.pack("<d", 0.0 if self.clip is None else self.clip)

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        if self.clip is not None and v.numel() > 1:
            bound = self.clip * float(v.std())
            v = v.clamp(-bound, bound)
        s = v.abs().max()
        inv = 1.0 / s if float(s) > 0 else torch.zeros_like(s)
        u = uniforms_torch(
            derive_seed(seed, client, Stream.PRIVATE), v.numel(), device=self.device
        )
        keep = (u < v.abs() * inv).to(torch.int64)
        trits = 1 + keep * torch.sign(v).to(torch.int64)
        body = [
            tensor_bytes(unscale(s.reshape(1), exp, "max magnitude")),
            tensor_bytes(bitpack.pack_trits(trits)),
        ]
        return self._pack(d=v.numel(), rotations=0, body=body)

    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[torch.Tensor, memoryview]:
        reader.expect_remaining(4 + bitpack.trit_size(header.d), "scale and trits")
        return read_f32(reader, 1, self.device), reader.rest()

    def _decode(
        self,
        header: wire.Header,
        parsed: tuple[torch.Tensor, memoryview],
        seed: int,
        client: int,
    ) -> torch.Tensor:
        s = parsed[0].clone()
        exp = decode_exponent(s)
        mul_pow2_(s, exp)
        raw = read_tensor(parsed[1], torch.uint8, self.device)
        if bool((raw > 242).any()):
            raise PayloadError("Payload corrupt: a trit byte exceeds 242 (3**5 - 1).")
        trits = bitpack.unpack_trits(raw, header.d)
        return restore((trits - 1).to(torch.float32) * s, exp)

    def _sizes(self, d: int) -> tuple[int, int]:
        codes = bitpack.trit_size(d)
        return wire.FIXED_BYTES + len(self._param_block()) + 4 + codes, codes
