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
    "KEY_ERROR_FEEDBACK",
    "KEY_RUN_SEED",
    "KEY_SERVER_ROUND",
    "KEY_UPDATE",
    "METRIC_DOWNLINK_BYTES",
    "METRIC_DOWNLINK_PAYLOAD_BYTES",
    "METRIC_DOWNLINK_REQUESTS",
    "METRIC_FAILED_REPLIES",
    "METRIC_UPLINK_BYTES",
    "METRIC_UPLINK_PAYLOAD_BYTES",
    "METRIC_UPLINK_REQUESTS",
    "PAYLOAD_ARRAY_KEY",
    "STATE_RESIDUAL",
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

# ------------------------------------------------------------------ client state
#: ``Context.state`` ArrayRecord key holding the error-feedback residual.
STATE_RESIDUAL = "fedrot.residual"

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
#: Replies the wrapper rejected (corrupt or mismatched payload, missing mod).
METRIC_FAILED_REPLIES = "fedrot.failed-replies"
