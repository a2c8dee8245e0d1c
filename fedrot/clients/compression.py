"""The client side: a Flower mod that compresses the ClientApp's train reply.

Steps for a ``train`` message (every other message type passes through untouched):

1. Read the codec, its parameters, the run seed and the server round from the
   message's ConfigRecord (written by :class:`fedrot.strategies.CompressedStrategy`).
2. Remember the layout and values of the received global ArrayRecord.
3. Call the ClientApp (``call_next``).
4. Flatten the reply's floating arrays to one float32 vector ``x`` and form the
   update ``u = x - global`` (or ``u = x`` for lossless codecs), plus the stored
   residual when error feedback is on.
5. ``blob = codec.encode(u, seed=round_seed(run_seed, round), client=node_id)``; with
   error feedback, keep ``u - codec.decode(blob, ...)`` in ``context.state``.
6. Replace the reply's ArrayRecord by ``{"fedrot.payload": Array(blob)}`` plus the
   non-float arrays, unchanged.

The server inverts these steps in reverse order. Failures never raise: they come
back as Flower error replies whose reason says how to fix them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    MessageType,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

import fedrot

from ..constants import (
    KEY_CODEC,
    KEY_CODEC_PARAMS,
    KEY_ERROR_FEEDBACK,
    KEY_RUN_SEED,
    KEY_SERVER_ROUND,
    KEY_UPDATE,
    PAYLOAD_ARRAY_KEY,
    STATE_RESIDUAL,
    UPDATE_DELTA,
    UPDATE_WEIGHTS,
)
from ..strategies._records import Layout, flatten, payload_array

__all__ = ["CompressionMod", "compression_mod"]

_REQUIRED = (KEY_CODEC, KEY_CODEC_PARAMS, KEY_RUN_SEED, KEY_SERVER_ROUND, KEY_UPDATE)


class _Misconfigured(Exception):
    """A precondition failed; the message is the error reply's reason."""


