"""Uncompressed reference codecs: ``"fp32"`` (exact) and ``"fp16"`` (half precision).

``fp32`` sends the float32 values themselves (4 bytes per coordinate) and decodes them
bit for bit: it is the reference path that every lossy codec is compared against.
``fp16`` rounds to IEEE half precision (2 bytes per coordinate); values beyond the
half range (|x| > 65504) are rejected with a ValueError rather than sent as infinity.
Small values keep half precision's absolute resolution: below 6.1e-5 (fp16 subnormals)
the spacing is 6e-8, and values below 3e-8 round to zero, as any cast to float16 does.
"""

from __future__ import annotations

import torch

from .. import wire
from ..errors import PayloadError
from ._io import ScalesAndCodes, read_tensor, tensor_bytes
from .base import Codec

__all__ = ["Fp32Codec", "Fp16Codec"]

_FP16_MAX = 65504.0
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# The methods both classes share: the values themselves, in the codec's dtype.
def _encode_values(
    codec: Codec, v: torch.Tensor, seed: int, client: int, exp: int
) -> bytes:
    values = tensor_bytes(v.to(_DTYPES[codec.name]))
    return codec._pack(d=v.numel(), layers=0, body=[values])


def _decode_values(
    codec: Codec, header: wire.Header, parsed: ScalesAndCodes, seed: int, client: int
) -> torch.Tensor:
    out = read_tensor(parsed[1], _DTYPES[codec.name], codec.device)
    if not bool(torch.isfinite(out).all()):
        raise PayloadError("Payload corrupt: it holds NaN or infinite values.")
    return out.to(torch.float32)


def _values_sizes(codec: Codec, d: int) -> tuple[int, int]:
    size = _DTYPES[codec.name].itemsize * d
    return size, size


class Fp32Codec(Codec):
    """Lossless float32: the exact reference path."""

    name = "fp32"
    codec_id = 1
    lossless = True

    _encode = _encode_values
    _decode = _decode_values
    _body_sizes = _values_sizes

    def _expected_vnmse(self) -> float:
        return 0.0


class Fp16Codec(Codec):
    """IEEE half precision: round-to-nearest, relative error about 2**-11 per value."""

    name = "fp16"
    codec_id = 4
    unbiased = False

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        big = float(v.abs().max())
        if big > _FP16_MAX:
            raise ValueError(
                f"`x` has a value of magnitude {big:g}, beyond float16's range "
                f"(±{_FP16_MAX:g}); use codec 'fp32' or scale the update down."
            )
        return _encode_values(self, v, seed, client, exp)

    _decode = _decode_values
    _body_sizes = _values_sizes
