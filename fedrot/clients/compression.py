"""The client side: a Flower mod that compresses the ClientApp's train reply.

Steps for a ``train`` message (other message types pass through untouched, after
step 0):

0. If the instruction carries a compressed broadcast (train or evaluate), rebuild the
   model first (:mod:`fedrot.clients.downlink`); the ClientApp sees plain arrays.

1. Read the codec, its parameters, the run seed, the server round and the compress
   mask from the message's ConfigRecord (written by
   :class:`fedrot.strategies.CompressedStrategy`).
2. Remember the layout of the received global ArrayRecord (which arrays the mask
   flags for compression) and the values of those arrays.
3. Call the ClientApp (``call_next``).
4. Flatten the reply's flagged arrays to one float32 vector ``x`` and form the
   update ``u = x - global`` (or ``u = x`` for lossless codecs), plus the stored
   residual when error feedback is on (only a residual made for the same codec,
   mask and model size; otherwise it starts from zero).
5. ``blob = codec.encode(u, seed=round_seed(run_seed, round), client=node_id)``; with
   error feedback, keep ``u - codec.decode(blob, ...)`` in ``context.state``.
6. Replace the reply's ArrayRecord by ``{"fedrot.payload": Array(blob)}`` plus the
   arrays that travel exactly (running statistics, counters, non-float arrays) as
   the ClientApp returned them.

The server inverts these steps in reverse order. Failures never raise: they come
back as Flower error replies (``MOD_FAILED_PRECONDITION``) whose reason starts with
:data:`fedrot.constants.MOD_ERROR_PREFIX` and says how to fix them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
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
    DOWNLINK_ERROR,
    KEY_CODEC,
    MOD_ERROR_PREFIX,
    PAYLOAD_ARRAY_KEY,
    STATE_RESIDUAL,
    STATE_RESIDUAL_TAG,
    UPDATE_DELTA,
)
from ..model_spec import hex_to_mask
from ..records import Layout, flatten, payload_array, single_array_record
from ..settings import TrainSettings
from ._codecs import CodecCache
from .downlink import DownlinkError, DownlinkReceiver

__all__ = ["CompressionMod", "compression_mod"]


class _Misconfigured(Exception):
    """A precondition failed; the message is the error reply's reason."""


@dataclass(frozen=True)
class _Round:
    """What the mod needs, read from a train message before the ClientApp runs."""

    codec: fedrot.Codec
    seed: int  # round seed, fedrot.round_seed(run seed, server round)
    node: int
    server_round: int
    layout: Layout
    reference: np.ndarray | None  # the global compressed arrays (delta updates)
    feedback: bool
    tag: str  # what an error-feedback residual must have been made for


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
        self._codecs = CodecCache(device=device)
        self._downlink = DownlinkReceiver(codecs=self._codecs)

    def __repr__(self) -> str:
        return f"CompressionMod(device={self.device!r})"

    def __call__(
        self, msg: Message, ctxt: Context, call_next: ClientAppCallable
    ) -> Message:
        """Compress the reply to a train message; pass other messages through."""
        try:
            msg = self._downlink.receive(msg, ctxt)
        except DownlinkError as exc:
            return _error(msg, DOWNLINK_ERROR + str(exc))
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            plan = self._plan(msg)
        except _Misconfigured as exc:
            return _error(msg, str(exc))
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        try:
            return _compress_reply(plan, out, ctxt)
        except _Misconfigured as exc:
            return _error(msg, str(exc))

    # ------------------------------------------------------------------ steps
    def _plan(self, msg: Message) -> _Round:
        """Step 1-2: settings from the ConfigRecord, layout of the global model."""
        try:
            settings = TrainSettings.read(_fedrot_config(msg))
        except ValueError as exc:
            raise _Misconfigured(str(exc)) from exc
        codec = self._codec(settings.codec, settings.codec_params)
        _, global_record = _array_record(
            msg, "the global model, in the received train message"
        )
        mask_hex = settings.compress_mask
        try:
            layout = Layout.of(global_record, hex_to_mask(mask_hex, len(global_record)))
        except ValueError as exc:
            raise _Misconfigured(
                f"the server's compress mask does not fit the received model: {exc}. "
                "Use the same fedrot version on the server and the clients."
            ) from exc
        if layout.d == 0 and settings.update == UPDATE_DELTA:
            raise _Misconfigured(
                "the server flags no array of the global model for compression "
                f"(arrays: {list(layout.keys)[:6]}); use the bare strategy instead."
            )
        reference = (
            flatten(global_record, layout) if settings.update == UPDATE_DELTA else None
        )
        return _Round(
            codec=codec,
            seed=fedrot.round_seed(settings.run_seed, settings.server_round),
            node=int(msg.metadata.dst_node_id),
            server_round=settings.server_round,
            layout=layout,
            reference=reference,
            feedback=settings.error_feedback,
            tag=f"{codec!r}|{mask_hex}|{layout.d}",
        )

    def _codec(self, name: str, params_json: str) -> fedrot.Codec:
        try:
            return self._codecs.get(name, params_json)
        except ValueError as exc:
            raise _Misconfigured(str(exc)) from exc


