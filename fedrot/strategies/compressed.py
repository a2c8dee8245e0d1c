"""The server side: a wrapper that decodes compressed replies for any Flower strategy.

Implementation of the rotation-based schemes DRIVE (https://arxiv.org/abs/2105.08339),
EDEN (https://arxiv.org/abs/2108.08842) and QUIC-FL (https://arxiv.org/abs/2205.13341)
as a Flower 1.41 message-API strategy wrapper, in the shape of Flower's
``DifferentialPrivacyClientSideFixedClipping``.

Per round:

1. ``configure_train`` fixes the run's :class:`~fedrot.model_spec.ModelSpec` from the
   first model it sees and casts every broadcast back to those dtypes; it decides
   which arrays the codec compresses (trainable floating parameters; running
   statistics, counters and non-float arrays travel exactly), copies the train
   ConfigRecord, adds the codec, its parameters, the run seed, the round and the
   compress mask, keeps the broadcast arrays and delegates.
2. The client mod (:data:`fedrot.clients.compression_mod`) sends one payload Array
   plus the exact arrays.
3. ``aggregate_train`` inverts the client steps in reverse order: it checks every
   payload's header against the broadcast layout before decoding anything, decodes
   each payload with ``seed = round_seed(run_seed, round)`` and ``client =
   src_node_id`` into ``global + delta`` (lossless codecs: the weights themselves),
   rebuilds the arrays and delegates to the inner strategy. For plain weighted means
   (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad) with a lossy codec, one
   ``codec.aggregate`` call computes the mean update instead (QUIC-FL: one inverse
   rotation per round) and every reply carries that mean into the inner strategy.
   The aggregate is cast back to the run's dtypes.
4. Every train reply that did not count is counted by reason; a round that fedrot
   lost entirely raises with the fix. Bytes on the wire of both phases are added
   to the returned MetricRecords.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
)
from flwr.common import log
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

import fedrot

from ..broadcast import DownlinkSpec
from ..constants import (
    METRIC_DOWNLINK_BYTES,
    METRIC_DOWNLINK_PAYLOAD_BYTES,
    METRIC_DOWNLINK_REQUESTS,
    METRIC_TOTAL_BYTES,
    METRIC_UPLINK_BYTES,
    METRIC_UPLINK_PAYLOAD_BYTES,
    METRIC_UPLINK_REQUESTS,
    UPDATE_DELTA,
    UPDATE_WEIGHTS,
)
from ..model_spec import (
    DEFAULT_EXACT_KEYS,
    ModelSpec,
    mask_to_hex,
    select_compressed,
)
from ..records import Layout
from ..settings import TrainSettings
from .decoding import ReplyDecoder
from .downlink import DownlinkSender
from .failures import Failure, failure_metrics, raise_if_fedrot_lost
from .traffic import Traffic, instruction_bytes, reply_bytes

__all__ = ["CompressedStrategy"]

#: Strategies whose ``aggregate_train`` starts from FedAvg's weighted mean of the
#: replies' arrays (exact types: a subclass may change the aggregation).
_WEIGHTED_MEAN = (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad)
_MAX_SEED = 2**63 - 1  # ConfigRecord ints are signed 64-bit


def _check_keys(name: str, patterns: Sequence[str] | None) -> tuple[str, ...] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"`{name}` must be a list of fnmatch patterns such as ['*running_var']. "
            f"Found {patterns!r}."
        )
    return tuple(patterns)


def _contains_compressed(strategy: Strategy) -> bool:
    inner: Any = strategy
    while inner is not None:
        if isinstance(inner, CompressedStrategy):
            return True
        inner = getattr(inner, "strategy", None)
    return False


class CompressedStrategy(Strategy):
    """Wrap a Flower strategy so that clients send compressed model updates.

    Put it outermost (``CompressedStrategy(DifferentialPrivacy...(FedAvg(...)))``) and
    put :data:`fedrot.clients.compression_mod` first in the ClientApp's mods.

    Parameters
    ----------
    strategy : flwr.serverapp.strategy.Strategy
        The strategy that aggregates the decoded arrays. It must not contain a
        CompressedStrategy itself.
    codec : str, default "eden"
        One of ``fedrot.available_codecs()``. ``"fp32"`` is lossless: the clients
        send their float32 weights and the aggregate equals the bare strategy's
        bit for bit (cast to the model's dtypes).
    seed : int, default 0
        Run seed in 0..2**63-1; round ``r`` uses ``fedrot.round_seed(seed, r)``.
    error_feedback : bool, default False
        Clients add the previous round's compression error to the next update
        (for biased codecs: DRIVE ``scale="biased"``, ``topk``, ``signsgd``).
    exact_keys : sequence of str, default ("*running_mean", "*running_var",
        "*num_batches_tracked")
        ``fnmatch`` patterns of floating arrays that travel exactly instead of
        through the codec (non-float arrays always do). Pass ``()`` to compress
        every floating array.
    compress_keys : sequence of str or None, default None
        If given, only floating arrays matching one of these patterns (and no
        ``exact_keys`` pattern) are compressed.
    downlink : dict or None, default None
        Compressed broadcasts (train and evaluate instructions):
        ``{"codec": name, "mode": "model" | "delta", **codec params}``, e.g.
        ``{"codec": "eden", "bits": 8, "mode": "model"}``. None sends the model's
        arrays as they are. Model mode encodes each new global model once, with a
        rotation all nodes share; delta mode sends each node the compressed
        corrections since the model it holds (server-side error feedback), or the
        model exactly when that is fewer bytes (see :mod:`fedrot.broadcast`).
        Exact arrays always travel exactly. With a downlink the clients send
        deltas even for the lossless ``fp32`` codec.
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
        a seed out of range, a nested CompressedStrategy, or an impossible
        combination.
    TypeError
        If ``strategy`` is not a message-API ``Strategy`` or a key pattern list is
        not a list of strings.

    Notes
    -----
    Which arrays are compressed is decided once per run, from the first model
    the strategy broadcasts (its keys and dtypes) and the key patterns; it does not
    follow dtypes an inner strategy's aggregation produces. Every broadcast is cast
    back to the first model's dtypes (integer buffers rounded to the nearest
    integer, see :meth:`fedrot.model_spec.ModelSpec.cast`).

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
        exact_keys: Sequence[str] = DEFAULT_EXACT_KEYS,
        compress_keys: Sequence[str] | None = None,
        downlink: Mapping[str, Any] | None = None,
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
        if _contains_compressed(strategy):
            raise ValueError(
                "`strategy` already contains a CompressedStrategy; wrapping it again "
                "would compress twice with one client mod. Wrap the plain strategy "
                "once."
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
        self.lossless = bool(self.codec.lossless)
        self.downlink = (
            None if downlink is None else DownlinkSpec.parse(downlink, device=device)
        )
        self._sender = (
            None
            if self.downlink is None
            else DownlinkSender(self.downlink, run_seed=self.seed)
        )
        # with a lossy broadcast the clients train from an estimate of the global
        # model; their deltas are added to the true global model (error feedback)
        exact_weights = self.lossless and self.downlink is None
        self.update = UPDATE_WEIGHTS if exact_weights else UPDATE_DELTA
        if error_feedback and self.lossless:
            raise ValueError(
                f"`error_feedback` is True but codec {codec!r} is lossless, so there "
                "is no compression error to feed back. Use a lossy codec or "
                "error_feedback=False."
            )
        self.error_feedback = bool(error_feedback)
        self.exact_keys = _check_keys("exact_keys", exact_keys) or ()
        self.compress_keys = _check_keys("compress_keys", compress_keys)
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
        # fp16's bias is its rounding (relative 2**-11), not worth a residual
        if not self.codec.unbiased and self.codec.name != "fp16" and not error_feedback:
            log(
                WARNING,
                "fedrot: codec %r is biased; without error feedback its error "
                "accumulates over rounds. Pass error_feedback=True to "
                "CompressedStrategy.",
                self.codec,
            )
        self._spec: ModelSpec | None = None
        self._mask: tuple[bool, ...] | None = None
        self._global: ArrayRecord | None = None
        self._layout: Layout | None = None
        self._round: int | None = None
        self._instructions = 0
        self._downlink: dict[str, Traffic] = {}

    # ------------------------------------------------------------------ Strategy
    def summary(self) -> None:
        """Log the compression settings, then the inner strategy's summary."""
        log(INFO, "\t├──> fedrot compression:")
        log(INFO, "\t│\t├── Codec: %r", self.codec)
        log(INFO, "\t│\t├── Update sent: %s", self.update)
        log(INFO, "\t│\t├── Run seed: %d", self.seed)
        log(INFO, "\t│\t├── Error feedback: %s", self.error_feedback)
        log(INFO, "\t│\t├── Exact keys: %s", list(self.exact_keys))
        if self.compress_keys is not None:
            log(INFO, "\t│\t├── Compressed keys: %s", list(self.compress_keys))
        if self.downlink is not None:
            log(
                INFO,
                "\t│\t├── Downlink: %r, %s mode",
                self.downlink.codec,
                self.downlink.mode,
            )
        log(INFO, "\t│\t├── Fast path (codec.aggregate): %s", self.fast_path)
        log(INFO, "\t│\t└── Count bytes on the wire: %s", self.count_bytes)
        log(INFO, "\t└──> Inner strategy: %s", type(self.strategy).__name__)
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Add the codec settings to a copy of ``config`` and delegate."""
        arrays = self._follow_spec(arrays, new_run=server_round == 1)
        assert self._mask is not None  # set by _follow_spec
        layout = Layout.of(arrays, self._mask)
        if layout.d == 0 and not self.lossless:
            raise ValueError(
                "`arrays` holds no floating-point array to compress (keys "
                f"{list(layout.keys)[:6]}, exact_keys {list(self.exact_keys)}); use "
                "the bare strategy or change exact_keys / compress_keys."
            )
        config = TrainSettings(
            codec=self.codec.name,
            codec_params=json.dumps(self.codec.params(), sort_keys=True),
            run_seed=self.seed,
            server_round=server_round,
            update=self.update,
            error_feedback=self.error_feedback,
            compress_mask=mask_to_hex(self._mask),
        ).write(config)
        self._global, self._layout, self._round = arrays, layout, server_round
        messages = list(
            self.strategy.configure_train(server_round, arrays, config, grid)
        )
        self._instructions = len(messages)
        if self._sender is not None:
            self._sender.rewrite(messages, arrays, layout)
        self._downlink["train"] = self._instructions_bytes(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode the compressed replies, delegate, and add the round's metrics.

        Raises
        ------
        RuntimeError
            If called without ``configure_train`` for the round, or if no reply
            counted and every failure was fedrot's (mod missing, settings mismatch,
            payloads failing their checks); the message says how to fix it.
        """
        replies = list(replies)
        if self._global is None or self._layout is None or self._round != server_round:
            raise RuntimeError(
                f"aggregate_train(server_round={server_round}) was called without "
                "configure_train for that round; CompressedStrategy needs the global "
                "arrays it broadcast to decode the replies."
            )
        uplink = self._replies_bytes(replies)
        if self._sender is not None:
            self._sender.confirm(replies)
        assert self._spec is not None  # set with self._global
        decoder = ReplyDecoder(
            codec=self.codec,
            update=self.update,
            layout=self._layout,
            spec=self._spec,
            global_arrays=self._global,
            weight_key=getattr(self.strategy, "weighted_by_key", "num-examples"),
        )
        decoded, failures = decoder.decode(
            replies,
            seed=fedrot.round_seed(self.seed, server_round),
            fast_path=self.fast_path,
        )
        if len(failures) == len(replies):  # nothing counted: whose fault?
            raise_if_fedrot_lost(server_round, failures)
        missing = self._instructions - len(replies)
        failures += [Failure("no-reply", "no reply arrived")] * max(0, missing)
        arrays, metrics = self.strategy.aggregate_train(server_round, decoded)
        if arrays is not None and self._spec is not None:
            arrays = self._spec.cast(arrays)
        out = MetricRecord() if metrics is None else MetricRecord(dict(metrics.items()))
        self._add_bytes(out, uplink, self._downlink.pop("train", Traffic()))
        for key, count in failure_metrics(failures).items():
            out[key] = count
        return arrays, out

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate with the arrays in the run's dtypes and count the bytes."""
        arrays = self._follow_spec(arrays, new_run=False)
        messages = list(
            self.strategy.configure_evaluate(server_round, arrays, config, grid)
        )
        if self._sender is not None and messages:
            assert self._mask is not None  # set by _follow_spec
            self._sender.rewrite(messages, arrays, Layout.of(arrays, self._mask))
        self._downlink["evaluate"] = self._instructions_bytes(messages)
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate and add the evaluation phase's byte metrics."""
        replies = list(replies)
        uplink = self._replies_bytes(replies)
        if self._sender is not None:
            self._sender.confirm(replies)
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        if not self.count_bytes:
            return metrics
        out = MetricRecord() if metrics is None else MetricRecord(dict(metrics.items()))
        self._add_bytes(out, uplink, self._downlink.pop("evaluate", Traffic()))
        return out

    # -------------------------------------------------------------- model spec
    def _follow_spec(self, arrays: ArrayRecord, *, new_run: bool) -> ArrayRecord:
        """``arrays`` in the run's dtypes; the first model of a run sets the spec."""
        if self._spec is None or new_run:
            if self._sender is not None:
                self._sender.reset()
            self._spec = ModelSpec.of(arrays)
            self._mask = select_compressed(
                arrays,
                exact_keys=self.exact_keys,
                compress_keys=self.compress_keys,
                lossless=self.lossless,
            )
            return arrays
        return self._spec.cast(arrays)

    # ------------------------------------------------------------- byte counting
    def _instructions_bytes(self, messages: list[Message]) -> Traffic:
        if not self.count_bytes:
            return Traffic()
        return sum((instruction_bytes(m) for m in messages), Traffic())

    def _replies_bytes(self, replies: list[Message]) -> Traffic:
        if not self.count_bytes:
            return Traffic()
        return sum((reply_bytes(m) for m in replies), Traffic())

    def _add_bytes(self, out: MetricRecord, up: Traffic, down: Traffic) -> None:
        if not self.count_bytes:
            return
        out[METRIC_UPLINK_BYTES] = up.message_bytes
        out[METRIC_UPLINK_PAYLOAD_BYTES] = up.payload_bytes
        out[METRIC_UPLINK_REQUESTS] = up.requests
        out[METRIC_DOWNLINK_BYTES] = down.message_bytes
        out[METRIC_DOWNLINK_PAYLOAD_BYTES] = down.payload_bytes
        out[METRIC_DOWNLINK_REQUESTS] = down.requests
        out[METRIC_TOTAL_BYTES] = up.message_bytes + down.message_bytes
