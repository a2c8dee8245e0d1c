"""Flower client side of fedrot (imports flwr; ``import fedrot`` does not load it).

>>> from flwr.clientapp import ClientApp
>>> from fedrot.clients import compression_mod
>>> app = ClientApp(mods=[compression_mod])
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # the core installs without Flower
    raise ImportError(
        "fedrot.clients is fedrot's Flower plugin and needs Flower 1.41.0, which "
        "is not installed. Install it with `pip install 'fedrot[flower]'`."
    ) from exc

from .compression import CompressionMod, compression_mod

__all__ = ["CompressionMod", "compression_mod"]
