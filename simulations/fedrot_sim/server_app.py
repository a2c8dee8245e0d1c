"""ServerApp: FedAvg wrapped in ``CompressedStrategy``; central evaluation every round.

``flwr run simulations`` reads the kebab-case keys of ``[tool.flwr.app.config]`` in
``simulations/pyproject.toml`` (parsed once into :class:`RunConfig`) and writes one
run record (:mod:`fedrot_sim.records`). With ``runs-file`` (what the sweep passes)
it runs every config of that batch file one after the other in the same federation,
run ``b`` on its own block of ``num-clients`` SuperNodes (see
:mod:`fedrot_sim.sampling`), and writes each record as soon as its run ends: one
Ray start-up and one data load serve the whole batch.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result
from torch import nn

from fedrot.constants import (
    METRIC_DOWNLINK_BYTES,
    METRIC_DOWNLINK_PAYLOAD_BYTES,
    METRIC_FAILED_REPLIES,
    METRIC_TOTAL_BYTES,
    METRIC_UPLINK_BYTES,
    METRIC_UPLINK_PAYLOAD_BYTES,
)
from fedrot.strategies import CompressedStrategy

from .batch import LOG_FAILED, LOG_FINISHED, LOG_STARTED, read_batch
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

#: Torch threads of the central evaluation (the largest serial step of a round:
#: a forward pass over the 10,000 test images).
EVAL_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Per-reason failure counts are metrics named ``fedrot.failed-replies.<reason>``.
_FAILED_PREFIX = METRIC_FAILED_REPLIES + "."


def run(
    grid: Grid,
    cfg: RunConfig,
    *,
    node_block: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> RunResult:
    """Train ``cfg.rounds`` rounds; per-round accuracy, loss, bytes, failures, times.

    Steps: build the strategy (partitions sampled with the run seed on the
    ``node_block``-th block of nodes, see :mod:`fedrot_sim.sampling`, wrapped in
    fedrot) and the initial model, run Flower's strategy loop with a central
    evaluation after every round, then read each round's metrics into a
    :class:`RoundRecord`.
    """
    sampler = PartitionSampledFedAvg(
        num_partitions=cfg.num_clients,
        per_round=cfg.clients_per_round,
        seed=cfg.seed,
        node_block=node_block,
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
        rounds=round_records(
            result,
            evaluation.times,
            cfg.rounds,
            sampler=sampler,
            server_cpu_s=strategy.cpu_s,
        ),
        total_wall_time_s=evaluation.elapsed(),
    )


class TimedCompressedStrategy(CompressedStrategy):
    """``CompressedStrategy`` that adds up its CPU seconds per round (``cpu_s``).

    ``time.thread_time`` around each configure and aggregate call: downlink
    encoding, reply checks, decoding and aggregation, and fedrot's byte counting.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu_s: dict[int, float] = defaultdict(float)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        start = time.thread_time()
        try:
            return list(super().configure_train(server_round, arrays, config, grid))
        finally:
            self.cpu_s[server_round] += time.thread_time() - start

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        start = time.thread_time()
        try:
            return super().aggregate_train(server_round, replies)
        finally:
            self.cpu_s[server_round] += time.thread_time() - start

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        start = time.thread_time()
        try:
            return list(super().configure_evaluate(server_round, arrays, config, grid))
        finally:
            self.cpu_s[server_round] += time.thread_time() - start

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        start = time.thread_time()
        try:
            return super().aggregate_evaluate(server_round, replies)
        finally:
            self.cpu_s[server_round] += time.thread_time() - start


