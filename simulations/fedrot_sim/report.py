"""Finished run records -> ``results.csv``, ``summary.md`` and the plots.

The summary compares each setting with fp32 both ways (the ``fp32`` setting of the
same panel): final accuracy over seeds and the paired difference with 95% intervals,
bytes per round (uplink, and uplink + downlink) and their ratio to fp32, bytes and
simulated time (:mod:`fedrot_sim.linkmodel`) to reach a target accuracy, and the
uplink bandwidths at which reaching it with the codec is faster than with fp32.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, format_codec_params
from .linkmodel import (
    BreakEven,
    Link,
    break_even_mbps,
    cost_to,
    mean_cost,
    rounds_to,
    simulated_times,
)
from .models import DEFAULT_MODELS
from .stats import Interval, mean_interval, paired_interval

CSV_COLUMNS = [
    "task",
    "model",
    "codec",
    "codec_params",
    "downlink",
    "label",
    "family",
    "seed",
    "round",
    "accuracy",
    "loss",
    "uplink_bytes",
    "downlink_bytes",
    "total_bytes",
    "cumulative_uplink_bytes",
    "cumulative_downlink_bytes",
    "cumulative_total_bytes",
    "uplink_payload_bytes",
    "downlink_payload_bytes",
    "failed_replies",
    "failed_by_reason",
    "diverged_clients",
    "train_cpu_s",
    "codec_cpu_s",
    "server_cpu_s",
    "simulated_time_s",
    "wall_time_s",
]
LAST_ROUNDS = 5
#: The default target accuracy: this fraction of fp32's mean final accuracy.
TARGET_OF_FP32 = 0.95
REFERENCE = "fp32"


def panel(cfg: dict[str, Any]) -> str:
    """Where a run is compared: its task, plus its model when not the default, plus
    ``, all N clients`` when every client trains every round (cross-silo)."""
    name = str(cfg["task"])
    if cfg["model"] != DEFAULT_MODELS[cfg["task"]]:
        name += f" ({cfg['model']})"
    if cfg["clients_per_round"] == cfg["num_clients"]:
        name += f", all {cfg['num_clients']} clients"
    return name


def family(doc: dict[str, Any]) -> str:
    """The codec family of a run (one frontier line), e.g. ``topk +EF``."""
    return RunConfig.from_dict(doc["config"]).family


def shared_training_times(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the records whose per-client training CPU is the median over the
    panel's runs of the same seed, round and partition.

    Paired runs train the same partitions on the same batches with the same model,
    so their training work is identical and its measured times differ only by
    measurement noise (other jobs on the machine, caches); with the median, the
    simulated times of two settings differ by what the codecs change: their own
    CPU time, their bytes, and the rounds they need. A record without the other
    runs keeps its own times.
    """
    samples: dict[tuple[str, int, int, int], list[float]] = defaultdict(list)
    for doc in docs:
        key = (panel(doc["config"]), doc["config"]["seed"])
        for r in doc["rounds"]:
            for part, t in zip(r["clients"], r["train_cpu_s"], strict=False):
                samples[(*key, r["round"], part)].append(t)
    out = []
    for doc in docs:
        key = (panel(doc["config"]), doc["config"]["seed"])
        rounds = []
        for r in doc["rounds"]:
            times = [
                statistics.median(samples[(*key, r["round"], part)])
                for part in r["clients"][: len(r["train_cpu_s"])]
            ]
            rounds.append({**r, "train_cpu_s": times})
        out.append({**doc, "rounds": rounds})
    return out


