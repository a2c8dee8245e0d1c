"""Run records: what one finished run writes, for the Flower app and the sweep alike.

A record is one JSON file ``<dir>/<run-id>.json``::

    {"version": 2, "run_id": ..., "label": ..., "config": {...RunConfig...},
     "environment": {...versions, machine...}, "num_params": ...,
     "total_wall_time_s": ..., "rounds": [{...RoundRecord...}, ...]}

Round 0 is the central evaluation of the initial model (no training, no traffic).
Version 2 added the downlink setting, total bytes (train and evaluate phases) and
the measured CPU times.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig

RECORD_VERSION = 2


@dataclass(frozen=True)
class RoundRecord:
    """One round: central evaluation after it, and its train phase's metrics.

    Bytes are fedrot's per-phase metrics summed over the round's train and evaluate
    phases: ``uplink_bytes`` (``fedrot.uplink-bytes``), ``downlink_bytes``,
    ``total_bytes`` (``fedrot.total-bytes``) and the payload bytes.
    ``trained`` is False when the round produced no train metrics (round 0, or a
    round whose aggregation returned nothing). ``failed_by_reason`` holds the
    strategy's per-reason counts (``fedrot.failed-replies.<reason>``), non-zero ones
    only. ``clients`` are the partitions trained in the round, sorted.

    Measured CPU seconds (``time.process_time`` on the clients, ``time.thread_time``
    on the server, one torch thread each): ``train_cpu_s[i]`` is the training loop
    of ``clients[i]``, ``codec_cpu_s[i]`` its client mod's work (rebuilding a
    compressed broadcast, encoding the update); ``server_cpu_s`` is the server
    strategy's work in the round (downlink encoding, reply decoding and
    aggregation, fedrot's byte counting), without the central evaluation.
    ``diverged_clients`` counts the clients whose local training diverged
    (non-finite weights; they sent a zero update, see ``fedrot_sim.client_app``).
    """

    round: int
    accuracy: float
    loss: float
    train_loss: float
    uplink_bytes: int
    downlink_bytes: int
    total_bytes: int
    uplink_payload_bytes: int
    downlink_payload_bytes: int
    failed_replies: int
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    trained: bool = True
    clients: list[int] = field(default_factory=list)
    wall_time_s: float = float("nan")
    train_cpu_s: list[float] = field(default_factory=list)
    codec_cpu_s: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    diverged_clients: int = 0


@dataclass(frozen=True)
class RunResult:
    """What :func:`fedrot_sim.server_app.run` measured."""

    num_params: int
    rounds: tuple[RoundRecord, ...]
    total_wall_time_s: float


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import flwr
    import numpy
    import torch

    import fedrot

    return {
        "python": platform.python_version(),
        "fedrot": fedrot.__version__,
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def run_record(
    cfg: RunConfig, result: RunResult, *, env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document of one finished run."""
    return {
        "version": RECORD_VERSION,
        "run_id": cfg.run_id,
        "label": cfg.label,
        "config": cfg.to_dict(),
        "environment": environment() if env is None else env,
        "num_params": result.num_params,
        "total_wall_time_s": result.total_wall_time_s,
        "rounds": [dataclasses.asdict(r) for r in result.rounds],
    }


def write_run_record(
    directory: Path,
    cfg: RunConfig,
    result: RunResult,
    *,
    env: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/<run-id>.json`` atomically (a killed run leaves no file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{cfg.run_id}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(run_record(cfg, result, env=env), indent=1), encoding="utf-8"
    )
    tmp.replace(path)
    return path


def read_run_record(path: Path) -> dict[str, Any]:
    """A record written by :func:`write_run_record`.

    Raises
    ------
    ValueError
        If the file is of another record version (re-run it: the sweep skips
        only files it can read).
    """
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("version") != RECORD_VERSION:
        raise ValueError(
            f"{path} is a run record of version {doc.get('version')!r}; this code "
            f"reads version {RECORD_VERSION}. Delete it (or use a new --out) to "
            "re-run it."
        )
    return doc


def lost_replies(doc: dict[str, Any]) -> list[str]:
    """One line per round of a record that lost train replies, naming run and round.

    A round lost replies when ``failed_replies`` > 0 (any reason: in a simulation
    every reply is expected to count) or when it produced no train metrics at all.
    """
    problems = []
    for r in doc["rounds"][1:]:
        if r["failed_replies"] > 0:
            reasons = ", ".join(
                f"{k}: {v}" for k, v in sorted(r["failed_by_reason"].items())
            )
            problems.append(
                f"run {doc['run_id']} ({doc['label']}) round {r['round']}: "
                f"{r['failed_replies']} train replies failed"
                + (f" ({reasons})" if reasons else "")
            )
        elif not r["trained"]:
            problems.append(
                f"run {doc['run_id']} ({doc['label']}) round {r['round']}: no train "
                "metrics (no reply was aggregated)"
            )
    return problems
