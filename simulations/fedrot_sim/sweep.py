"""Sweep runner: ``python -m simulations --preset NAME --out DIR``.

Runs every (setting, seed) of a preset (:mod:`fedrot_sim.presets`) with ``flwr run``
on a local simulation SuperLink (:mod:`fedrot_sim.launcher`), one run record per
finished run (``DIR/runs/<run-id>.json``, see :mod:`fedrot_sim.records`; logs in
``DIR/logs``; finished runs are skipped, so an interrupted sweep resumes), then
writes ``DIR/results.csv``, ``DIR/summary.md`` and the plots
``DIR/accuracy_vs_uplink.png``, ``DIR/accuracy_vs_round.png`` and
``DIR/paired_difference.png``.

Exit status: 0 when every run finished and no round lost a train reply; 1 when a
run failed or a round lost replies (each named on stderr); 2 for bad options.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .config import TASKS, RunConfig
from .launcher import APP_DIR, LocalSuperLink
from .presets import PRESETS, preset_configs
from .records import lost_replies, read_run_record
from .report import write_reports


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
    if args.out.resolve().is_relative_to(APP_DIR):
        parser.error(
            f"--out {args.out} is inside the Flower app ({APP_DIR}), which `flwr run` "
            "packages with every run; choose a directory outside it."
        )
    return args


def _run_pending(pending: list[RunConfig], out: Path, *, verbose: bool) -> list[str]:
    """Run each pending config through ``flwr run``; returns one line per failure.

    A run failed when its record is missing afterwards (the ServerApp writes it
    last); its log is ``out/logs/<run-id>.log``.
    """
    from tqdm import tqdm

    runs_dir = out / "runs"
    failures = []
    with (
        tqdm(
            total=sum(c.rounds for c in pending), unit="round", file=sys.stdout
        ) as bar,
        LocalSuperLink(out / ".flwr") as superlink,
    ):
        for cfg in pending:
            bar.set_description(cfg.label)
            started, before = time.perf_counter(), bar.n
            log_path = out / "logs" / f"{cfg.run_id}.log"
            try:
                superlink.run(
                    cfg,
                    records_dir=runs_dir,
                    log_path=log_path,
                    on_round=lambda _r: bar.update(1),
                    echo=sys.stdout if verbose else None,
                )
                if not (runs_dir / f"{cfg.run_id}.json").exists():
                    raise RuntimeError(f"the ServerApp wrote no record; see {log_path}")
            except Exception as exc:  # a failed run is reported, the sweep goes on
                failures.append(f"run {cfg.run_id} ({cfg.label}) failed: {exc}")
                bar.write(f"FAILED {cfg.run_id}: {exc}")
                continue
            finally:
                bar.update(before + cfg.rounds - bar.n)
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
    pending = [c for c in configs if not (runs_dir / f"{c.run_id}.json").exists()]
    print(
        f"preset {args.preset}: {len(configs)} runs, {len(configs) - len(pending)} "
        f"already finished, {len(pending)} to run -> {args.out}",
        flush=True,
    )
    failures: list[str] = []
    if pending and not args.report_only:
        failures = _run_pending(pending, args.out, verbose=args.verbose)
    docs = _finished_records(configs, runs_dir)
    if docs:
        paths = write_reports(docs, args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    problems = failures + [line for doc in docs for line in lost_replies(doc)]
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems or not docs else 0


__all__ = ["PRESETS", "main", "preset_configs"]