def _rows(docs: list[dict[str, Any]], link: Link) -> list[dict[str, Any]]:
    rows = []
    shared = shared_training_times(docs)
    for doc, timed in zip(docs, shared, strict=True):
        cfg = doc["config"]
        up = down = 0
        times = simulated_times(timed, link)
        for r, sim in zip(doc["rounds"], times, strict=True):
            up += r["uplink_bytes"]
            down += r["downlink_bytes"]
            rows.append(
                {
                    "panel": panel(cfg),
                    "task": cfg["task"],
                    "model": cfg["model"],
                    "codec": cfg["codec"],
                    "codec_params": format_codec_params(cfg["codec_params"]),
                    "downlink": format_codec_params(cfg["downlink"]),
                    "label": doc["label"],
                    "family": family(doc),
                    "seed": cfg["seed"],
                    "round": r["round"],
                    "accuracy": r["accuracy"],
                    "loss": r["loss"],
                    "uplink_bytes": r["uplink_bytes"],
                    "downlink_bytes": r["downlink_bytes"],
                    "total_bytes": r["total_bytes"],
                    "cumulative_uplink_bytes": up,
                    "cumulative_downlink_bytes": down,
                    "cumulative_total_bytes": up + down,
                    "uplink_payload_bytes": r["uplink_payload_bytes"],
                    "downlink_payload_bytes": r["downlink_payload_bytes"],
                    "failed_replies": r["failed_replies"],
                    "failed_by_reason": " ".join(
                        f"{k}={v}" for k, v in sorted(r["failed_by_reason"].items())
                    ),
                    "diverged_clients": r.get("diverged_clients", 0),
                    "train_cpu_s": max(r["train_cpu_s"], default=0.0),
                    "codec_cpu_s": max(r["codec_cpu_s"], default=0.0),
                    "server_cpu_s": r["server_cpu_s"],
                    "simulated_time_s": sim,
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


def _per_round(doc: dict[str, Any], key: str) -> float:
    """Mean over a run's training rounds of a byte column."""
    trained = doc["rounds"][1:]
    return sum(r[key] for r in trained) / max(1, len(trained))


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True)
class ToTarget:
    """How a setting reaches the panel's target accuracy (over its seeds)."""

    target: float
    reached: int  # seeds that reached it
    seeds: int
    rounds: float  # mean over the seeds that reached it
    total_mb: float  # all clients' bytes, both ways, until then
    seconds: float  # simulated, on the link
    pays_off: BreakEven | None  # vs fp32; None without an fp32 that reached it


def _to_target(
    runs: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    target: float,
    link: Link,
) -> ToTarget:
    reached = [d for d in runs if rounds_to(d, target) is not None]
    costs = [c for d in reached if (c := cost_to(d, target)) is not None]
    ref = [c for d in reference if (c := cost_to(d, target)) is not None]
    rounds = [rounds_to(d, target) or 0 for d in reached]
    total = [
        sum(r["total_bytes"] for r in d["rounds"][1 : (rounds_to(d, target) or 0) + 1])
        for d in reached
    ]
    return ToTarget(
        target=target,
        reached=len(reached),
        seeds=len(runs),
        rounds=_mean(rounds),
        total_mb=_mean(total) / 1e6,
        seconds=mean_cost(costs).seconds(link) if costs else math.nan,
        pays_off=break_even_mbps(mean_cost(costs), mean_cost(ref), link)
        if costs and ref
        else None,
    )


def targets(
    docs: list[dict[str, Any]], *, target: float | None = None
) -> dict[str, float]:
    """Per panel: ``target``, or :data:`TARGET_OF_FP32` x fp32's mean final accuracy.

    Panels without an fp32 run get no target unless ``target`` is given.
    """
    out: dict[str, float] = {}
    for p in sorted({panel(d["config"]) for d in docs}):
        ref = [
            final_accuracy(d)
            for d in docs
            if panel(d["config"]) == p and d["label"] == REFERENCE
        ]
        if target is not None:
            out[p] = target
        elif ref:
            out[p] = TARGET_OF_FP32 * _mean(ref)
    return out


def summarize(
    docs: list[dict[str, Any]],
    *,
    link: Link | None = None,
    target: float | None = None,
) -> list[dict[str, Any]]:
    """Per (panel, label): accuracy, paired difference, bytes, time to target.

    ``accuracy`` is the mean final accuracy over seeds with its 95% t interval;
    ``delta`` the mean over seeds of (this setting - fp32 of the same seed), with
    its 95% t interval (seeds without an fp32 run are left out of it); bytes per
    round and wall time are means over seeds; ``ratio_uplink`` and
    ``ratio_total`` divide fp32's bytes per round by this setting's;
    ``to_target`` describes reaching the panel's target accuracy (see
    :func:`targets`) on ``link``, with the training times shared by paired runs
    (:func:`shared_training_times`).
    """
    link = Link() if link is None else link
    goals = targets(docs, target=target)
    docs = shared_training_times(docs)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        groups[(panel(doc["config"]), doc["label"])].append(doc)
    finals = {
        key: {d["config"]["seed"]: final_accuracy(d) for d in runs}
        for key, runs in groups.items()
    }
    out = []
    for (task, label), runs in groups.items():
        ref_runs = groups.get((task, REFERENCE), [])
        uplink_only = _uplink_only_label(runs[0])
        only = finals.get((task, uplink_only), {}) if uplink_only else {}
        only_seeds = sorted(set(finals[(task, label)]) & set(only))
        mine, ref = finals[(task, label)], finals.get((task, REFERENCE), {})
        seeds = sorted(set(mine) & set(ref))
        per_round = {
            key: _mean([_per_round(d, key) for d in runs])
            for key in ("uplink_bytes", "downlink_bytes", "total_bytes")
        }
        ref_round = {
            key: _mean([_per_round(d, key) for d in ref_runs])
            for key in ("uplink_bytes", "total_bytes")
        }
        out.append(
            {
                "task": task,
                "label": label,
                "family": family(runs[0]),
                "seeds": len(runs),
                "rounds": len(runs[0]["rounds"]) - 1,
                "accuracy": mean_interval(list(mine.values())),
                "delta": paired_interval(
                    [mine[s] for s in seeds], [ref[s] for s in seeds]
                )
                if seeds
                else None,
                "uplink_only": uplink_only,
                "delta_uplink_only": paired_interval(
                    [finals[(task, label)][s] for s in only_seeds],
                    [only[s] for s in only_seeds],
                )
                if only_seeds
                else None,
                "uplink_mb": _mean(
                    [sum(r["uplink_bytes"] for r in d["rounds"]) for d in runs]
                )
                / 1e6,
                "total_mb": _mean(
                    [sum(r["total_bytes"] for r in d["rounds"]) for d in runs]
                )
                / 1e6,
                "uplink_mb_round": per_round["uplink_bytes"] / 1e6,
                "downlink_mb_round": per_round["downlink_bytes"] / 1e6,
                "total_mb_round": per_round["total_bytes"] / 1e6,
                "ratio_uplink": _ratio(
                    ref_round["uplink_bytes"], per_round["uplink_bytes"]
                ),
                "ratio_total": _ratio(
                    ref_round["total_bytes"], per_round["total_bytes"]
                ),
                "wall_time_s": _mean(
                    [d.get("total_wall_time_s", math.nan) for d in runs]
                ),
                "num_params": runs[0]["num_params"],
                "failed_replies": sum(
                    r["failed_replies"] for d in runs for r in d["rounds"]
                ),
                "diverged": sum(
                    r.get("diverged_clients", 0) for d in runs for r in d["rounds"]
                ),
                "diverged_runs": sum(
                    any(r.get("diverged_clients", 0) for r in d["rounds"]) for d in runs
                ),
                "to_target": _to_target(runs, ref_runs, goals[task], link)
                if task in goals
                else None,
            }
        )
    return sorted(out, key=lambda s: (s["task"], -s["total_mb_round"], s["label"]))


def _uplink_only_label(doc: dict[str, Any]) -> str | None:
    """The label of the same uplink setting with float32 broadcasts, or None when
    the run's broadcasts are float32 already."""
    cfg = RunConfig.from_dict(doc["config"])
    suffix = cfg.downlink_label
    return cfg.label.removesuffix(suffix) if suffix else None


def _ratio(reference: float, value: float) -> float:
    if math.isnan(reference) or not value:
        return math.nan
    return reference / value


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


def _mb(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _x(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}x"


def _cell(text: str) -> str:
    """A markdown table cell (labels such as ``a | down b`` hold pipes)."""
    return text.replace("|", "\\|")


def _target_cells(t: ToTarget, *, reference: bool) -> str:
    seeds = f"{t.reached}/{t.seeds}"
    if not t.reached:
        return f"| {seeds} | not reached | | | |"
    pays = "n/a" if t.pays_off is None else t.pays_off.describe()
    if reference:
        pays = "(reference)"
    return (
        f"| {seeds} | {t.rounds:.1f} | {_mb(t.total_mb)} | {t.seconds:.0f} | {pays} |"
    )


def markdown(summary: list[dict[str, Any]], link: Link) -> str:
    """The ``summary.md`` text: the accuracy-and-bytes table, then time to target."""
    lines = [
        "| task | setting | seeds | final accuracy (last 5 rounds) | vs fp32, paired "
        "(pp) | uplink MB/round | total MB/round | uplink vs fp32 | total vs fp32 "
        "| wall time s | failed replies | diverged updates (runs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['task']} | {_cell(s['label'])} | {s['seeds']} "
            f"| {_accuracy_cell(s['accuracy'])} | {_delta_cell(s['delta'])} "
            f"| {_mb(s['uplink_mb_round'])} | {_mb(s['total_mb_round'])} "
            f"| {_x(s['ratio_uplink'])} | {_x(s['ratio_total'])} "
            f"| {s['wall_time_s']:.0f} | {s['failed_replies']} "
            f"| {s['diverged']} ({s['diverged_runs']}) |"
        )
    lines += [
        "",
        "Final accuracy: mean over seeds of the mean test accuracy of the last "
        f"{LAST_ROUNDS} rounds, ± the half-width of its 95% Student-t interval. "
        "vs fp32: mean over seeds of (setting - fp32 of the same seed; the runs of "
        "a seed share clients, batches and initial model) with its 95% t interval "
        "[low, high]; an interval that excludes 0 is a significant difference. "
        "With one seed there is no interval. MB/round: Fleet message bytes of all "
        "clients per round (train and evaluate phases), uplink and uplink + "
        "downlink; vs fp32: fp32's bytes per round (float32 both ways) divided by "
        "the setting's. Diverged updates: client updates whose local training "
        "ended with non-finite weights (sent as zero updates), and in how many "
        "runs.",
        "",
    ]
    with_down = [s for s in summary if s["delta_uplink_only"] is not None]
    if with_down:
        lines += [
            "Compressed broadcasts against the same uplink codec with float32 "
            "broadcasts (paired by seed):",
            "",
            "| task | setting | vs uplink-only (pp) | total MB/round | total vs "
            "uplink-only |",
            "|---|---|---|---|---|",
        ]
        by_label = {(s["task"], s["label"]): s for s in summary}
        for s in with_down:
            only = by_label[(s["task"], s["uplink_only"])]
            lines.append(
                f"| {s['task']} | {_cell(s['label'])} "
                f"| {_delta_cell(s['delta_uplink_only'])} "
                f"| {_mb(s['total_mb_round'])} "
                f"| {_x(_ratio(only['total_mb_round'], s['total_mb_round']))} |"
            )
        lines.append("")
    with_target = [s for s in summary if s["to_target"] is not None]
    if not with_target:
        return "\n".join(lines) + "\n"
    lines += [
        f"Time to accuracy on a client link of {link.describe()} (measured CPU "
        "times + bytes / bandwidth per round, see fedrot_sim/linkmodel.py; each "
        "client's training time is the median over the settings of its seed, "
        "round and partition, since paired runs do the same training work):",
        "",
        "| task | setting | target | seeds reaching it | rounds | total MB | "
        "simulated s | faster than fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in with_target:
        t = s["to_target"]
        lines.append(
            f"| {s['task']} | {_cell(s['label'])} | {100 * t.target:.1f}% "
            + _target_cells(t, reference=s["label"] == REFERENCE)
        )
    lines += [
        "",
        f"Target: {100 * TARGET_OF_FP32:.0f}% of fp32's mean final accuracy unless "
        "--target-accuracy sets it; rounds, bytes and time are means over the seeds "
        "that reached it. Faster than fp32: the uplink bandwidths (downlink "
        f"{link.downlink_mbps / link.uplink_mbps:g}x the uplink) at which the "
        "setting reaches the target sooner than fp32 both ways.",
    ]
    return "\n".join(lines) + "\n"


def write_reports(
    docs: list[dict[str, Any]],
    out: Path,
    *,
    link: Link | None = None,
    target: float | None = None,
) -> list[Path]:
    """Write results.csv, summary.md and the plots; returns their paths."""
    from .plots import write_plots

    link = Link() if link is None else link
    rows = _rows(docs, link)
    csv_path = out / "results.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(docs, link=link, target=target)
    summary_path = out / "summary.md"
    summary_path.write_text(markdown(summary, link), encoding="utf-8")
    return [csv_path, summary_path, *write_plots(rows, summary, out, link=link)]
