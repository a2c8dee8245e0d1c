"""What the ServerApp sent and received, for the tests to check (server side only).

:class:`RecordingGrid` wraps the run's Grid: every ``send_and_receive`` call (one per
train or evaluate phase) is logged with its wall-clock start and duration, each
instruction's destination node and compressed-broadcast settings (which payloads it
carries: ``full`` for the exact model, or the versions of the corrections), and
each reply's source node and error, if any. :func:`pause_point` lets a test act
between two rounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedrot.constants import DOWNLINK_ARRAY_PREFIX, DOWNLINK_RECORD


def _instruction(msg: Message) -> dict[str, Any]:
    """Destination and broadcast settings of one instruction."""
    out: dict[str, Any] = {
        "node": int(msg.metadata.dst_node_id),
        "type": msg.metadata.message_type,
        "round": int(msg.content["config"]["server-round"]),
    }
    downlink = msg.content.config_records.get(DOWNLINK_RECORD)
    if downlink is not None:
        arrays = next(iter(msg.content.array_records.values()))
        out["version"] = int(downlink["version"])
        out["base"] = int(downlink["base"])
        out["payloads"] = [
            k[len(DOWNLINK_ARRAY_PREFIX) :]
            for k in arrays
            if k.startswith(DOWNLINK_ARRAY_PREFIX)
        ]
    return out


def _reply(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"node": int(msg.metadata.src_node_id)}
    if msg.has_error():
        out["error-code"] = int(msg.error.code)
        out["error-reason"] = msg.error.reason
    else:
        metrics = next(iter(msg.content.metric_records.values()), None)
        if metrics is not None:
            out["metrics"] = dict(metrics)
    return out


class RecordingGrid(Grid):
    """A Grid that logs every phase it runs (see the module docstring)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.phases: list[dict[str, Any]] = []

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if not messages:  # a phase the strategy skipped (fraction 0)
            return list(self.grid.send_and_receive(messages, timeout=timeout))
        sent = [_instruction(m) for m in messages]
        start = time.time()
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.phases.append(
            {
                "type": sent[0]["type"],
                "round": sent[0]["round"],
                "start": start,
                "seconds": time.time() - start,
                "sent": sent,
                "replies": [_reply(m) for m in replies],
            }
        )
        return replies


def pause_point(control_dir: str, server_round: int, *, limit: float = 300) -> None:
    """Write ``paused-<round>`` into ``control_dir`` and wait for ``resume-<round>``.

    Raises
    ------
    TimeoutError
        If the test does not resume the run within ``limit`` seconds.
    """
    folder = Path(control_dir)
    (folder / f"paused-{server_round}").write_text(json.dumps(time.time()))
    resume = folder / f"resume-{server_round}"
    deadline = time.time() + limit
    while not resume.exists():
        if time.time() > deadline:
            raise TimeoutError(
                f"nothing created {resume} within {limit} s after round {server_round}"
            )
        time.sleep(0.2)
