"""Finished run records -> ``results.csv``, ``summary.md`` and three PNG plots."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .config import format_codec_params
from .models import DEFAULT_MODELS
from .stats import Interval, mean_interval, paired_interval

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


def final_accuracy(doc: dict[str, Any]) -> float:
    """Mean test accuracy of a run's last :data:`LAST_ROUNDS` training rounds.

    Round 0 (the initial model) never counts, also in runs shorter than that.
    """
    last = doc["rounds"][1:][-LAST_ROUNDS:]
    return sum(r["accuracy"] for r in last) / len(last)


def summarize(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (panel, label): final accuracy over seeds, the paired difference to fp32.

    ``accuracy`` is the mean final accuracy over seeds with its 95% t interval;
    ``delta`` the mean over seeds of (this setting - fp32 of the same seed), with
    its 95% t interval (seeds without an fp32 run are left out of it); bytes and
    wall time are means over seeds.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        groups[(panel(doc["config"]), doc["label"])].append(doc)
    finals = {
        key: {d["config"]["seed"]: final_accuracy(d) for d in runs}
        for key, runs in groups.items()
    }
    out = []
    for (task, label), runs in groups.items():
        mine, ref = finals[(task, label)], finals.get((task, "fp32"), {})
        seeds = sorted(set(mine) & set(ref))
        ref_uplink = [
            sum(r["uplink_bytes"] for r in d["rounds"])
            for d in groups.get((task, "fp32"), [])
        ]
        uplink = [sum(r["uplink_bytes"] for r in d["rounds"]) for d in runs]
        payload = [sum(r["uplink_payload_bytes"] for r in d["rounds"]) for d in runs]
        out.append(
            {
                "task": task,
                "label": label,
                "seeds": len(runs),
                "rounds": len(runs[0]["rounds"]) - 1,
                "accuracy": mean_interval(list(mine.values())),
                "delta": paired_interval(
                    [mine[s] for s in seeds], [ref[s] for s in seeds]
                )
                if seeds
                else None,
                "uplink_mb": _mean(uplink) / 1e6,
                "payload_mb": _mean(payload) / 1e6,
                "ratio": _mean(ref_uplink) / _mean(uplink)
                if ref_uplink and _mean(uplink)
                else math.nan,
                "wall_time_s": _mean(
                    [d.get("total_wall_time_s", math.nan) for d in runs]
                ),
                "num_params": runs[0]["num_params"],
                "failed_replies": sum(
                    r["failed_replies"] for d in runs for r in d["rounds"]
                ),
            }
        )
    return sorted(out, key=lambda s: (s["task"], -s["uplink_mb"]))


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else math.nan


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _accuracy_cell(acc: Interval) -> str:
    if acc.n < 2:
        return f"{100 * acc.mean:.2f}%"
    return f"{100 * acc.mean:.2f}% ± {100 * acc.half_width:.2f}"


def _delta_cell(delta: Interval | None) -> str:
    if delta is None:
        return "n/a"
    if delta.n < 2:
        return _pp(delta.mean)
    return f"{_pp(delta.mean)} [{_pp(delta.low)}, {_pp(delta.high)}]"


def _markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| task | codec | seeds | final accuracy (last 5 rounds) | vs fp32, paired "
        "(pp) | uplink MB | payload MB | compression vs fp32 | wall time s "
        "| failed replies |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['task']} | {s['label']} | {s['seeds']} "
            f"| {_accuracy_cell(s['accuracy'])} | {_delta_cell(s['delta'])} "
            f"| {s['uplink_mb']:.2f} | {s['payload_mb']:.2f} | {s['ratio']:.1f}x "
            f"| {s['wall_time_s']:.0f} | {s['failed_replies']} |"
        )
    lines += [
        "",
        "Final accuracy: mean over seeds of the mean test accuracy of the last "
        f"{LAST_ROUNDS} rounds, ± the half-width of its 95% Student-t interval. "
        "vs fp32: mean over seeds of (setting - fp32 of the same seed; the runs of "
        "a seed share clients, batches and initial model) with its 95% t interval "
        "[low, high]; an interval that excludes 0 is a significant difference. "
        "With one seed there is no interval.",
    ]
    return "\n".join(lines) + "\n"


def _paired_plot(summary: list[dict[str, Any]], out: Path) -> Path:
    """``paired_difference.png``: each setting's paired difference to fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({s["task"] for s in summary})
    rows = max(len([s for s in summary if s["task"] == t]) for t in tasks)
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(7 * len(tasks), 1.2 + 0.45 * rows), squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        entries = [s for s in summary if s["task"] == task and s["delta"] is not None]
        ys = list(range(len(entries)))
        means = [100 * s["delta"].mean for s in entries]
        errs = [
            100 * s["delta"].half_width if s["delta"].n > 1 else 0.0 for s in entries
        ]
        ax.errorbar(means, ys, xerr=errs, fmt="o", capsize=4)
        ax.axvline(0.0, color="grey", linewidth=1)
        ax.set_yticks(ys, [f"{s['label']} ({s['ratio']:.0f}x)" for s in entries])
        ax.set_xlabel("final accuracy - fp32, same seed (pp; 95% t interval)")
        ax.set_title(task)
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / "paired_difference.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    summary = summarize(docs)
    summary_path = out / "summary.md"
    summary_path.write_text(_markdown(summary), encoding="utf-8")
    return [csv_path, summary_path, *_plots(rows, out), _paired_plot(summary, out)]
