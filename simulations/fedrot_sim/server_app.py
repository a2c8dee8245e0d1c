"""ServerApp: FedAvg wrapped in ``CompressedStrategy``; central evaluation every round.

``flwr run simulations`` reads the kebab-case keys of ``[tool.flwr.app.config]`` in
``simulations/pyproject.toml`` (parsed once into :class:`RunConfig`); the sweep runner
calls :func:`run` with a typed config directly.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedrot.constants import (
    METRIC_DOWNLINK_BYTES,
    METRIC_DOWNLINK_PAYLOAD_BYTES,
    METRIC_FAILED_REPLIES,
    METRIC_UPLINK_BYTES,
    METRIC_UPLINK_PAYLOAD_BYTES,
)
from fedrot.strategies import CompressedStrategy

from .config import RunConfig
from .data import test_data
from .models import make_model, num_params
from .training import evaluate

app = ServerApp()


def run(
    grid: Grid, cfg: RunConfig, *, on_round: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Train ``cfg.rounds`` rounds; returns per-round accuracy, loss, bytes and time."""
    # Nodes may still be registering (FedAvg waits for `num-clients` of them), but
    # more SuperNodes than partitions is a misconfiguration we can see now.
    nodes = len(list(grid.get_node_ids()))
    if nodes > cfg.num_clients:
        raise ValueError(
            f"The federation has {nodes} SuperNodes but `num-clients` is "
            f"{cfg.num_clients}: each SuperNode holds one partition. Set the "
            "simulation's num-supernodes equal to num-clients."
        )
    random.seed(cfg.seed)  # Flower samples clients with the `random` module
    strategy = CompressedStrategy(
        FedAvg(
            fraction_train=cfg.clients_per_round / cfg.num_clients,
            fraction_evaluate=0.0,
            min_train_nodes=cfg.clients_per_round,
            min_available_nodes=cfg.num_clients,
        ),
        codec=cfg.codec,
        seed=cfg.seed,
        error_feedback=cfg.error_feedback,
        **cfg.codec_kwargs(),
    )
    x_test, y_test = test_data(cfg.task, cfg.num_clients)
    model = make_model(cfg.task, seed=cfg.seed)
    start = time.perf_counter()
    times: dict[int, float] = {}

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x_test, y_test)
        times[server_round] = time.perf_counter() - start
        if on_round is not None and server_round > 0:
            on_round(server_round)
        return MetricRecord({"loss": loss, "accuracy": acc})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        train_config=ConfigRecord(
            {
                "task": cfg.task,
                "num-clients": cfg.num_clients,
                "alpha": cfg.alpha,
                "partition-seed": cfg.seed,
                "local-epochs": cfg.local_epochs,
                "batch-size": cfg.batch_size,
                "lr": cfg.lr,
            }
        ),
        num_rounds=cfg.rounds,
        evaluate_fn=central,
    )
    rounds = []
    for r in range(cfg.rounds + 1):
        ev = result.evaluate_metrics_serverapp.get(r, {})
        tr = result.train_metrics_clientapp.get(r, {})
        rounds.append(
            {
                "round": r,
                "accuracy": float(ev.get("accuracy", float("nan"))),
                "loss": float(ev.get("loss", float("nan"))),
                "train_loss": float(tr.get("train-loss", float("nan"))),
                "uplink_bytes": int(tr.get(METRIC_UPLINK_BYTES, 0)),
                "downlink_bytes": int(tr.get(METRIC_DOWNLINK_BYTES, 0)),
                "uplink_payload_bytes": int(tr.get(METRIC_UPLINK_PAYLOAD_BYTES, 0)),
                "downlink_payload_bytes": int(tr.get(METRIC_DOWNLINK_PAYLOAD_BYTES, 0)),
                "failed_replies": int(tr.get(METRIC_FAILED_REPLIES, 0)),
                "wall_time_s": times.get(r, float("nan")),
            }
        )
    return {"num_params": num_params(model), "rounds": rounds}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run simulations``; writes ``<out>/<run-id>.json``."""
    rc = dict(context.run_config)
    cfg = RunConfig.from_run_config(rc)
    torch.set_num_threads(1)
    record = run(grid, cfg)
    out = Path(str(rc.get("out", "results/flwr-run")))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.run_id}.json").write_text(
        json.dumps({"config": cfg.to_dict(), **record}, indent=1), encoding="utf-8"
    )
