"""The server's compressed broadcasts in Flower messages (train and evaluate).

:class:`DownlinkSender` rewrites the instructions an inner strategy built: the
compressed arrays are replaced by the broadcast payload(s) of
:class:`fedrot.broadcast.Broadcaster`, the exact arrays stay, and a ConfigRecord
under :data:`~fedrot.constants.DOWNLINK_RECORD` tells the client mod how to rebuild
the model. In delta mode it keeps which version each node holds: a node's version
counts only once a reply shows that its mod rebuilt the model; a node that did not
answer, answered "node unavailable" or could not rebuild the model (restart, lost
state) gets the full model next time.
"""

from __future__ import annotations

import json

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from ..broadcast import Broadcaster, DownlinkSpec
from ..constants import (
    DOWNLINK_ARRAY_PREFIX,
    DOWNLINK_ERROR,
    DOWNLINK_RECORD,
    MOD_ERROR_PREFIX,
)
from ..records import Layout, flatten, payload_array, single_array_record

__all__ = ["DownlinkSender"]


class DownlinkSender:
    """Compressed broadcasts for one run (see the module docstring).

    Parameters
    ----------
    spec : DownlinkSpec
        The broadcast codec and mode.
    run_seed : int
        The run seed shared with the clients.
    """

    def __init__(self, spec: DownlinkSpec, *, run_seed: int) -> None:
        self.spec = spec
        self.run_seed = int(run_seed)
        self.broadcaster = Broadcaster(spec, run_seed=run_seed)
        self.held: dict[int, int] = {}  # node -> version its mod confirmed
        self._sent: dict[int, int] = {}  # node -> version sent, not confirmed yet

    def reset(self) -> None:
        """A new run: no versions, no node holds anything."""
        self.broadcaster.reset()
        self.held.clear()
        self._sent.clear()

    def rewrite(
        self, messages: list[Message], arrays: ArrayRecord, layout: Layout
    ) -> None:
        """Replace each instruction's arrays by the compressed broadcast, in place.

        ``arrays`` is the global model ``x_v`` in the run's dtypes; the messages are
        fresh instructions from the inner strategy (not the caller's objects).
        """
        version = self.broadcaster.update(flatten(arrays, layout))
        exact = {k: arrays[k] for k in layout.exact_keys}
        settings: dict[str, int | str] = {
            "codec": self.spec.codec.name,
            "codec-params": json.dumps(self.spec.codec.params(), sort_keys=True),
            "mode": self.spec.mode,
            "run-seed": self.run_seed,
            "version": version,
            "checksum": self.broadcaster.checksums[version],
            "layout": layout.to_json(),
        }
        shared = self._model_arrays() if self.spec.mode == "model" else None
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            base, payloads = (-1, shared) if shared else self._delta_arrays(node)
            key, _ = single_array_record(
                msg, holding="the model, in each instruction of a compressed broadcast"
            )
            content = RecordDict(dict(msg.content.items()))
            content[key] = ArrayRecord({**payloads, **exact})
            content[DOWNLINK_RECORD] = ConfigRecord({**settings, "base": base})
            msg.content = content
            self._sent[node] = version

    def confirm(self, replies: list[Message]) -> None:
        """Record which nodes now hold the version they were sent."""
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            version = self._sent.pop(node, None)
            if version is None:
                continue
            if msg.has_error() and not _mod_ran(msg):
                self.held.pop(node, None)
            else:
                self.held[node] = version
        for node in self._sent:  # no reply at all: state unknown
            self.held.pop(node, None)
        self._sent.clear()

    # ----------------------------------------------------------------- payloads
    def _model_arrays(self) -> dict[str, Array]:
        name = f"{DOWNLINK_ARRAY_PREFIX}{self.broadcaster.version}"
        blob = self.broadcaster.model_payload()
        return {name: payload_array(self.spec.codec.name, blob)}

    def _delta_arrays(self, node: int) -> tuple[int, dict[str, Array]]:
        steps = self.broadcaster.plan(self.held.get(node))
        if steps is None:
            full = self.broadcaster.full_payload()
            return -1, {f"{DOWNLINK_ARRAY_PREFIX}full": payload_array("fp32", full)}
        base = self.broadcaster.version - len(steps)
        arrays = {
            f"{DOWNLINK_ARRAY_PREFIX}{u}": payload_array(self.spec.codec.name, blob)
            for u, blob in steps
        }
        return base, arrays


def _mod_ran(msg: Message) -> bool:
    """Whether an error reply still proves that the node rebuilt the broadcast: only
    the uplink part of fedrot's mod fails after it. Any other error leaves the
    node's state unknown, so it gets the full model next time."""
    reason = msg.error.reason or ""
    return reason.startswith(MOD_ERROR_PREFIX) and not reason.startswith(
        MOD_ERROR_PREFIX + DOWNLINK_ERROR
    )
