"""Turning compressed train replies back into plain arrays, one round at a time.

For each reply, before anything of size d is allocated: error replies become
failures with their reason; the payload's stype, the exact arrays (keys, shapes),
the envelope, the declared d (against the broadcast model) and the codec's own
checks (parameters, body length, counts) must pass. Then each payload is decoded
into ``global + delta`` (lossless codecs: the weights), or, on the fast path, one
``codec.aggregate`` call gives the weighted mean every reply then carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import ERROR, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, RecordDict
from flwr.common import log
from flwr.common.constant import ErrorCode

import fedrot

from .. import wire
from ..constants import UPDATE_DELTA
from ..model_spec import ModelSpec
from ..records import (
    Layout,
    assemble,
    flatten,
    float_arrays,
    payload_stype,
    split_reply,
    with_content,
    with_error,
)
from .failures import Failure, error_reason

__all__ = ["ReplyDecoder"]


@dataclass(frozen=True)
class _Entry:
    """A reply that passed the checks: where its payload and exact arrays are."""

    index: int
    key: str
    blob: bytes
    exact: dict[str, Array]
    node: int


@dataclass(frozen=True)
class ReplyDecoder:
    """Decodes one round's train replies against the model that was broadcast.

    Attributes
    ----------
    codec
        The uplink codec.
    update
        ``"delta"`` (payload = local - global) or ``"weights"`` (lossless codecs).
    layout, spec
        Where the compressed arrays sit, and the run's model (keys, shapes).
    global_arrays
        The global model of the round (the reference deltas are added to).
    weight_key
        The metric the inner strategy weights replies by (fast path).
    """

    codec: fedrot.Codec
    update: str
    layout: Layout
    spec: ModelSpec
    global_arrays: ArrayRecord
    weight_key: str = "num-examples"

    def decode(
        self, replies: list[Message], *, seed: int, fast_path: bool
    ) -> tuple[list[Message], list[Failure]]:
        """Replies with decoded arrays (failed ones as error replies); failures.

        ``seed`` is the round seed; with ``fast_path`` the replies' weighted mean
        comes from one ``codec.aggregate`` call and every reply carries it.
        """
        out: list[Message] = list(replies)
        failures: list[Failure] = []
        entries: list[_Entry] = []

        def fail(i: int, failure: Failure) -> None:
            failures.append(failure)
            if not replies[i].has_error():
                out[i] = self._reject(replies[i], failure.problem)

        for i, msg in enumerate(replies):
            checked = self._check_reply(msg)
            if isinstance(checked, Failure):
                fail(i, checked)
            elif checked is not None:
                entries.append(
                    _Entry(
                        i, checked[0], checked[1], checked[2], msg.metadata.src_node_id
                    )
                )
        if not entries:
            return out, failures
        mean = self._fast_mean(replies, entries, seed) if fast_path else None
        reference = (
            flatten(self.global_arrays, self.layout)
            if self.update == UPDATE_DELTA
            else None
        )
        for entry in entries:
            if mean is not None:
                floats = mean
            else:
                try:
                    vec = self._decode_one(entry.blob, seed, entry.node)
                except (fedrot.PayloadError, RuntimeError, MemoryError) as exc:
                    fail(entry.index, Failure("corrupt", f"corrupt payload: {exc}"))
                    continue
                floats = float_arrays(
                    vec if reference is None else reference + vec, self.layout
                )
            msg = replies[entry.index]
            content = RecordDict(dict(msg.content.items()))
            content[entry.key] = assemble(self.layout, floats, entry.exact)
            out[entry.index] = with_content(msg, content)
        return out, failures

    def _check_reply(
        self, msg: Message
    ) -> Failure | tuple[str, bytes, dict[str, Array]] | None:
        """A failure, None (a lossless reply with nothing packed: passes as it is),
        or (record key, payload, exact arrays) of a reply whose header fits."""
        if msg.has_error():
            return Failure(error_reason(msg), msg.error.reason or "")
        layout = self.layout
        records = list(msg.content.array_records.items())
        if len(records) != 1:
            return Failure(
                "mismatch", f"it holds {len(records)} ArrayRecords instead of 1"
            )
        key, record = records[0]
        if layout.d == 0:
            problem = self.spec.mismatch(record)
            return None if problem is None else Failure("mismatch", problem)
        payload, exact = split_reply(record)
        if payload is None:
            return Failure(
                "no-payload",
                "it carries no fedrot payload (uncompressed arrays "
                f"{list(record.keys())[:4]}). Add `fedrot.clients.compression_mod` "
                "first in the ClientApp's mods",
            )
        stype = payload_stype(self.codec.name)
        if payload.stype != stype:
            return Failure(
                "mismatch",
                f"its payload has stype {payload.stype!r} but this server expects "
                f"{stype!r}; run the same codec and fedrot version on both sides",
            )
        problem = self._exact_mismatch(exact)
        if problem is not None:
            return Failure("mismatch", problem)
        try:
            header, _ = wire.parse(payload.data)
        except fedrot.PayloadError as exc:
            return Failure("corrupt", f"corrupt payload: {exc}")
        if header.d != layout.d:
            # checked before decoding: a forged d never reaches an allocation
            return Failure(
                "mismatch",
                f"the payload holds d = {header.d} values but the broadcast model has "
                f"{layout.d} compressed parameters",
            )
        try:  # parameters, body length and counts, still without allocating d
            self.codec.check(payload.data, d=layout.d)
        except fedrot.PayloadError as exc:
            return Failure("corrupt", f"corrupt or mismatched payload: {exc}")
        return key, payload.data, exact

    def _exact_mismatch(self, exact: dict[str, Array]) -> str | None:
        """Why the exact arrays of a reply do not fit the broadcast, or None."""
        want = self.layout.exact_keys
        if tuple(exact) != want:
            missing = [k for k in want if k not in exact]
            extra = [k for k in exact if k not in want]
            return (
                f"the reply's exact arrays do not match the broadcast: missing "
                f"{missing[:4]}, unexpected {extra[:4]}"
            )
        shapes = dict(zip(self.spec.keys, self.spec.shapes, strict=True))
        for k, arr in exact.items():
            if tuple(int(s) for s in arr.shape) != shapes[k]:
                return (
                    f"exact array {k!r} has shape {list(arr.shape)}, the model has "
                    f"{list(shapes[k])}"
                )
        return None

    def _decode_one(self, blob: bytes, seed: int, node: int) -> np.ndarray:
        vec = self.codec.decode(blob, seed=seed, client=node).cpu().numpy()
        if vec.shape != (self.layout.d,):
            raise fedrot.PayloadError(
                f"the payload holds {vec.shape[0]} values but the global model has "
                f"{self.layout.d} compressed parameters"
            )
        return vec

    def _fast_mean(
        self, replies: list[Message], entries: list[_Entry], seed: int
    ) -> dict[str, Array] | None:
        """The arrays of ``global + codec.aggregate(deltas)``, or None to decode
        the replies one by one."""
        weight_key = self.weight_key
        weights = []
        for entry in entries:
            metrics = list(replies[entry.index].content.metric_records.values())
            value = metrics[0].get(weight_key) if len(metrics) == 1 else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None  # let the inner strategy report the malformed reply
            weights.append(float(value))
        if sum(weights) <= 0:
            return None
        try:
            mean = self.codec.aggregate(
                [e.blob for e in entries],
                seed=seed,
                clients=[e.node for e in entries],
                weights=weights,
            )
        except (fedrot.PayloadError, RuntimeError, MemoryError) as exc:
            log(WARNING, "fedrot fast path: %s; decoding the replies one by one", exc)
            return None
        vec = mean.cpu().numpy()
        if vec.shape != (self.layout.d,):
            return None
        return float_arrays(flatten(self.global_arrays, self.layout) + vec, self.layout)

    def _reject(self, msg: Message, problem: str) -> Message:
        node = msg.metadata.src_node_id
        reason = f"fedrot rejected the train reply of node {node}: {problem}"
        log(ERROR, "%s", reason)
        return with_error(msg, Error(code=ErrorCode.UNKNOWN, reason=reason))
