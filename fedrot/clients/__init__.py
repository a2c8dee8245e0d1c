"""Flower client side of fedrot (imports flwr; ``import fedrot`` does not load it).

>>> from flwr.clientapp import ClientApp
>>> from fedrot.clients import compression_mod
>>> app = ClientApp(mods=[compression_mod])
"""

from __future__ import annotations

from .compression import CompressionMod, compression_mod

__all__ = ["CompressionMod", "compression_mod"]
