"""Names shared by the server wrapper and the client mod (the Flower protocol).

:class:`fedrot.strategies.CompressedStrategy` writes the ``KEY_*`` entries into the
train ``ConfigRecord``; :data:`fedrot.clients.compression_mod` reads them, so the
server is the single source of truth for the codec and its settings. The compressed
update travels as one ``flwr.app.Array`` whose ``stype`` is
``f"{STYPE_PREFIX}{codec}/v{FORMAT_VERSION}"`` (for example ``"fedrot/eden/v1"``).

This module imports neither Flower nor torch.
"""

from __future__ import annotations

__all__ = [
    "KEY_CODEC",
    "KEY_CODEC_PARAMS",
    "KEY_COMPRESS_MASK",
    "KEY_ERROR_FEEDBACK",
    "KEY_RUN_SEED",
    "KEY_SERVER_ROUND",
    "KEY_UPDATE",
    "METRIC_DOWNLINK_BYTES",
    "METRIC_DOWNLINK_PAYLOAD_BYTES",
    "METRIC_DOWNLINK_REQUESTS",
    "DOWNLINK_ARRAY_PREFIX",
    "DOWNLINK_ERROR",
    "DOWNLINK_RECORD",
    "FAILURE_REASONS",
    "FEDROT_FAILURES",
    "METRIC_FAILED_REPLIES",
    "METRIC_FAILED_PREFIX",
    "MOD_ERROR_PREFIX",
    "METRIC_TOTAL_BYTES",
    "METRIC_UPLINK_BYTES",
    "METRIC_UPLINK_PAYLOAD_BYTES",
    "METRIC_UPLINK_REQUESTS",
    "PAYLOAD_ARRAY_KEY",
    "STATE_DOWNLINK_MODEL",
    "STATE_DOWNLINK_TAG",
    "STATE_RESIDUAL",
    "STATE_RESIDUAL_TAG",
    "STYPE_PREFIX",
    "UPDATE_DELTA",
    "UPDATE_WEIGHTS",
]

# ------------------------------------------------------------- train ConfigRecord
#: Codec name (str), one of ``fedrot.available_codecs()``.
KEY_CODEC = "fedrot.codec"
#: JSON object (str) of the codec's keyword parameters, ``codec.params()``.
KEY_CODEC_PARAMS = "fedrot.codec-params"
#: Run seed (int, 0..2**63-1); the codec seed of a round is
#: ``fedrot.round_seed(run_seed, server_round)`` and the client id is the node id.
KEY_RUN_SEED = "fedrot.run-seed"
#: Server round (int) the seeds are derived from.
KEY_SERVER_ROUND = "fedrot.server-round"
#: What the payload encodes: :data:`UPDATE_DELTA` or :data:`UPDATE_WEIGHTS` (str).
KEY_UPDATE = "fedrot.update"
#: Whether the client keeps the compression residual for the next round (bool).
KEY_ERROR_FEEDBACK = "fedrot.error-feedback"
#: Which arrays of the broadcast record the codec compresses (str): hex of a bit
#: mask over the record's keys in order, see ``fedrot.model_spec.mask_to_hex``. The
#: others travel exactly.
KEY_COMPRESS_MASK = "fedrot.compress-mask"

#: The payload encodes ``local - global`` (every lossy codec).
UPDATE_DELTA = "delta"
#: The payload encodes the local float weights themselves (lossless codecs, so the
#: server rebuilds them bit for bit).
UPDATE_WEIGHTS = "weights"

# ------------------------------------------------------------------- reply record
#: ``Array.stype`` prefix of a compressed update.
STYPE_PREFIX = "fedrot/"
#: Key of the compressed Array inside the reply's ArrayRecord.
PAYLOAD_ARRAY_KEY = "fedrot.payload"

# ------------------------------------------------------------ compressed broadcasts
#: RecordDict key of the ConfigRecord that describes a compressed broadcast (train
#: and evaluate instructions); the client mod removes it before the ClientApp runs.
DOWNLINK_RECORD = "fedrot.downlink"
#: Prefix of the broadcast payload Arrays' keys inside the instruction's ArrayRecord:
#: ``f"{DOWNLINK_ARRAY_PREFIX}{version}"`` (a correction or model payload) or
#: ``f"{DOWNLINK_ARRAY_PREFIX}full"`` (the nodes' model, exactly).
DOWNLINK_ARRAY_PREFIX = "fedrot.downlink/"
#: Error replies of the mod whose broadcast could not be rebuilt start with
#: ``MOD_ERROR_PREFIX + DOWNLINK_ERROR``; the server then sends that node the full
#: model next time.
DOWNLINK_ERROR = "downlink: "

