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
from .base import Codec, read_tensor, tensor_bytes

__all__ = ["Fp32Codec", "Fp16Codec"]

_FP16_MAX = 65504.0


def _encode_raw(codec: Codec, v: torch.Tensor, dtype: torch.dtype) -> bytes:
    return codec._pack(d=v.numel(), rotations=0, body=[tensor_bytes(v.to(dtype))])


def _parse_raw(header: wire.Header, reader: wire.Reader, width: int) -> memoryview:
    reader.expect_remaining(width * header.d, "the values")
    return reader.rest()


def _decode_raw(codec: Codec, values: memoryview, dtype: torch.dtype) -> torch.Tensor:
    out = read_tensor(values, dtype, codec.device)
    if not bool(torch.isfinite(out).all()):
        raise PayloadError("Payload corrupt: it holds NaN or infinite values.")
    return out.to(torch.float32)


class Fp32Codec(Codec):
    """Lossless float32: the exact reference path."""

    name = "fp32"
    codec_id = 1
    lossless = True
    rotates = False

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        super().__init__(device=device)

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        return _encode_raw(self, v, torch.float32)

    def _parse(self, header: wire.Header, reader: wire.Reader) -> memoryview:
        return _parse_raw(header, reader, 4)

    def _decode(
        self, header: wire.Header, parsed: memoryview, seed: int, client: int
    ) -> torch.Tensor:
        return _decode_raw(self, parsed, torch.float32)

    def _sizes(self, d: int) -> tuple[int, int]:
        return wire.FIXED_BYTES + 4 * d, 4 * d

    def _expected_vnmse(self) -> float:
        return 0.0


class Fp16Codec(Codec):
    """IEEE half precision: round-to-nearest, relative error about 2**-11 per value."""

    name = "fp16"
    codec_id = 4
    rotates = False
    unbiased = False

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        super().__init__(device=device)

    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        big = float(v.abs().max())
        if big > _FP16_MAX:
            raise ValueError(
                f"`x` has a value of magnitude {big:g}, beyond float16's range "
                f"(±{_FP16_MAX:g}); use codec 'fp32' or scale the update down."
            )
        return _encode_raw(self, v, torch.float16)

    def _parse(self, header: wire.Header, reader: wire.Reader) -> memoryview:
        return _parse_raw(header, reader, 2)

    def _decode(
        self, header: wire.Header, parsed: memoryview, seed: int, client: int
    ) -> torch.Tensor:
        return _decode_raw(self, parsed, torch.float16)

    def _sizes(self, d: int) -> tuple[int, int]:
        return wire.FIXED_BYTES + 2 * d, 2 * d