def _compress_reply(plan: _Round, out: Message, ctxt: Context) -> Message:
    """Steps 4-6: the update vector, its payload, the reply's new ArrayRecord."""
    key, local = _array_record(
        out,
        "the local model, in the ClientApp's train reply",
        "Return RecordDict({'arrays': ArrayRecord(...), "
        "'metrics': MetricRecord(...)}).",
    )
    layout = plan.layout
    problem = layout.mismatch(local)
    if problem is not None:
        raise _Misconfigured(f"cannot encode the reply: {problem}.")
    if layout.d == 0:
        return out  # lossless codec and no float16/float32 arrays: all travel exact
    vec = flatten(local, layout)
    if plan.reference is not None:
        vec = vec - plan.reference
    if plan.feedback:
        vec = vec + _residual(ctxt, plan.tag, layout.d)
    try:
        blob = plan.codec.encode(vec, seed=plan.seed, client=plan.node)
    except ValueError as exc:
        raise _Misconfigured(
            f"refused to encode the update of round {plan.server_round}: {exc} "
            "Check the local training (e.g. lower the learning rate) so that it "
            "returns finite weights."
        ) from exc
    if plan.feedback:
        decoded = plan.codec.decode(blob, seed=plan.seed, client=plan.node)
        _store_residual(ctxt, plan, vec - decoded.cpu().numpy())
    exact = {k: local[k] for k in layout.exact_keys}
    compressed = ArrayRecord(
        {PAYLOAD_ARRAY_KEY: payload_array(plan.codec.name, blob), **exact}
    )
    content = RecordDict(dict(out.content.items()))
    content[key] = compressed
    out.content = content
    return out


def _fedrot_config(msg: Message) -> ConfigRecord:
    configs = list(msg.content.config_records.values())
    config = next((c for c in configs if KEY_CODEC in c), None)
    if config is None:
        raise _Misconfigured(
            f"received a train message without {KEY_CODEC!r} in its ConfigRecord: "
            "the server strategy is not wrapped. Wrap it with "
            "`fedrot.strategies.CompressedStrategy(strategy, codec=...)`, or remove "
            "compression_mod from the ClientApp's mods."
        )
    return config


def _array_record(msg: Message, holding: str, fix: str = "") -> tuple[str, ArrayRecord]:
    try:
        return single_array_record(msg, holding=holding)
    except ValueError as exc:
        raise _Misconfigured(f"{exc}. {fix}".rstrip()) from exc


def _residual(ctxt: Context, tag: str, d: int) -> np.ndarray:
    """The stored error-feedback residual, or zeros when it was made for another
    codec, compress mask or model size (a node that restarted or a changed run
    starts over instead of applying a residual that does not belong to it)."""
    record = ctxt.state.array_records.get(STATE_RESIDUAL)
    meta = ctxt.state.config_records.get(STATE_RESIDUAL_TAG)
    if record is None or meta is None or meta.get("tag") != tag:
        return np.zeros(d, dtype=np.float32)
    res = record["residual"].numpy() if "residual" in record else None
    if res is None or res.shape != (d,):
        return np.zeros(d, dtype=np.float32)
    return res


def _store_residual(ctxt: Context, plan: _Round, residual: np.ndarray) -> None:
    ctxt.state[STATE_RESIDUAL] = ArrayRecord(
        {"residual": Array(np.asarray(residual, dtype=np.float32))}
    )
    ctxt.state[STATE_RESIDUAL_TAG] = ConfigRecord(
        {"tag": plan.tag, "round": plan.server_round}
    )


def _error(msg: Message, reason: str) -> Message:
    return Message(
        Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=MOD_ERROR_PREFIX + reason),
        reply_to=msg,
    )


#: The mod with default settings (codec on the CPU):
#: ``ClientApp(mods=[compression_mod])``.
compression_mod = CompressionMod()
