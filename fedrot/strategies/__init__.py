"""Flower server side of fedrot (imports flwr; ``import fedrot`` does not load it).

>>> from flwr.serverapp.strategy import FedAvg
>>> from fedrot.strategies import CompressedStrategy
>>> strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1, seed=0)
"""

from __future__ import annotations

from .compressed import CompressedStrategy
from .wire_bytes import WireBytes, instruction_bytes, reply_bytes

__all__ = ["CompressedStrategy", "WireBytes", "instruction_bytes", "reply_bytes"]
