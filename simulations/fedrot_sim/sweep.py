"""Sweep runner: ``python -m simulations --preset NAME --out DIR``.

Runs every (codec, bits, rotations, seed) of a preset on Flower's simulation engine,
one JSON per finished run (``DIR/runs/<run-id>.json``: full config, environment,
per-round accuracy, loss, uplink/downlink bytes and wall time; finished runs are
skipped, so an interrupted sweep resumes), then writes ``DIR/results.csv``,
``DIR/summary.md`` and the plots ``DIR/accuracy_vs_uplink.png`` and
``DIR/accuracy_vs_round.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .config import TASKS, RunConfig
from .report import write_reports

#: Codec settings: (codec, bits, rotations[, error feedback]). ``bits`` is the levels
#: s for qsgd and the kept fraction for topk/randk. Biased codecs use error feedback.
DEFAULT_CODECS = [
    ("fp32", 0, "none"),
    ("drive", 1, "2"),
    ("eden", 1, "2"),
    ("eden", 2, "2"),
    ("quic-fl", 2, "2"),
    ("hadamard-sq", 1, "1"),
    ("qsgd", 15, "none"),
]

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "about": "digits, 10 clients (5 per round), 5 rounds: fp32, EDEN 1b, DRIVE",
        "base": {
            "task": "digits",
            "rounds": 5,
            "num_clients": 10,
            "clients_per_round": 5,
            "alpha": 0.5,
            "lr": 0.3,
            "batch_size": 16,
        },
        "codecs": [("fp32", 0, "none"), ("eden", 1, "2"), ("drive", 1, "2")],
        "seeds": [0],
    },
    "default": {
        "about": "Fashion-MNIST, 100 clients (10 per round), Dirichlet 0.5, 30 rounds",
        "base": {
            "task": "fashion-mnist",
            "rounds": 30,
            "num_clients": 100,
            "clients_per_round": 10,
            "alpha": 0.5,
            "lr": 0.05,
            "batch_size": 32,
        },
        "codecs": DEFAULT_CODECS,
        "seeds": [0],
    },
    "paper": {
        "about": "Fashion-MNIST 100 rounds x 3 seeds (+ variants) and Shakespeare",
        "base": {
            "task": "fashion-mnist",
            "rounds": 100,
            "num_clients": 100,
            "clients_per_round": 10,
            "alpha": 0.5,
            "lr": 0.05,
            "batch_size": 32,
        },
        "codecs": DEFAULT_CODECS
        + [
            ("eden", 1, "1"),
            ("eden", 1, "auto"),
            ("quic-fl", 1, "2"),
            ("vq", 2, "3"),
            ("topk", 0.03125, "none", True),
            ("signsgd", 0, "none", True),
        ],
        "seeds": [0, 1, 2],
        "also": [
            {
                "task": "shakespeare",
                "rounds": 40,
                "num_clients": 100,
                "clients_per_round": 10,
                "lr": 1.0,
                "batch_size": 32,
                "codecs": [
                    ("fp32", 0, "none"),
                    ("eden", 1, "2"),
                    ("drive", 1, "2"),
                    ("quic-fl", 2, "2"),
                    ("hadamard-sq", 1, "1"),
                ],
                "seeds": [0],
            },
        ],
    },
}


def preset_configs(
    name: str, *, rounds: int | None = None, task: str | None = None
) -> list[RunConfig]:
    """Every run of a preset (optionally only one task's), in execution order."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}."
        )
    preset = PRESETS[name]
    groups = [{**preset["base"], "codecs": preset["codecs"], "seeds": preset["seeds"]}]
    groups += [{**preset["base"], **extra} for extra in preset.get("also", [])]
    out = []
    for group in groups:
        base = {k: v for k, v in group.items() if k not in ("codecs", "seeds")}
        if task is not None and base["task"] != task:
            continue
        if rounds is not None:
            base["rounds"] = rounds
        for seed in group["seeds"]:
            for codec, bits, rot, *ef in group["codecs"]:
                out.append(
                    RunConfig(
                        **base,
                        codec=codec,
                        bits=bits,
                        rotations=rot,
                        seed=seed,
                        error_feedback=bool(ef and ef[0]),
                    )
                )
    return out


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


def run_one(
    cfg: RunConfig, *, on_round: Any = None, verbose: bool = False
) -> dict[str, Any]:
    """Run one configuration on Flower's (Ray) simulation engine."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from .client_app import app as client_app
    from .server_app import run

    records: list[dict[str, Any]] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        records.append(run(grid, cfg, on_round=on_round))

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    started = time.perf_counter()
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
    if not records:
        raise RuntimeError(
            f"Run {cfg.run_id} produced no result: the ServerApp failed "
            "(see the log above)."
        )
    return {**records[0], "total_wall_time_s": time.perf_counter() - started}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description="Bandwidth-versus-accuracy sweeps of fedrot codecs on Flower's "
        "simulation engine. Presets: "
        + "; ".join(f"{k}: {v['about']}" for k, v in PRESETS.items()),
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = _parse_args(argv)
    configs = preset_configs(args.preset, rounds=args.rounds, task=args.task)
    if not configs:
        print(f"error: preset {args.preset} has no {args.task} runs", file=sys.stderr)
        return 2
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Ray workers import the ClientApp as `fedrot_sim.client_app`
    app_dir = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (app_dir, os.environ.get("PYTHONPATH", "")) if p
    )
    pending = [c for c in configs if not (runs_dir / f"{c.run_id}.json").exists()]
    print(
        f"preset {args.preset}: {len(configs)} runs, {len(configs) - len(pending)} "
        f"already finished, {len(pending)} to run -> {args.out}",
        flush=True,
    )
    failures = []
    if pending and not args.report_only:
        from tqdm import tqdm

        env = environment()
        with tqdm(
            total=sum(c.rounds for c in pending), unit="round", file=sys.stdout
        ) as bar:
            for cfg in pending:
                bar.set_description(cfg.label)
                try:
                    record = run_one(
                        cfg, on_round=lambda _r: bar.update(1), verbose=args.verbose
                    )
                except Exception as exc:  # a failed run is reported, the sweep goes on
                    failures.append((cfg.run_id, repr(exc)))
                    bar.write(f"FAILED {cfg.run_id}: {exc!r}")
                    continue
                doc = {
                    "config": cfg.to_dict(),
                    "label": cfg.label,
                    "run_id": cfg.run_id,
                    "environment": env,
                    **record,
                }
                tmp = runs_dir / f"{cfg.run_id}.json.tmp"
                tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
                tmp.replace(runs_dir / f"{cfg.run_id}.json")
    finished = [runs_dir / f"{c.run_id}.json" for c in configs]
    docs = [json.loads(p.read_text()) for p in finished if p.exists()]
    if docs:
        paths = write_reports(docs, args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    for run_id, err in failures:
        print(f"run {run_id} failed: {err}", file=sys.stderr)
    return 1 if failures or not docs else 0


__all__ = ["PRESETS", "main", "preset_configs", "run_one"]
