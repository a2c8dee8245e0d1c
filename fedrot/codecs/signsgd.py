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

import torch

from .. import bitpack, wire
from ..reductions import one_thread_for
from ._io import ScalesAndCodes, tensor_bytes
from ._scaling import scale_bytes, scaled_values
from .base import Codec

__all__ = ["SignSGDCodec"]


class SignSGDCodec(Codec):
    """Signs plus the mean magnitude, no rotation."""

    name = "signsgd"
    codec_id = 10
    prescales = True
    unbiased = False

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        with one_thread_for(v):  # the same mean for any torch thread count
            mean = v.abs().mean()
        scale = scale_bytes(mean.reshape(1), exp, "mean magnitude")
        body = [scale, tensor_bytes(bitpack.pack(v < 0, 1))]
        return self._pack(d=v.numel(), layers=0, body=body)

    def _decode(
        self, header: wire.Header, parsed: ScalesAndCodes, seed: int, client: int
    ) -> torch.Tensor:
        def signs(raw: torch.Tensor) -> torch.Tensor:
            return 1.0 - 2.0 * bitpack.unpack(raw, header.d, 1).to(torch.float32)

        return scaled_values(parsed, self.device, signs)

    def _expected_vnmse(self) -> float:
        return 0.3633802276324186  # 1 - 2/pi for Gaussian input

    def _body_sizes(self, d: int) -> tuple[int, int]:
        return 4 + bitpack.packed_size(d, 1), bitpack.packed_size(d, 1)
