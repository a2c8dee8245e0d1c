"""signSGD with a magnitude scale: one sign bit per coordinate and mean |x|.

Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
Non-Convex Problems", ICML 2018, https://arxiv.org/abs/1802.04434 (the scaled variant
``||x||_1 / d * sign(x)`` as in Karimireddy et al., "Error Feedback Fixes SignSGD",
ICML 2019). Biased: use it with error feedback.

Client: send ``sign(x_i)`` (bit 1 = negative; sign(0) = +1) and ``S = ||x||_1 / d``.
Server: ``x_hat_i = S * sign_i``. vNMSE = 1 - ||x||_1^2 / (d ||x||_2^2)
(Gaussian: 1 - 2/pi = 0.3634).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import bitpack, wire
from ._scaling import decode_exponent, mul_pow2_, restore, unscale
from .base import Codec, read_f32, read_tensor, tensor_bytes

__all__ = ["SignSGDCodec"]


class SignSGDCodec(Codec):
    """Signs plus the mean magnitude, no rotation."""

    name = "signsgd"
    codec_id = 10
    prescales = True
    unbiased = False
    rotates = False

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        super().__init__(device=device)

    def params(self) -> dict[str, Any]:
        return {}

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        scale = unscale(v.abs().mean().reshape(1), exp, "mean magnitude")
        body = [tensor_bytes(scale), tensor_bytes(bitpack.pack(v < 0, 1))]
        return self._pack(d=v.numel(), rotations=0, body=body)

    def _parse(
        self, header: wire.Header, reader: wire.Reader
    ) -> tuple[torch.Tensor, memoryview]:
        reader.expect_remaining(4 + bitpack.packed_size(header.d, 1), "scale and signs")
        return read_f32(reader, 1, self.device), reader.rest()

    def _decode(
        self,
        header: wire.Header,
        parsed: tuple[torch.Tensor, memoryview],
        seed: int,
        client: int,
    ) -> torch.Tensor:
        scale = parsed[0].clone()
        exp = decode_exponent(scale)
        mul_pow2_(scale, exp)
        raw = read_tensor(parsed[1], torch.uint8, self.device)
        signs = 1.0 - 2.0 * bitpack.unpack(raw, header.d, 1).to(torch.float32)
        return restore(signs * scale, exp)

    def _expected_vnmse(self) -> float:
        return 0.3633802276324186  # 1 - 2/pi for Gaussian input

    def _sizes(self, d: int) -> tuple[int, int]:
        codes = bitpack.packed_size(d, 1)
        return wire.FIXED_BYTES + 4 + codes, codes