def make_strategy(
    cfg: RunConfig, sampler: PartitionSampledFedAvg
) -> TimedCompressedStrategy:
    """The client sampler wrapped in fedrot with the run's codec and broadcasts."""
    return TimedCompressedStrategy(
        sampler,
        codec=cfg.codec,
        seed=cfg.seed,
        error_feedback=cfg.error_feedback,
        downlink=cfg.downlink or None,
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
        # the clients wait for the next round meanwhile, so the evaluation may use
        # the machine's cores; the server's fedrot work stays on one thread
        threads = torch.get_num_threads()
        torch.set_num_threads(EVAL_THREADS)
        try:
            loss, acc = evaluate(self.model, self.x_test, self.y_test)
        finally:
            torch.set_num_threads(threads)
        self.times[server_round] = self.elapsed()
        if self.on_round is not None and server_round > 0:
            self.on_round(server_round)
        return MetricRecord({"loss": loss, "accuracy": acc})


def round_records(
    result: Result,
    times: dict[int, float],
    rounds: int,
    *,
    sampler: PartitionSampledFedAvg,
    server_cpu_s: dict[int, float],
) -> tuple[RoundRecord, ...]:
    """One :class:`RoundRecord` per round 0..rounds from Flower's ``Result``.

    Bytes add up the train and evaluate phases' metrics; CPU times come from the
    sampler (per client, in partition order) and the timed strategy.
    """
    out = []
    for r in range(rounds + 1):
        ev = result.evaluate_metrics_serverapp.get(r, MetricRecord())
        tr = result.train_metrics_clientapp.get(r)
        trained = tr is not None
        tr = MetricRecord() if tr is None else tr
        phases = (tr, result.evaluate_metrics_clientapp.get(r, MetricRecord()))
        clients = list(sampler.partitions.get(r, []))
        cpu = sampler.client_times.get(r, {})
        out.append(
            RoundRecord(
                round=r,
                accuracy=float(ev.get("accuracy", math.nan)),
                loss=float(ev.get("loss", math.nan)),
                train_loss=float(tr.get("train-loss", math.nan)),
                uplink_bytes=_sum(phases, METRIC_UPLINK_BYTES),
                downlink_bytes=_sum(phases, METRIC_DOWNLINK_BYTES),
                total_bytes=_sum(phases, METRIC_TOTAL_BYTES),
                uplink_payload_bytes=_sum(phases, METRIC_UPLINK_PAYLOAD_BYTES),
                downlink_payload_bytes=_sum(phases, METRIC_DOWNLINK_PAYLOAD_BYTES),
                failed_replies=int(tr.get(METRIC_FAILED_REPLIES, 0)),
                failed_by_reason={
                    k.removeprefix(_FAILED_PREFIX): int(v)
                    for k, v in tr.items()
                    if k.startswith(_FAILED_PREFIX) and int(v) > 0
                },
                trained=trained and r > 0,
                clients=clients,
                wall_time_s=times.get(r, math.nan),
                train_cpu_s=[cpu[p][0] for p in clients if p in cpu],
                codec_cpu_s=[cpu[p][1] for p in clients if p in cpu],
                server_cpu_s=float(server_cpu_s.get(r, 0.0)),
                diverged_clients=sampler.diverged.get(r, 0),
            )
        )
    return tuple(out)


def _sum(phases: tuple[MetricRecord, ...], key: str) -> int:
    """A byte metric added up over a round's phases (absent counts 0)."""
    return sum(int(p.get(key, 0)) for p in phases)


def batch_configs(rc: dict[str, Any]) -> list[RunConfig]:
    """The runs a ``flwr run`` asks for: the batch file's, or the one in the keys."""
    runs_file = str(rc.get("runs-file", ""))
    if runs_file:
        return read_batch(Path(runs_file))
    return [RunConfig.from_run_config(rc)]


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of ``flwr run simulations``; writes ``<out>/<run-id>.json`` per run.

    A run that raises is logged and skipped; the batch goes on.

    Raises
    ------
    RuntimeError
        At the end, if a run failed or a round lost train replies (the message
        names the runs and the rounds).
    """
    rc = dict(context.run_config)
    configs = batch_configs(rc)
    torch.set_num_threads(1)
    out = Path(str(rc.get("out", "results/flwr-run")))
    problems: list[str] = []
    for block, cfg in enumerate(configs):
        log(INFO, "%s %s (%s)", LOG_STARTED, cfg.run_id, cfg.label)
        try:
            result = run(grid, cfg, node_block=block)
        except Exception as exc:  # one failed run does not stop the batch
            log(ERROR, "%s %s: %r", LOG_FAILED, cfg.run_id, exc)
            problems.append(f"run {cfg.run_id} ({cfg.label}) failed: {exc!r}")
            continue
        path = write_run_record(out, cfg, result)
        problems += lost_replies(read_run_record(path))
        log(
            INFO,
            "%s %s in %.0f s",
            LOG_FINISHED,
            cfg.run_id,
            result.total_wall_time_s,
        )
    if problems:
        raise RuntimeError("Runs failed or lost replies:\n" + "\n".join(problems))
