"""Sweep runner: ``python -m simulations --preset NAME --out DIR``.

Runs every (setting, seed) of a preset (:mod:`fedrot_sim.presets`) on Flower's
simulation engine, one run record per finished run (``DIR/runs/<run-id>.json``, see
:mod:`fedrot_sim.records`; finished runs are skipped, so an interrupted sweep
resumes), then writes ``DIR/results.csv``, ``DIR/summary.md`` and the plots
``DIR/accuracy_vs_uplink.png`` and ``DIR/accuracy_vs_round.png``.

Exit status: 0 when every run finished and no round lost a train reply; 1 when a
run failed or a round lost replies (each named on stderr); 2 for bad options.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TASKS, RunConfig
from .presets import PRESETS, preset_configs
from .records import (
    RunResult,
    environment,
    lost_replies,
    read_run_record,
    write_run_record,
)
from .report import write_reports


def run_one(
    cfg: RunConfig,
    *,
    on_round: Callable[[int], None] | None = None,
    verbose: bool = False,
) -> RunResult:
    """Run one configuration on Flower's (Ray) simulation engine."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from .client_app import app as client_app
    from .server_app import run

    results: list[RunResult] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        results.append(run(grid, cfg, on_round=on_round))

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": os.cpu_count() or 1,
                "include_dashboard": False,
                "log_to_driver": False,
            },
        },
    )
    if not results:
        raise RuntimeError(
            f"Run {cfg.run_id} produced no result: the ServerApp failed "
            "(see the log above)."
        )
    return results[0]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description="Bandwidth-versus-accuracy sweeps of fedrot codecs on Flower's "
        "simulation engine. Presets: "
        + "; ".join(f"{k}: {v.about}" for k, v in PRESETS.items()),
    )
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--task", choices=TASKS, default=None, help="run only this task of the preset"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="override rounds per run"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Flower's INFO logs"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild the CSV, summary and plots from finished runs",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Found {args.rounds}.")
    return args


def _expose_app_to_workers() -> None:
    """Ray workers import the ClientApp as ``fedrot_sim.client_app``."""
    app_dir = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (app_dir, os.environ.get("PYTHONPATH", "")) if p
    )


def _run_pending(
    pending: list[RunConfig], runs_dir: Path, *, verbose: bool
) -> list[str]:
    """Run and record each pending config; returns one line per failed run."""
    from tqdm import tqdm

    env = environment()
    failures = []
    with tqdm(
        total=sum(c.rounds for c in pending), unit="round", file=sys.stdout
    ) as bar:
        for cfg in pending:
            bar.set_description(cfg.label)
            started = time.perf_counter()
            try:
                result = run_one(
                    cfg, on_round=lambda _r: bar.update(1), verbose=verbose
                )
            except Exception as exc:  # a failed run is reported, the sweep goes on
                failures.append(f"run {cfg.run_id} ({cfg.label}) failed: {exc!r}")
                bar.write(f"FAILED {cfg.run_id}: {exc!r}")
                continue
            write_run_record(runs_dir, cfg, result, env=env)
            bar.write(
                f"finished {cfg.label} (seed {cfg.seed}) in "
                f"{time.perf_counter() - started:.0f} s"
            )
    return failures


def _finished_records(configs: list[RunConfig], runs_dir: Path) -> list[dict[str, Any]]:
    """The records of the configs that have one, in preset order."""
    paths = [runs_dir / f"{c.run_id}.json" for c in configs]
    return [read_run_record(p) for p in paths if p.exists()]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code.

    Steps: parse the options and the preset, run the runs without a record, rebuild
    the reports from every record, then report failed runs and lost replies.
    """
    args = _parse_args(argv)
    configs = preset_configs(args.preset, rounds=args.rounds, task=args.task)
    if not configs:
        print(f"error: preset {args.preset} has no {args.task} runs", file=sys.stderr)
        return 2
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    _expose_app_to_workers()
    pending = [c for c in configs if not (runs_dir / f"{c.run_id}.json").exists()]
    print(
        f"preset {args.preset}: {len(configs)} runs, {len(configs) - len(pending)} "
        f"already finished, {len(pending)} to run -> {args.out}",
        flush=True,
    )
    failures: list[str] = []
    if pending and not args.report_only:
        failures = _run_pending(pending, runs_dir, verbose=args.verbose)
    docs = _finished_records(configs, runs_dir)
    if docs:
        paths = write_reports(docs, args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    problems = failures + [line for doc in docs for line in lost_replies(doc)]
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems or not docs else 0


__all__ = ["PRESETS", "main", "preset_configs", "run_one"]
