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

import torch

from .. import bitpack, wire
from ..errors import PayloadError
from ..seeds import Stream, derive_seed
from ._io import ScalesAndCodes, tensor_bytes
from ._params import Field, ParamLayout
from ._scaling import scale_bytes, scaled_values
from ._streams import uniforms
from .base import Codec

__all__ = ["TernGradCodec"]

#: ``clip`` as float64, 0.0 standing for None (no clipping).
_CLIP_FIELD = Field(
    "clip",
    "d",
    to_wire=lambda clip: 0.0 if clip is None else clip,
    from_wire=lambda raw: None if raw == 0.0 else raw,
)


class TernGradCodec(Codec):
    """Ternary quantization with a max-magnitude scale."""

    name = "terngrad"
    codec_id = 7
    prescales = True
    layout = ParamLayout((_CLIP_FIELD,))

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

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        if self.clip is not None and v.numel() > 1:
            bound = self.clip * float(v.std())
            v = v.clamp(-bound, bound)
        s = v.abs().max()
        inv = 1.0 / s if float(s) > 0 else torch.zeros_like(s)
        u = uniforms(derive_seed(seed, client, Stream.PRIVATE), v.numel(), self.device)
        keep = (u < v.abs() * inv).to(torch.int64)
        trits = 1 + keep * torch.sign(v).to(torch.int64)
        body = [
            scale_bytes(s.reshape(1), exp, "max magnitude"),
            tensor_bytes(bitpack.pack_trits(trits)),
        ]
        return self._pack(d=v.numel(), layers=0, body=body)

    def _decode(
        self, header: wire.Header, parsed: ScalesAndCodes, seed: int, client: int
    ) -> torch.Tensor:
        def ternary(raw: torch.Tensor) -> torch.Tensor:
            if bool((raw > 242).any()):
                raise PayloadError(
                    "Payload corrupt: a trit byte exceeds 242 (3**5 - 1)."
                )
            return (bitpack.unpack_trits(raw, header.d) - 1).to(torch.float32)

        return scaled_values(parsed, self.device, ternary)

    def _body_sizes(self, d: int) -> tuple[int, int]:
        return 4 + bitpack.trit_size(d), bitpack.trit_size(d)
