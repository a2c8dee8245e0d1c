"""The codec registry: one dict from run-config names to codec classes."""

from __future__ import annotations

import inspect
from typing import Any

from .base import Codec
from .drive import DriveCodec
from .eden import EdenCodec
from .hadamard_sq import HadamardSQCodec
from .info import CodecInfo
from .qsgd import QsgdCodec
from .quic_fl import QuicFLCodec
from .randk import RandKCodec
from .raw import Fp16Codec, Fp32Codec
from .signsgd import SignSGDCodec
from .terngrad import TernGradCodec
from .topk import TopKCodec
from .vq import VQCodec

__all__ = ["CODECS", "Codec", "CodecInfo", "available_codecs", "get_codec"]

CODECS: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (
        Fp32Codec,
        Fp16Codec,
        DriveCodec,
        EdenCodec,
        QuicFLCodec,
        VQCodec,
        HadamardSQCodec,
        QsgdCodec,
        TernGradCodec,
        TopKCodec,
        RandKCodec,
        SignSGDCodec,
    )
}

#: Codec ids as written in payload byte 3 (stable across versions).
CODEC_IDS = {name: cls.codec_id for name, cls in CODECS.items()}
if len(set(CODEC_IDS.values())) != len(CODEC_IDS):  # pragma: no cover - import guard
    raise ImportError(f"Duplicate codec ids: {CODEC_IDS}")


def available_codecs() -> list[str]:
    """Names accepted by :func:`get_codec`, sorted.

    Examples
    --------
    >>> "eden" in available_codecs()
    True
    """
    return sorted(CODECS)


def get_codec(name: str, /, **params: Any) -> Codec:
    """Create a codec by name with keyword-only parameters.

    Parameters
    ----------
    name : str
        One of :func:`available_codecs`.
    **params
        The codec's keyword parameters (e.g. ``bits``, ``rotations``, ``device``).

    Raises
    ------
    ValueError
        For an unknown name or parameter (the message lists the valid ones) or a bad
        value.

    Examples
    --------
    >>> get_codec("eden", bits=2, rotations="auto")
    get_codec('eden', bits=2, rotations='auto', chunk_size=65536)
    """
    if name not in CODECS:
        raise ValueError(
            f"Unknown codec {name!r}. Valid codecs: {', '.join(available_codecs())}."
        )
    cls = CODECS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {unknown} for codec {name!r}. "
            f"Valid parameters: {', '.join(valid)}."
        )
    return cls(**params)
