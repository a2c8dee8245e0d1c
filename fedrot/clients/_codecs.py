"""Codecs the client mod builds from the server's settings, built once each."""

from __future__ import annotations

import json
from typing import Any

import fedrot

__all__ = ["CodecCache"]


class CodecCache:
    """``get(name, params_json)`` -> a codec on ``device``, cached by its settings.

    Raises ``ValueError`` naming the codec, its parameters and the fix when the
    server asks for something this client's fedrot cannot build.
    """

    def __init__(self, *, device: str) -> None:
        self.device = device
        self._codecs: dict[tuple[str, str], fedrot.Codec] = {}

    def get(self, name: str, params_json: str) -> fedrot.Codec:
        """The codec ``name`` with the JSON-encoded keyword parameters."""
        key = (name, params_json)
        if key in self._codecs:
            return self._codecs[key]
        if name not in fedrot.available_codecs():
            raise ValueError(
                f"the server asked for codec {name!r}, which this client's fedrot "
                f"{fedrot.__version__} does not have (it has "
                f"{fedrot.available_codecs()}). Install the server's fedrot version on "
                "the clients."
            )
        try:
            params: dict[str, Any] = json.loads(params_json)
            codec = fedrot.get_codec(name, **params, device=self.device)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"cannot build codec {name!r} with parameters {params_json}: {exc} "
                "Use the same fedrot version on both sides."
            ) from exc
        self._codecs[key] = codec
        return codec
