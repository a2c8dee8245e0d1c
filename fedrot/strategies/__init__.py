"""Flower server side of fedrot (imports flwr; ``import fedrot`` does not load it).

>>> from flwr.serverapp.strategy import FedAvg
>>> from fedrot.strategies import CompressedStrategy
>>> strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1, seed=0)
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # the core installs without Flower
    raise ImportError(
        "fedrot.strategies is fedrot's Flower plugin and needs Flower 1.41.0, which "
        "is not installed. Install it with `pip install 'fedrot[flower]'`."
    ) from exc

from .compressed import CompressedStrategy
from .traffic import Traffic, instruction_bytes, reply_bytes

__all__ = ["CompressedStrategy", "Traffic", "instruction_bytes", "reply_bytes"]
