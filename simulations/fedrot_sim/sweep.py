"""Sweep runner: ``python -m simulations --preset NAME --out DIR``.

Runs every (setting, seed) of a preset (:mod:`fedrot_sim.presets`) with ``flwr run``
on a local simulation SuperLink (:mod:`fedrot_sim.launcher`), several runs per
``flwr run`` (:mod:`fedrot_sim.batch`), one run record per finished run
(``DIR/runs/<run-id>.json``, see :mod:`fedrot_sim.records`; logs in ``DIR/logs``;
finished runs are skipped, so an interrupted sweep resumes), then
writes ``DIR/results.csv``, ``DIR/summary.md`` and the plots of
:mod:`fedrot_sim.plots` (accuracy vs uplink bytes, total bytes, round and simulated
wall-clock; paired differences; the frontier; bytes to the target accuracy).

Exit status: 0 when every run finished and no round lost a train reply; 1 when a
run failed or a round lost replies (each named on stderr); 2 for bad options.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from .batch import plan_batches
from .config import TASKS, RunConfig
from .launcher import APP_DIR, LocalSuperLink
from .linkmodel import DEFAULT_DOWNLINK_MBPS, DEFAULT_UPLINK_MBPS, Link
from .presets import PRESETS, preset_configs
from .records import lost_replies, read_run_record
from .report import TARGET_OF_FP32, write_reports


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
        "--seeds",
        type=_seed_list,
        default=None,
        help="run only these seeds of the preset, e.g. 0 or 0,1",
    )
    parser.add_argument(
        "--settings",
        type=_pattern_list,
        default=None,
        help="run only the settings whose label (as in summary.md) matches one of "
        "these comma-separated shell patterns, e.g. 'eden bits=0.0*,fp32'",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Flower's INFO logs"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild the CSV, summary and plots from finished runs",
    )
    parser.add_argument(
        "--uplink-mbps",
        type=float,
        default=DEFAULT_UPLINK_MBPS,
        help="client uplink of the time-to-accuracy model, Mbit/s (default "
        "%(default)s)",
    )
    parser.add_argument(
        "--downlink-mbps",
        type=float,
        default=DEFAULT_DOWNLINK_MBPS,
        help="client downlink of the time-to-accuracy model, Mbit/s (default "
        "%(default)s)",
    )
    parser.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="accuracy (0-1) for bytes and time to accuracy (default: "
        f"{TARGET_OF_FP32:g} x fp32's mean final accuracy)",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Found {args.rounds}.")
    try:
        args.link = Link(uplink_mbps=args.uplink_mbps, downlink_mbps=args.downlink_mbps)
    except ValueError as exc:
        parser.error(f"--uplink-mbps / --downlink-mbps: {exc}")
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
        parser.error(
            f"--target-accuracy must be in (0, 1]. Found {args.target_accuracy}."
        )
    if args.out.resolve().is_relative_to(APP_DIR):
        parser.error(
            f"--out {args.out} is inside the Flower app ({APP_DIR}), which `flwr run` "
            "packages with every run; choose a directory outside it."
        )
    return args


def _seed_list(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` (argparse type of ``--seeds``)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be seeds separated by commas, e.g. 0,1. Found {text!r}."
        ) from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(
            f"must be one or more seeds >= 0, e.g. 0,1. Found {text!r}."
        )
    return seeds


def _pattern_list(text: str) -> list[str]:
    """``"fp32,eden bits=0.0*"`` -> ``["fp32", "eden bits=0.0*"]`` (``--settings``)."""
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(
            f"must be one or more label patterns, e.g. 'fp32,eden bits=1'. Found "
            f"{text!r}."
        )
    return patterns


def _run_pending(pending: list[RunConfig], out: Path, *, verbose: bool) -> list[str]:
    """Run the pending configs in batches through ``flwr run``; one line per failure.

    A run failed when its record is missing after its batch (the ServerApp writes
    each record when the run ends); a batch's log is ``out/logs/<batch>.log``.
    """
    from tqdm import tqdm

    runs_dir = out / "runs"
    failures = []
    batches = plan_batches(pending)
    with (
        tqdm(
            total=sum(c.rounds for c in pending), unit="round", file=sys.stdout
        ) as bar,
        LocalSuperLink(out / ".flwr") as superlink,
    ):
        for configs in batches:
            name = _batch_name(configs)
            log_path = out / "logs" / f"{name}.log"
            started, before = time.perf_counter(), bar.n
            bar.set_description(f"{len(configs)} runs")
            try:
                superlink.run(
                    configs,
                    records_dir=runs_dir,
                    batch_path=out / "batches" / f"{name}.json",
                    log_path=log_path,
                    on_round=lambda _n: bar.update(1),
                    on_run=bar.write,
                    echo=sys.stdout if verbose else None,
                )
            except Exception as exc:  # reported below, per missing record
                bar.write(f"batch {name} failed: {exc}")
            finally:
                bar.update(before + sum(c.rounds for c in configs) - bar.n)
            for cfg in configs:
                if not (runs_dir / f"{cfg.run_id}.json").exists():
                    failures.append(
                        f"run {cfg.run_id} ({cfg.label}) failed: no record; see "
                        f"{log_path}"
                    )
            bar.write(
                f"batch of {len(configs)} runs done in "
                f"{time.perf_counter() - started:.0f} s"
            )
    return failures


def _batch_name(configs: list[RunConfig]) -> str:
    """``batch-<hash of the run ids>`` (stable for the same runs)."""
    digest = hashlib.sha1(" ".join(c.run_id for c in configs).encode()).hexdigest()
    return f"batch-{digest[:10]}"


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
    configs = preset_configs(
        args.preset,
        rounds=args.rounds,
        task=args.task,
        seeds=args.seeds,
        settings=args.settings,
    )
    if not configs:
        print(
            f"error: preset {args.preset} has no runs of task {args.task}, seeds "
            f"{args.seeds} and settings {args.settings}; labels are listed in "
            "summary.md, e.g. 'eden bits=1'",
            file=sys.stderr,
        )
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
        paths = write_reports(
            docs, args.out, link=args.link, target=args.target_accuracy
        )
        print("wrote " + ", ".join(str(p) for p in paths))
    problems = failures + [line for doc in docs for line in lost_replies(doc)]
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems or not docs else 0


__all__ = ["PRESETS", "main", "preset_configs"]
