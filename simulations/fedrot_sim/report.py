"""Turn finished run JSONs into ``results.csv``, ``summary.md`` and two PNG plots."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .config import format_codec_params
from .models import DEFAULT_MODELS

CSV_COLUMNS = [
    "task",
    "model",
    "codec",
    "codec_params",
    "label",
    "seed",
    "round",
    "accuracy",
    "loss",
    "uplink_bytes",
    "downlink_bytes",
    "cumulative_uplink_bytes",
    "uplink_payload_bytes",
    "failed_replies",
    "failed_by_reason",
    "wall_time_s",
]
LAST_ROUNDS = 5


def panel(cfg: dict[str, Any]) -> str:
    """Where a run is compared: its task, plus its model when not the default."""
    if cfg["model"] == DEFAULT_MODELS[cfg["task"]]:
        return str(cfg["task"])
    return f"{cfg['task']} ({cfg['model']})"


def _rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for doc in docs:
        cfg = doc["config"]
        cumulative = 0
        for r in doc["rounds"]:
            cumulative += r["uplink_bytes"]
            rows.append(
                {
                    "panel": panel(cfg),
                    "task": cfg["task"],
                    "model": cfg["model"],
                    "codec": cfg["codec"],
                    "codec_params": format_codec_params(cfg["codec_params"]),
                    "label": doc["label"],
                    "seed": cfg["seed"],
                    "round": r["round"],
                    "accuracy": r["accuracy"],
                    "loss": r["loss"],
                    "uplink_bytes": r["uplink_bytes"],
                    "downlink_bytes": r["downlink_bytes"],
                    "cumulative_uplink_bytes": cumulative,
                    "uplink_payload_bytes": r["uplink_payload_bytes"],
                    "failed_replies": r["failed_replies"],
                    "failed_by_reason": " ".join(
                        f"{k}={v}" for k, v in sorted(r["failed_by_reason"].items())
                    ),
                    "wall_time_s": r["wall_time_s"],
                }
            )
    return rows


def summarize(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, label): final accuracy (mean of the last 5 rounds), bytes, ratios."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        groups[(panel(doc["config"]), doc["label"])].append(doc)
    out = []
    for (task, label), runs in groups.items():
        finals = [
            sum(r["accuracy"] for r in d["rounds"][-LAST_ROUNDS:])
            / min(LAST_ROUNDS, len(d["rounds"]))
            for d in runs
        ]
        uplink = [sum(r["uplink_bytes"] for r in d["rounds"]) for d in runs]
        payload = [sum(r["uplink_payload_bytes"] for r in d["rounds"]) for d in runs]
        out.append(
            {
                "task": task,
                "label": label,
                "seeds": len(runs),
                "rounds": len(runs[0]["rounds"]) - 1,
                "final_accuracy": sum(finals) / len(finals),
                "accuracy_spread": (max(finals) - min(finals)) / 2
                if len(finals) > 1
                else 0.0,
                "uplink_mb": sum(uplink) / len(uplink) / 1e6,
                "payload_mb": sum(payload) / len(payload) / 1e6,
                "wall_time_s": sum(d.get("total_wall_time_s", math.nan) for d in runs)
                / len(runs),
                "num_params": runs[0]["num_params"],
                "failed_replies": sum(
                    r["failed_replies"] for d in runs for r in d["rounds"]
                ),
            }
        )
    for task in {s["task"] for s in out}:
        ref = [s for s in out if s["task"] == task and s["label"] == "fp32"]
        for s in out:
            if s["task"] == task:
                s["ratio"] = (
                    ref[0]["uplink_mb"] / s["uplink_mb"]
                    if ref and s["uplink_mb"]
                    else math.nan
                )
                s["delta_pp"] = (
                    100 * (s["final_accuracy"] - ref[0]["final_accuracy"])
                    if ref
                    else math.nan
                )
    return sorted(out, key=lambda s: (s["task"], -s["uplink_mb"]))


def _markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| task | codec | final accuracy (last 5 rounds) | vs fp32 (pp) | uplink MB "
        "| payload MB | compression vs fp32 | wall time s | failed replies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        spread = f" ± {100 * s['accuracy_spread']:.2f}" if s["seeds"] > 1 else ""
        lines.append(
            f"| {s['task']} | {s['label']} | {100 * s['final_accuracy']:.2f}%{spread} "
            f"| {s['delta_pp']:+.2f} | {s['uplink_mb']:.2f} | {s['payload_mb']:.2f} "
            f"| {s['ratio']:.1f}x | {s['wall_time_s']:.0f} | {s['failed_replies']} |"
        )
    return "\n".join(lines) + "\n"


def _plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tasks = sorted({r["panel"] for r in rows})
    for xkey, fname, xlabel, logx in (
        (
            "cumulative_uplink_bytes",
            "accuracy_vs_uplink.png",
            "cumulative uplink bytes",
            True,
        ),
        ("round", "accuracy_vs_round.png", "round", False),
    ):
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(7 * len(tasks), 5), squeeze=False
        )
        for ax, task in zip(axes[0], tasks, strict=True):
            series: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(
                lambda: defaultdict(list)
            )
            for r in rows:
                if r["panel"] == task and (r["round"] > 0 or not logx):
                    series[r["label"]][r["round"]].append(r)
            for label in sorted(series):
                pts = sorted(series[label].items())
                xs = [sum(p[xkey] for p in ps) / len(ps) for _, ps in pts]
                acc = [[p["accuracy"] for p in ps] for _, ps in pts]
                mean = [sum(a) / len(a) for a in acc]
                (line,) = ax.plot(xs, mean, label=label, linewidth=1.6)
                if max(len(a) for a in acc) > 1:
                    ax.fill_between(
                        xs,
                        [min(a) for a in acc],
                        [max(a) for a in acc],
                        color=line.get_color(),
                        alpha=0.2,
                    )
            if logx:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy")
            ax.set_title(task)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_reports(docs: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write results.csv, summary.md and the plots; returns their paths."""
    rows = _rows(docs)
    csv_path = out / "results.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary_path = out / "summary.md"
    summary_path.write_text(_markdown(summarize(docs)), encoding="utf-8")
    return [csv_path, summary_path, *_plots(rows, out)]
