"""The server side: a wrapper that decodes compressed replies for any Flower strategy.

Implementation of the rotation-based schemes DRIVE (https://arxiv.org/abs/2105.08339),
EDEN (https://arxiv.org/abs/2108.08842) and QUIC-FL (https://arxiv.org/abs/2205.13341)
as a Flower 1.41 message-API strategy wrapper, in the shape of Flower's
``DifferentialPrivacyClientSideFixedClipping``.

Per round:

1. ``configure_train`` copies the train ConfigRecord, adds the codec, its parameters,
   the run seed and the round, keeps the broadcast global arrays and delegates.
2. The client mod (:data:`fedrot.clients.compression_mod`) sends one payload Array.
3. ``aggregate_train`` inverts the client steps in reverse order: decode each payload
   with ``seed = round_seed(run_seed, round)`` and ``client = src_node_id`` into
   ``global + delta`` (lossless codecs: the weights themselves), rebuild the arrays
   and delegate to the inner strategy. For plain weighted means (FedAvg, FedAvgM,
   FedProx, FedAdam, FedYogi, FedAdagrad) with a lossy codec, one
   ``codec.aggregate`` call computes the mean update instead (QUIC-FL: one inverse
   rotation per round) and every reply carries that mean into the inner strategy.
4. Bytes on the wire of both phases are added to the returned MetricRecords.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
)
from flwr.supercore import log

import fedrot

from ..constants import (
    KEY_CODEC,
    KEY_CODEC_PARAMS,
    KEY_ERROR_FEEDBACK,
    KEY_RUN_SEED,
    KEY_SERVER_ROUND,
    KEY_UPDATE,
    METRIC_DOWNLINK_BYTES,
    METRIC_DOWNLINK_PAYLOAD_BYTES,
    METRIC_DOWNLINK_REQUESTS,
    METRIC_FAILED_REPLIES,
    METRIC_UPLINK_BYTES,
    METRIC_UPLINK_PAYLOAD_BYTES,
    METRIC_UPLINK_REQUESTS,
    UPDATE_DELTA,
    UPDATE_WEIGHTS,
)
from ._records import (
    Layout,
    assemble,
    flatten,
    float_arrays,
    payload_stype,
    split_reply,
)
from .wire_bytes import WireBytes, instruction_bytes, reply_bytes

__all__ = ["CompressedStrategy"]

#: Strategies whose ``aggregate_train`` starts from FedAvg's weighted mean of the
#: replies' arrays (exact types: a subclass may change the aggregation).
_WEIGHTED_MEAN = (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad)
_MAX_SEED = 2**63 - 1  # ConfigRecord ints are signed 64-bit
_NO_PAYLOAD = "it carries no fedrot payload"


class CompressedStrategy(Strategy):
    """Wrap a Flower strategy so that clients send compressed model updates.

    Put it outermost (``CompressedStrategy(DifferentialPrivacy...(FedAvg(...)))``) and
    put :data:`fedrot.clients.compression_mod` first in the ClientApp's mods.

    Parameters
    ----------
    strategy : flwr.serverapp.strategy.Strategy
        The strategy that aggregates the decoded arrays.
    codec : str, default "eden"
        One of ``fedrot.available_codecs()``. ``"fp32"`` is lossless: the clients
        send their float32 weights and the aggregate equals the bare strategy's
        bit for bit.
    seed : int, default 0
        Run seed in 0..2**63-1; round ``r`` uses ``fedrot.round_seed(seed, r)``.
    error_feedback : bool, default False
        Clients add the previous round's compression error to the next update
        (for biased codecs: DRIVE ``scale="biased"``, ``topk``, ``signsgd``).
    fast_path : bool or None, default None
        Aggregate with one ``codec.aggregate`` call. None: whenever the inner
        strategy is one of FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad
        (exact type) and the codec is lossy. True raises for other strategies.
    count_bytes : bool, default True
        Record the bytes on the wire of every message (costs one serialization
        of each message on the server).
    device : str, default "cpu"
        Torch device the server's codec decodes on.
    **codec_params
        The codec's parameters, e.g. ``bits=1, rotations="auto"`` for EDEN.

    Raises
    ------
    ValueError
        For an unknown codec or codec parameter (the message lists the valid ones),
        a seed out of range, or an impossible combination.
    TypeError
        If ``strategy`` is not a message-API ``Strategy``.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAvg
    >>> strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1, seed=7)
    >>> strategy.codec
    get_codec('eden', bits=1, rotations=2, chunk_size=65536)
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        codec: str = "eden",
        seed: int = 0,
        error_feedback: bool = False,
        fast_path: bool | None = None,
        count_bytes: bool = True,
        device: str = "cpu",
        **codec_params: Any,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(
                "`strategy` must be a flwr.serverapp.strategy.Strategy (message API), "
                f"e.g. FedAvg(). Found {type(strategy).__name__}."
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"`seed` must be an int. Found {type(seed).__name__}.")
        if not 0 <= int(seed) <= _MAX_SEED:
            raise ValueError(f"`seed` must be in 0..2**63-1. Found {seed}.")
        if not isinstance(codec, str):
            raise TypeError(
                f"`codec` must be a codec name such as 'eden'. Found {codec!r}."
            )
        self.strategy = strategy
        self.codec = fedrot.get_codec(codec, device=device, **codec_params)
        self.seed = int(seed)
        self.lossless = self.codec.info(1).expected_vnmse == 0.0
        self.update = UPDATE_WEIGHTS if self.lossless else UPDATE_DELTA
        if error_feedback and self.lossless:
            raise ValueError(
                f"`error_feedback` is True but codec {codec!r} is lossless, so there "
                "is no compression error to feed back. Use a lossy codec or "
                "error_feedback=False."
            )
        self.error_feedback = bool(error_feedback)
        mean_inner = type(strategy) in _WEIGHTED_MEAN
        if fast_path and not mean_inner:
            raise ValueError(
                f"`fast_path` is True but the inner strategy {type(strategy).__name__} "
                "is not a plain weighted mean (FedAvg, FedAvgM, FedProx, FedAdam, "
                "FedYogi, FedAdagrad). Use fast_path=None."
            )
        if fast_path and self.lossless:
            raise ValueError(
                "`fast_path` is True but the codec is lossless; the exact path hands "
                "every client's weights to the inner strategy. Use fast_path=None."
            )
        self.fast_path = (
            mean_inner and not self.lossless if fast_path is None else bool(fast_path)
        )
        self.count_bytes = bool(count_bytes)
        self._global: ArrayRecord | None = None
        self._layout: Layout | None = None
        self._round: int | None = None
        self._downlink: dict[str, WireBytes] = {}

    # ------------------------------------------------------------------ Strategy
    def summary(self) -> None:
        """Log the compression settings, then the inner strategy's summary."""
        log(INFO, "\t├──> fedrot compression:")
        log(INFO, "\t│\t├── Codec: %r", self.codec)
        log(INFO, "\t│\t├── Update sent: %s", self.update)
        log(INFO, "\t│\t├── Run seed: %d", self.seed)
        log(INFO, "\t│\t├── Error feedback: %s", self.error_feedback)
        log(INFO, "\t│\t├── Fast path (codec.aggregate): %s", self.fast_path)
        log(INFO, "\t│\t└── Count bytes on the wire: %s", self.count_bytes)
        log(INFO, "\t└──> Inner strategy: %s", type(self.strategy).__name__)
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Add the codec settings to a copy of ``config`` and delegate."""
        layout = Layout.of(arrays, exact=self.lossless)
        if layout.d == 0 and not self.lossless:
            raise ValueError(
                "`arrays` holds no floating-point numpy arrays to compress (keys "
                f"{list(layout.keys)}); use the bare strategy."
            )
        config = ConfigRecord(dict(config.items()))
        config[KEY_CODEC] = self.codec.name
        config[KEY_CODEC_PARAMS] = json.dumps(self.codec.params(), sort_keys=True)
        config[KEY_RUN_SEED] = self.seed
        config[KEY_SERVER_ROUND] = server_round
        config[KEY_UPDATE] = self.update
        config[KEY_ERROR_FEEDBACK] = self.error_feedback
        self._global, self._layout, self._round = arrays, layout, server_round
        messages = list(
            self.strategy.configure_train(server_round, arrays, config, grid)
        )
        self._downlink["train"] = self._instructions_bytes(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode the compressed replies, delegate, and add the byte metrics."""
        replies = list(replies)
        if self._global is None or self._layout is None or self._round != server_round:
            raise RuntimeError(
                f"aggregate_train(server_round={server_round}) was called without "
                "configure_train for that round; CompressedStrategy needs the global "
                "arrays it broadcast to decode the replies."
            )
        uplink = self._replies_bytes(replies)
        decoded, failed = self._decode_replies(server_round, replies)
        arrays, metrics = self.strategy.aggregate_train(server_round, decoded)
        out = MetricRecord() if metrics is None else MetricRecord(dict(metrics.items()))
        self._add_bytes(out, uplink, self._downlink.pop("train", WireBytes()))
        out[METRIC_FAILED_REPLIES] = failed
        return arrays, out

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate (evaluation messages are not compressed) and count their bytes."""
        messages = list(
            self.strategy.configure_evaluate(server_round, arrays, config, grid)
        )
        self._downlink["evaluate"] = self._instructions_bytes(messages)
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate and add the evaluation phase's byte metrics."""
        replies = list(replies)
        uplink = self._replies_bytes(replies)
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        if not self.count_bytes:
            return metrics
        out = MetricRecord() if metrics is None else MetricRecord(dict(metrics.items()))
        self._add_bytes(out, uplink, self._downlink.pop("evaluate", WireBytes()))
        return out

    # ------------------------------------------------------------------ decoding
    def _decode_replies(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], int]:
        """Replies with decoded arrays (or turned into failures); failure count."""
        assert self._global is not None and self._layout is not None  # set by caller
        layout, seed = self._layout, fedrot.round_seed(self.seed, server_round)
        stype = payload_stype(self.codec.name)
        out: list[Message | None] = [None] * len(replies)
        todo: list[tuple[int, str, bytes, dict[str, Array]]] = []
        failed = no_mod = 0
        for i, msg in enumerate(replies):
            if msg.has_error() or layout.d == 0:
                # failed on the client: passes through as a failure; d == 0 (lossless
                # codec, no float16/float32 arrays): the reply travels raw
                out[i] = msg
                continue
            problem, entry = _payload_of(msg, stype)
            if entry is not None:
                missing = [k for k in layout.keys if k not in layout.float_keys]
                missing = [k for k in missing if k not in entry[2]]
                if missing:
                    problem, entry = f"the reply lacks the raw arrays {missing}", None
            if entry is None:
                out[i] = self._fail(msg, str(problem))
                failed += 1
                no_mod += str(problem).startswith(_NO_PAYLOAD)
            else:
                todo.append((i, *entry))
        if no_mod and not todo and no_mod == failed:
            raise RuntimeError(
                f"None of the {no_mod} train replies of round {server_round} carries a "
                "fedrot payload: the ClientApp does not compress. Add the mod: "
                "`ClientApp(mods=[fedrot.clients.compression_mod])`."
            )

        mean = self._fast_mean(replies, todo, seed) if self.fast_path and todo else None
        mean_floats = float_arrays(mean, layout) if mean is not None else None
        reference = (
            flatten(self._global, layout) if self.update == UPDATE_DELTA else None
        )
        for i, key, blob, raw in todo:
            msg = replies[i]
            if mean_floats is not None:
                floats = mean_floats
            else:
                try:
                    vec = self._decode_one(blob, seed, msg.metadata.src_node_id)
                except fedrot.PayloadError as exc:
                    out[i] = self._fail(msg, f"corrupt or mismatched payload: {exc}")
                    failed += 1
                    continue
                floats = float_arrays(
                    vec if reference is None else reference + vec, layout
                )
            content = RecordDict(dict(msg.content.items()))
            content[key] = assemble(layout, floats, raw)
            out[i] = Message(metadata=copy.copy(msg.metadata), content=content)
        return [m for m in out if m is not None], failed

    def _decode_one(self, blob: bytes, seed: int, node: int) -> np.ndarray:
        assert self._layout is not None
        vec = self.codec.decode(blob, seed=seed, client=node).cpu().numpy()
        if vec.shape != (self._layout.d,):
            raise fedrot.PayloadError(
                f"the payload holds {vec.shape[0]} values but the global model has "
                f"{self._layout.d} float parameters"
            )
        return vec

    def _fast_mean(
        self,
        replies: list[Message],
        todo: list[tuple[int, str, bytes, dict[str, Array]]],
        seed: int,
    ) -> np.ndarray | None:
        """``global + codec.aggregate(deltas)``, or None to decode one by one."""
        assert self._global is not None and self._layout is not None
        weight_key = getattr(self.strategy, "weighted_by_key", "num-examples")
        weights = []
        for i, *_ in todo:
            metrics = list(replies[i].content.metric_records.values())
            value = metrics[0].get(weight_key) if len(metrics) == 1 else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None  # let the inner strategy report the malformed reply
            weights.append(float(value))
        if sum(weights) <= 0:
            return None
        try:
            mean = self.codec.aggregate(
                [blob for _, _, blob, _ in todo],
                seed=seed,
                clients=[replies[i].metadata.src_node_id for i, *_ in todo],
                weights=weights,
            )
        except fedrot.PayloadError as exc:
            log(WARNING, "fedrot fast path: %s; decoding the replies one by one", exc)
            return None
        vec = mean.cpu().numpy()
        if vec.shape != (self._layout.d,):
            return None
        return flatten(self._global, self._layout) + vec

    def _fail(self, msg: Message, problem: str) -> Message:
        node = msg.metadata.src_node_id
        reason = f"fedrot rejected the train reply of node {node}: {problem}"
        log(ERROR, "%s", reason)
        return Message(
            metadata=copy.copy(msg.metadata),
            error=Error(code=ErrorCode.UNKNOWN, reason=reason),
        )

    # ------------------------------------------------------------- byte counting
    def _instructions_bytes(self, messages: list[Message]) -> WireBytes:
        if not self.count_bytes:
            return WireBytes()
        return sum((instruction_bytes(m) for m in messages), WireBytes())

    def _replies_bytes(self, replies: list[Message]) -> WireBytes:
        if not self.count_bytes:
            return WireBytes()
        return sum((reply_bytes(m) for m in replies), WireBytes())

    def _add_bytes(self, out: MetricRecord, up: WireBytes, down: WireBytes) -> None:
        if not self.count_bytes:
            return
        out[METRIC_UPLINK_BYTES] = up.message_bytes
        out[METRIC_UPLINK_PAYLOAD_BYTES] = up.payload_bytes
        out[METRIC_UPLINK_REQUESTS] = up.requests
        out[METRIC_DOWNLINK_BYTES] = down.message_bytes
        out[METRIC_DOWNLINK_PAYLOAD_BYTES] = down.payload_bytes
        out[METRIC_DOWNLINK_REQUESTS] = down.requests


def _payload_of(
    msg: Message, stype: str
) -> tuple[str | None, tuple[str, bytes, dict[str, Array]] | None]:
    """(problem, None) or (None, (record key, payload bytes, raw arrays))."""
    records = list(msg.content.array_records.items())
    if len(records) != 1:
        return f"it holds {len(records)} ArrayRecords instead of 1", None
    key, record = records[0]
    payload, raw = split_reply(record)
    if payload is None:
        return (
            f"{_NO_PAYLOAD} (uncompressed arrays {list(record.keys())[:4]}). Add "
            "`fedrot.clients.compression_mod` first in the ClientApp's mods",
            None,
        )
    if payload.stype != stype:
        return (
            f"its payload has stype {payload.stype!r} but this server expects "
            f"{stype!r}; run the same codec and fedrot version on both sides",
            None,
        )
    return None, (key, payload.data, raw)
