"""The settings the server sends in ConfigRecords, written and read in one place.

:class:`fedrot.strategies.CompressedStrategy` writes a :class:`TrainSettings` into
every train ConfigRecord (:meth:`TrainSettings.write`);
:data:`fedrot.clients.compression_mod` reads it back (:meth:`TrainSettings.read`),
so the keys of :mod:`fedrot.constants`, their types and the checks between them
exist once and the server stays the single source of truth. Flower glue shared by
both sides, like :mod:`fedrot.records`; ``import fedrot`` does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord

from .constants import (
    KEY_CODEC,
    KEY_CODEC_PARAMS,
    KEY_COMPRESS_MASK,
    KEY_ERROR_FEEDBACK,
    KEY_RUN_SEED,
    KEY_SERVER_ROUND,
    KEY_UPDATE,
    UPDATE_DELTA,
    UPDATE_WEIGHTS,
)

__all__ = ["TrainSettings", "config_int", "config_str"]

#: The ConfigRecord key of each field of :class:`TrainSettings`.
_KEYS = {
    "codec": KEY_CODEC,
    "codec_params": KEY_CODEC_PARAMS,
    "run_seed": KEY_RUN_SEED,
    "server_round": KEY_SERVER_ROUND,
    "update": KEY_UPDATE,
    "error_feedback": KEY_ERROR_FEEDBACK,
    "compress_mask": KEY_COMPRESS_MASK,
}
_SAME_VERSION = "Use the same fedrot version on the server and the clients."


def config_int(config: ConfigRecord, key: str) -> int:
    """``config[key]`` as an int, or a ValueError naming the key and value."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an int. Found {value!r}.")
    return value


def config_str(config: ConfigRecord, key: str) -> str:
    """``config[key]`` as a str, or a ValueError naming the key and value."""
    value = config[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a str. Found {value!r}.")
    return value


@dataclass(frozen=True)
class TrainSettings:
    """What a client needs to compress its reply to one train round.

    Attributes
    ----------
    codec, codec_params
        The codec's name and its keyword parameters as a JSON object.
    run_seed, server_round
        The codec seed of the round is ``fedrot.round_seed(run_seed, server_round)``.
    update
        :data:`~fedrot.constants.UPDATE_DELTA` (the payload encodes
        ``local - global``) or :data:`~fedrot.constants.UPDATE_WEIGHTS`.
    error_feedback
        Whether the client keeps its compression residual (delta updates only).
    compress_mask
        Hex bit mask over the record's keys of the arrays the codec compresses
        (:func:`fedrot.model_spec.mask_to_hex`).

    Raises
    ------
    ValueError
        If ``update`` is neither value, or error feedback is asked for weights.
    """

    codec: str
    codec_params: str
    run_seed: int
    server_round: int
    update: str
    error_feedback: bool
    compress_mask: str

    def __post_init__(self) -> None:
        if self.update not in (UPDATE_DELTA, UPDATE_WEIGHTS):
            raise ValueError(
                f"{KEY_UPDATE!r} must be {UPDATE_DELTA!r} or {UPDATE_WEIGHTS!r}. "
                f"Found {self.update!r}."
            )
        if self.error_feedback and self.update != UPDATE_DELTA:
            raise ValueError(
                "error feedback needs delta updates; the server sent "
                f"{KEY_UPDATE!r} = {self.update!r}."
            )

    def write(self, config: ConfigRecord) -> ConfigRecord:
        """A copy of ``config`` with these settings added (``config`` unchanged)."""
        out = ConfigRecord(dict(config.items()))
        for field, key in _KEYS.items():
            out[key] = getattr(self, field)
        return out

    @classmethod
    def read(cls, config: ConfigRecord) -> TrainSettings:
        """The settings :meth:`write` put into ``config``.

        Raises
        ------
        ValueError
            If a key is missing or holds a value of the wrong type (the server runs
            another fedrot version), or the settings contradict each other.
        """
        missing = [
            k for k in _KEYS.values() if k not in config and k != KEY_ERROR_FEEDBACK
        ]
        if missing:
            raise ValueError(f"the train ConfigRecord lacks {missing}. {_SAME_VERSION}")
        try:
            run_seed = config_int(config, KEY_RUN_SEED)
            server_round = config_int(config, KEY_SERVER_ROUND)
        except ValueError as exc:
            raise ValueError(f"{exc} {_SAME_VERSION}") from exc
        return cls(
            codec=str(config[KEY_CODEC]),
            codec_params=str(config[KEY_CODEC_PARAMS]),
            run_seed=run_seed,
            server_round=server_round,
            update=str(config[KEY_UPDATE]),
            error_feedback=bool(config.get(KEY_ERROR_FEEDBACK, False)),
            compress_mask=str(config[KEY_COMPRESS_MASK]),
        )