# ------------------------------------------------------------------ client state
#: ``Context.state`` ArrayRecord key holding the error-feedback residual.
STATE_RESIDUAL = "fedrot.residual"
#: ``Context.state`` ConfigRecord key: what the stored residual was made for
#: (codec, compress mask, length) and in which round; a residual whose tag does
#: not match the current round's settings is dropped, never applied.
STATE_RESIDUAL_TAG = "fedrot.residual-tag"
#: ``Context.state`` ArrayRecord key of the model a node holds (delta broadcasts).
STATE_DOWNLINK_MODEL = "fedrot.downlink-model"
#: ``Context.state`` ConfigRecord key: the held model's version and what it belongs
#: to (run seed, codec, layout); any mismatch means "no state".
STATE_DOWNLINK_TAG = "fedrot.downlink-tag"

# ------------------------------------------------------------ MetricRecord keys
#: Protobuf bytes the SuperNodes send to deliver the phase's replies.
METRIC_UPLINK_BYTES = "fedrot.uplink-bytes"
#: Sum of ``len(Array.data)`` over the replies' arrays (codec payloads + raw arrays).
METRIC_UPLINK_PAYLOAD_BYTES = "fedrot.uplink-payload-bytes"
#: HTTP requests the SuperNodes make to push the phase's replies.
METRIC_UPLINK_REQUESTS = "fedrot.uplink-requests"
#: Protobuf bytes the SuperNodes receive to fetch the phase's instructions.
METRIC_DOWNLINK_BYTES = "fedrot.downlink-bytes"
#: Sum of ``len(Array.data)`` over the instructions' arrays.
METRIC_DOWNLINK_PAYLOAD_BYTES = "fedrot.downlink-payload-bytes"
#: HTTP requests the SuperNodes make to fetch the phase's instructions.
METRIC_DOWNLINK_REQUESTS = "fedrot.downlink-requests"
#: ``METRIC_UPLINK_BYTES + METRIC_DOWNLINK_BYTES`` of the phase.
METRIC_TOTAL_BYTES = "fedrot.total-bytes"
#: Train replies that did not contribute to the aggregate, whatever the reason
#: (the sum of the per-reason counts below).
METRIC_FAILED_REPLIES = "fedrot.failed-replies"
#: Per-reason counts are ``f"{METRIC_FAILED_PREFIX}{reason}"`` for every reason in
#: :data:`FAILURE_REASONS` (0 included), e.g. ``"fedrot.failed-replies.corrupt"``.
METRIC_FAILED_PREFIX = "fedrot.failed-replies."
#: Why a train reply did not count:
#:
#: - ``client-exception``: the ClientApp raised, failed to load or crashed;
#: - ``node-unavailable``: the node or its message went missing (Flower's
#:   ``NODE_UNAVAILABLE``, ``MESSAGE_UNAVAILABLE``, ``REPLY_MESSAGE_UNAVAILABLE``);
#: - ``client-mod``: fedrot's client mod refused (settings it cannot follow, a
#:   non-finite update, a reply that does not match the broadcast model);
#: - ``no-payload``: the reply carries uncompressed arrays (the mod is missing);
#: - ``mismatch``: the payload is of another codec, version or size, or the exact
#:   arrays are missing or misshaped;
#: - ``corrupt``: the payload fails its checks (CRC, lengths, values);
#: - ``other-error``: any other error reply;
#: - ``no-reply``: an instruction got no reply at all (e.g. the round's
#:   ``Strategy.start(timeout=...)`` ran out before a crashed node was declared
#:   unavailable); counted by number, since Flower does not say which node.
FAILURE_REASONS = (
    "client-exception",
    "node-unavailable",
    "no-reply",
    "client-mod",
    "no-payload",
    "mismatch",
    "corrupt",
    "other-error",
)
#: The reasons fedrot causes: a round whose replies all failed for these raises.
FEDROT_FAILURES = frozenset({"client-mod", "no-payload", "mismatch", "corrupt"})
#: Every error reply of the client mod starts with this text (how the server tells
#: fedrot's refusals from other failures).
MOD_ERROR_PREFIX = "fedrot compression_mod: "