class CompressionMod:
    """Flower client mod compressing train replies with a fedrot codec.

    All protocol settings come from the train message's ConfigRecord, so the server
    is the single source of truth; only local execution choices are set here.

    Parameters
    ----------
    device : str, default "cpu"
        Torch device the codec runs on (e.g. ``"cuda"``).

    Examples
    --------
    >>> from flwr.clientapp import ClientApp
    >>> app = ClientApp(mods=[CompressionMod(device="cpu")])
    """

    def __init__(self, *, device: str = "cpu") -> None:
        if not isinstance(device, str):
            raise TypeError(f"`device` must be a str such as 'cpu'. Found {device!r}.")
        try:
            torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                "`device` must be a torch device such as 'cpu' or 'cuda'. "
                f"Found {device!r}."
            ) from exc
        self.device = device
        self._codecs: dict[tuple[str, str], fedrot.Codec] = {}

    def __repr__(self) -> str:
        return f"CompressionMod(device={self.device!r})"

    def __call__(
        self, msg: Message, ctxt: Context, call_next: ClientAppCallable
    ) -> Message:
        """Compress the reply to a train message; pass other messages through."""
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            codec, run_seed, server_round, update, feedback = self._settings(msg)
            global_record = _single_record(msg, "the received train message")
            layout = Layout.of(global_record, exact=update == UPDATE_WEIGHTS)
            if layout.d == 0 and update == UPDATE_DELTA:
                raise _Misconfigured(
                    "the global model has no floating-point arrays to compress "
                    f"(arrays: {list(layout.keys)}); use the bare strategy instead."
                )
            reference = (
                flatten(global_record, layout) if update == UPDATE_DELTA else None
            )
        except _Misconfigured as exc:
            return _error(msg, str(exc))

        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        try:
            key, local = _reply_record(out)
            problem = layout.mismatch(local)
            if problem is not None:
                raise _Misconfigured(
                    f"compression_mod cannot encode the reply: {problem}."
                )
            if layout.d == 0:
                return out  # lossless codec and no float16/float32 arrays: all raw
            vec = flatten(local, layout)
            if reference is not None:
                vec = vec - reference
            if feedback:
                vec = vec + _residual(ctxt, layout.d)
            seed = fedrot.round_seed(run_seed, server_round)
            node = msg.metadata.dst_node_id
            try:
                blob = codec.encode(vec, seed=seed, client=node)
            except ValueError as exc:
                raise _Misconfigured(
                    f"compression_mod refused to encode the update of round "
                    f"{server_round}: {exc} Check the local training (e.g. lower the "
                    "learning rate) so that it returns finite weights."
                ) from exc
            if feedback:
                decoded = codec.decode(blob, seed=seed, client=node).cpu().numpy()
                ctxt.state[STATE_RESIDUAL] = ArrayRecord(
                    {"residual": Array(np.asarray(vec - decoded, dtype=np.float32))}
                )
        except _Misconfigured as exc:
            return _error(msg, str(exc))

        raw = {k: a for k, a in local.items() if k not in set(layout.float_keys)}
        compressed = ArrayRecord(
            {PAYLOAD_ARRAY_KEY: payload_array(codec.name, blob), **raw}
        )
        content = RecordDict(dict(out.content.items()))
        content[key] = compressed
        out.content = content
        return out

    def _settings(self, msg: Message) -> tuple[fedrot.Codec, int, int, str, bool]:
        configs = list(msg.content.config_records.values())
        config = next((c for c in configs if KEY_CODEC in c), None)
        if config is None:
            raise _Misconfigured(
                f"compression_mod received a train message without {KEY_CODEC!r} in "
                "its ConfigRecord: the server strategy is not wrapped. Wrap it with "
                "`fedrot.strategies.CompressedStrategy(strategy, codec=...)`, or "
                "remove "
                "compression_mod from the ClientApp's mods."
            )
        missing = [k for k in _REQUIRED if k not in config]
        if missing:
            raise _Misconfigured(
                f"compression_mod: the train ConfigRecord lacks {missing}. Use the "
                "same "
                "fedrot version on the server and the clients."
            )
        name, params_json = config[KEY_CODEC], config[KEY_CODEC_PARAMS]
        if name not in fedrot.available_codecs():
            raise _Misconfigured(
                f"compression_mod: the server asked for codec {name!r}, which this "
                f"client's fedrot {fedrot.__version__} does not have (it has "
                f"{fedrot.available_codecs()}). Install the server's fedrot version on "
                "the clients."
            )
        codec = self._codec(str(name), str(params_json))
        update = config[KEY_UPDATE]
        if update not in (UPDATE_DELTA, UPDATE_WEIGHTS):
            raise _Misconfigured(
                f"compression_mod: {KEY_UPDATE!r} must be {UPDATE_DELTA!r} or "
                f"{UPDATE_WEIGHTS!r}. Found {update!r}."
            )
        feedback = bool(config.get(KEY_ERROR_FEEDBACK, False))
        if feedback and update != UPDATE_DELTA:
            raise _Misconfigured(
                "compression_mod: error feedback needs delta updates; the server sent "
                f"{KEY_UPDATE!r} = {update!r}."
            )
        return (
            codec,
            int(config[KEY_RUN_SEED]),
            int(config[KEY_SERVER_ROUND]),
            update,
            feedback,
        )

    def _codec(self, name: str, params_json: str) -> fedrot.Codec:
        key = (name, params_json)
        if key not in self._codecs:
            try:
                params: dict[str, Any] = json.loads(params_json)
                self._codecs[key] = fedrot.get_codec(name, **params, device=self.device)
            except (ValueError, TypeError) as exc:
                raise _Misconfigured(
                    f"compression_mod cannot build codec {name!r} with parameters "
                    f"{params_json}: {exc} Use the same fedrot version on both sides."
                ) from exc
        return self._codecs[key]


def _single_record(msg: Message, where: str) -> ArrayRecord:
    records = list(msg.content.array_records.values())
    if len(records) != 1:
        raise _Misconfigured(
            f"compression_mod needs exactly one ArrayRecord in {where}; found "
            f"{len(records)}."
        )
    return records[0]


def _reply_record(out: Message) -> tuple[str, ArrayRecord]:
    items = list(out.content.array_records.items())
    if len(items) != 1:
        raise _Misconfigured(
            "compression_mod needs the ClientApp's train reply to hold exactly one "
            f"ArrayRecord (the local model); found {len(items)}. Return "
            "RecordDict({'arrays': ArrayRecord(...), 'metrics': MetricRecord(...)})."
        )
    return items[0]


def _residual(ctxt: Context, d: int) -> np.ndarray:
    """The stored error-feedback residual, or zeros if none fits length ``d``."""
    record = ctxt.state.array_records.get(STATE_RESIDUAL)
    if record is not None and "residual" in record:
        res = record["residual"].numpy()
        if res.shape == (d,):
            return res
    return np.zeros(d, dtype=np.float32)


def _error(msg: Message, reason: str) -> Message:
    return Message(
        Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg
    )


#: The mod with default settings (codec on the CPU):
#: ``ClientApp(mods=[compression_mod])``.
compression_mod = CompressionMod()
