"""fedrot: seeded randomized Hadamard transforms and quantizers for federated learning.

>>> import fedrot, torch
>>> codec = fedrot.get_codec("eden", bits=2)
>>> blob = codec.encode(torch.randn(1000), seed=7, client=3)
>>> codec.decode(blob, seed=7, client=3).shape
torch.Size([1000])
"""

from __future__ import annotations

from .codecs import Codec, CodecInfo, available_codecs, get_codec
from .errors import PayloadError
from .seeds import derive_seed, round_seed

__all__ = [
    "Codec",
    "CodecInfo",
    "PayloadError",
    "available_codecs",
    "derive_seed",
    "get_codec",
    "round_seed",
]

__version__ = "0.1.0"
