"""ServerApp: FedAvg wrapped in ``CompressedStrategy``; central evaluation every round.

``flwr run simulations`` reads the kebab-case keys of ``[tool.flwr.app.config]`` in
``simulations/pyproject.toml`` (parsed once into :class:`RunConfig`); the sweep runner
calls :func:`run` with a typed config directly. Both write the same run record
(:mod:`fedrot_sim.records`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Result
from torch import nn

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
from .records import (
    RoundRecord,
    RunResult,
    lost_replies,
    read_run_record,
    write_run_record,
)
from .sampling import PartitionSampledFedAvg
from .training import evaluate

app = ServerApp()

#: Per-reason failure counts are metrics named ``fedrot.failed-replies.<reason>``.
_FAILED_PREFIX = METRIC_FAILED_REPLIES + "."


def run(
    grid: Grid, cfg: RunConfig, *, on_round: Callable[[int], None] | None = None
) -> RunResult:
    """Train ``cfg.rounds`` rounds; per-round accuracy, loss, bytes, failures, time.

    Steps: build the strategy (partitions sampled with the run seed, see
    :mod:`fedrot_sim.sampling`, wrapped in fedrot) and the initial model, run
    Flower's strategy loop with a central evaluation after every round, then read
    each round's metrics into a :class:`RoundRecord`.
    """
    sampler = PartitionSampledFedAvg(
        num_partitions=cfg.num_clients, per_round=cfg.clients_per_round, seed=cfg.seed
    )
    strategy = make_strategy(cfg, sampler)
    model = make_model(cfg.task, model=cfg.model, seed=cfg.seed)
    evaluation = CentralEvaluation(cfg, model, on_round=on_round)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        train_config=train_config(cfg),
        num_rounds=cfg.rounds,
        evaluate_fn=evaluation,
    )
    return RunResult(
        num_params=num_params(model),
        rounds=round_records(result, evaluation.times, cfg.rounds, sampler.partitions),
        total_wall_time_s=evaluation.elapsed(),
    )


def make_strategy(cfg: RunConfig, sampler: FedAvg) -> CompressedStrategy:
    """The client sampler (a FedAvg) wrapped in fedrot with the run's codec."""
    return CompressedStrategy(
        sampler,
        codec=cfg.codec,
        seed=cfg.seed,
        error_feedback=cfg.error_feedback,
        **cfg.codec_params,
    )


def train_config(cfg: RunConfig) -> ConfigRecord:
    """The settings every ClientApp reads from the train message."""
    return ConfigRecord(
        {
            "task": cfg.task,
            "model": cfg.model,
            "num-clients": cfg.num_clients,
            "alpha": cfg.alpha,
            "seed": cfg.seed,
            "local-epochs": cfg.local_epochs,
            "batch-size": cfg.batch_size,
            "lr": cfg.lr,
        }
    )


class CentralEvaluation:
    """Flower's ``evaluate_fn``: test-set loss and accuracy, and when each round ended.

    ``times[r]`` is the time from construction to the end of round ``r``'s
    evaluation; ``on_round(r)`` is called after each training round's.
    """

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        *,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.x_test, self.y_test = test_data(cfg.task, cfg.num_clients)
        self.on_round = on_round
        self.times: dict[int, float] = {}
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since construction."""
        return time.perf_counter() - self._start

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(self.model, self.x_test, self.y_test)
        self.times[server_round] = self.elapsed()
        if self.on_round is not None and server_round > 0:
            self.on_round(server_round)
        return MetricRecord({"loss": loss, "accuracy": acc})


def round_records(
    result: Result,
    times: dict[int, float],
    rounds: int,
    partitions: dict[int, list[int]],
) -> tuple[RoundRecord, ...]:
    """One :class:`RoundRecord` per round 0..rounds from Flower's ``Result``."""
    out = []
    for r in range(rounds + 1):
        ev = result.evaluate_metrics_serverapp.get(r, MetricRecord())
        tr = result.train_metrics_clientapp.get(r)
        trained = tr is not None
        tr = MetricRecord() if tr is None else tr
        out.append(
            RoundRecord(
                round=r,
                accuracy=float(ev.get("accuracy", math.nan)),
                loss=float(ev.get("loss", math.nan)),
                train_loss=float(tr.get("train-loss", math.nan)),
                uplink_bytes=int(tr.get(METRIC_UPLINK_BYTES, 0)),
                downlink_bytes=int(tr.get(METRIC_DOWNLINK_BYTES, 0)),
                uplink_payload_bytes=int(tr.get(METRIC_UPLINK_PAYLOAD_BYTES, 0)),
                downlink_payload_bytes=int(tr.get(METRIC_DOWNLINK_PAYLOAD_BYTES, 0)),
                failed_replies=int(tr.get(METRIC_FAILED_REPLIES, 0)),
                failed_by_reason={
                    k.removeprefix(_FAILED_PREFIX): int(v)
                    for k, v in tr.items()
                    if k.startswith(_FAILED_PREFIX) and int(v) > 0
                },
                trained=trained and r > 0,
                clients=list(partitions.get(r, [])),
                wall_time_s=times.get(r, math.nan),
            )
        )
    return tuple(out)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run simulations``; writes ``<out>/<run-id>.json``.

    Raises
    ------
    RuntimeError
        After writing the record, if a round lost train replies (the message names
        the run and the rounds).
    """
    rc = dict(context.run_config)
    cfg = RunConfig.from_run_config(rc)
    torch.set_num_threads(1)
    result = run(grid, cfg)
    out = Path(str(rc.get("out", "results/flwr-run")))
    problems = lost_replies(read_run_record(write_run_record(out, cfg, result)))
    if problems:
        raise RuntimeError("Train replies were lost:\n" + "\n".join(problems))
