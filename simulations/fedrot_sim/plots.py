"""The sweep's PNG plots (matplotlib, Agg backend).

* ``accuracy_vs_uplink.png``, ``accuracy_vs_total.png``, ``accuracy_vs_round.png``,
  ``accuracy_vs_time.png``: test accuracy (mean over seeds, min-max band) against
  cumulative uplink bytes, cumulative uplink + downlink bytes, round, and simulated
  wall-clock on the link model;
* ``paired_difference.png``: each setting's paired difference to fp32 (95% interval);
* ``frontier.png``: final accuracy against uplink bytes and against total bytes of a
  run, one line per codec family, the Pareto front marked;
* ``bytes_to_target.png``: total bytes to reach the target accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .linkmodel import Link

_CURVES = (
    ("cumulative_uplink_bytes", "accuracy_vs_uplink.png", "cumulative uplink MB"),
    (
        "cumulative_total_bytes",
        "accuracy_vs_total.png",
        "cumulative total MB (uplink + downlink)",
    ),
    ("round", "accuracy_vs_round.png", "round"),
    ("simulated_time_s", "accuracy_vs_time.png", "simulated wall-clock (s)"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(labels: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    return {label: cmap(i % cmap.N) for i, label in enumerate(sorted(labels))}


def _log_x(ax: Any) -> None:
    """A log x axis labelled with plain numbers (1, 10, 100, not 10^2)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_front(
    points: list[tuple[float, float]], *, tolerance: float = 0.01
) -> list[int]:
    """Indices of the points no other point beats: none has at most the same bytes
    (``x``, up to a relative ``tolerance``: baselines are set to EDEN's bytes within
    1%) and a higher accuracy (``y``), or fewer bytes and the same accuracy.

    Returned in increasing ``x``.
    """
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any(
            (x2 <= x * (1 + tolerance) and y2 > y) or (x2 < x and y2 == y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not beaten and all(points[k] != (x, y) for k in front):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _curve_plot(
    rows: list[dict[str, Any]],
    out: Path,
    xkey: str,
    fname: str,
    xlabel: str,
    link: Link,
) -> Path:
    plt = _pyplot()
    panels = sorted({r["panel"] for r in rows})
    logx = xkey.startswith("cumulative")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(8 * len(panels), 5.5), squeeze=False
    )
    for ax, name in zip(axes[0], panels, strict=True):
        series: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for r in rows:
            if r["panel"] == name and (r["round"] > 0 or not logx):
                series[r["label"]][r["round"]].append(r)
        colors = _colors(list(series))
        for label in sorted(series):
            pts = sorted(series[label].items())
            scale = 1e-6 if logx else 1.0  # bytes -> MB
            xs = [scale * sum(p[xkey] for p in ps) / len(ps) for _, ps in pts]
            acc = [[p["accuracy"] for p in ps] for _, ps in pts]
            mean = [sum(a) / len(a) for a in acc]
            ax.plot(xs, mean, label=label, linewidth=1.4, color=colors[label])
            if max(len(a) for a in acc) > 1:
                ax.fill_between(
                    xs,
                    [min(a) for a in acc],
                    [max(a) for a in acc],
                    color=colors[label],
                    alpha=0.12,
                )
        if logx:
            _log_x(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (mean over seeds; band: min-max)")
        title = name
        if xkey == "simulated_time_s":
            title += f" - client link {link.describe()}"
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(series) > 12 else 1)
    fig.tight_layout()
    path = out / fname
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _paired_plot(summary: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    panels = sorted({s["task"] for s in summary})
    rows = max(len([s for s in summary if s["task"] == t]) for t in panels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(8 * len(panels), 1.2 + 0.38 * rows), squeeze=False
    )
    for ax, name in zip(axes[0], panels, strict=True):
        entries = [s for s in summary if s["task"] == name and s["delta"] is not None]
        ys = list(range(len(entries)))
        means = [100 * s["delta"].mean for s in entries]
        errs = [
            100 * s["delta"].half_width if s["delta"].n > 1 else 0.0 for s in entries
        ]
        ax.errorbar(means, ys, xerr=errs, fmt="o", capsize=4)
        ax.axvline(0.0, color="grey", linewidth=1)
        ax.set_yticks(
            ys, [f"{s['label']} ({s['ratio_total']:.1f}x total)" for s in entries]
        )
        ax.set_xlabel("final accuracy - fp32, same seed (pp; 95% t interval)")
        ax.set_title(name)
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / "paired_difference.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _paired_accuracy(entry: dict[str, Any], entries: list[dict[str, Any]]) -> float:
    """fp32's mean final accuracy plus the setting's paired difference (%), or the
    setting's own mean when the panel has no fp32."""
    ref = [s for s in entries if s["label"] == "fp32"]
    if entry["delta"] is None or not ref:
        return 100 * float(entry["accuracy"].mean)
    return 100 * (float(ref[0]["accuracy"].mean) + float(entry["delta"].mean))


def _paired_error(entry: dict[str, Any]) -> float:
    delta = entry["delta"]
    return 100 * float(delta.half_width) if delta is not None and delta.n > 1 else 0.0


def _frontier_plot(summary: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    panels = sorted({s["task"] for s in summary})
    fig, axes = plt.subplots(
        len(panels), 2, figsize=(15, 5.5 * len(panels)), squeeze=False
    )
    for row, name in zip(axes, panels, strict=True):
        entries = [s for s in summary if s["task"] == name]
        colors = _colors(sorted({s["family"] for s in entries}))
        for ax, key, what in (
            (row[0], "uplink_mb", "uplink"),
            (row[1], "total_mb", "total (uplink + downlink)"),
        ):
            by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for s in entries:
                by_family[s["family"]].append(s)
            for fam in sorted(by_family):
                pts = sorted(by_family[fam], key=lambda s: s[key])
                ax.errorbar(
                    [s[key] for s in pts],
                    [_paired_accuracy(s, entries) for s in pts],
                    yerr=[_paired_error(s) for s in pts],
                    fmt="o-",
                    capsize=3,
                    markersize=5,
                    linewidth=1.3,
                    color=colors[fam],
                    label=fam,
                )
            points = [(s[key], _paired_accuracy(s, entries)) for s in entries]
            front = pareto_front(points)
            ax.step(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                where="post",
                color="black",
                linestyle="--",
                linewidth=1,
                label="Pareto front",
            )
            ax.scatter(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                s=140,
                facecolors="none",
                edgecolors="black",
                zorder=5,
            )
            _log_x(ax)
            ax.set_xlabel(f"{what} MB per run (all clients, mean over seeds)")
            ax.set_ylabel(
                "final accuracy % (fp32's mean + paired difference;\n"
                "bars: 95% paired interval)"
            )
            ax.set_title(f"{name}: final accuracy vs {what} bytes")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "frontier.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _target_plot(summary: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    panels = sorted({s["task"] for s in summary if s["to_target"] is not None})
    if not panels:
        panels = sorted({s["task"] for s in summary})
    rows = max(len([s for s in summary if s["task"] == t]) for t in panels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(8 * len(panels), 1.2 + 0.38 * rows), squeeze=False
    )
    for ax, name in zip(axes[0], panels, strict=True):
        entries = [s for s in summary if s["task"] == name and s["to_target"]]
        entries.sort(
            key=lambda s: (not s["to_target"].reached, s["to_target"].total_mb)
        )
        ys = list(range(len(entries)))
        reached = [s for s in entries if s["to_target"].reached]
        top = max((s["to_target"].total_mb for s in reached), default=1.0)
        ax.barh(
            ys,
            [
                s["to_target"].total_mb if s["to_target"].reached else top
                for s in entries
            ],
            color=["C0" if s["to_target"].reached else "lightgrey" for s in entries],
        )
        for y, s in zip(ys, entries, strict=True):
            t = s["to_target"]
            text = (
                f" {t.total_mb:.3g} MB, {t.rounds:.1f} rounds ({t.reached}/{t.seeds})"
                if t.reached
                else f" not reached (0/{t.seeds})"
            )
            ax.text(t.total_mb if t.reached else top, y, text, va="center", fontsize=7)
        ax.set_yticks(ys, [s["label"] for s in entries])
        _log_x(ax)
        ax.set_xlim(right=top * 8)
        target = entries[0]["to_target"].target if entries else float("nan")
        ax.set_xlabel(
            f"total MB (all clients, both ways) until {100 * target:.1f}% accuracy"
        )
        ax.set_title(f"{name}: bytes to reach the target")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "bytes_to_target.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], out: Path, *, link: Link
) -> list[Path]:
    """Every plot of the module docstring; returns their paths."""
    paths = [_curve_plot(rows, out, *spec, link) for spec in _CURVES]
    return paths + [
        _paired_plot(summary, out),
        _frontier_plot(summary, out),
        _target_plot(summary, out),
    ]
