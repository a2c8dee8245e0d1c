"""What a fuzz run found: outcome counts, time and memory per case, failures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .corpus import SETTINGS, SIZES
from .mutations import MUTATIONS

__all__ = ["OK_OUTCOMES", "FuzzReport"]

OK_OUTCOMES = ("payload-error", "decoded")


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


@dataclass
class FuzzReport:
    """Outcome counts, per-case times and peak memory, and the failures of a run."""

    cases: int
    seed: int
    seconds: float
    memory_limit: int | None
    outcomes: Counter[str] = field(default_factory=Counter)
    by_mutation: dict[str, Counter[str]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    rejected_peak: int = 0
    slowest: dict[str, Any] = field(default_factory=dict)
    largest: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Cases whose outcome is neither PayloadError nor a valid output."""
        return sum(n for k, n in self.outcomes.items() if k not in OK_OUTCOMES)

    def summary(self) -> dict[str, Any]:
        """The run's figures as plain JSON-ready values."""
        t = np.asarray(self.times)
        m = np.asarray(self.peaks, dtype=np.float64)
        return {
            "cases": self.cases,
            "seed": self.seed,
            "settings": len(SETTINGS),
            "sizes": list(SIZES),
            "seconds": round(self.seconds, 3),
            "cases_per_s": round(self.cases / self.seconds, 1) if self.seconds else 0,
            "case_ms": {
                "median": round(1e3 * _percentile(t, 50), 4),
                "p99": round(1e3 * _percentile(t, 99), 4),
                "p99.9": round(1e3 * _percentile(t, 99.9), 4),
                "max": round(1e3 * float(t.max()), 4) if t.size else 0,
            },
            "case_peak_rss_bytes": {
                "p99.9": int(_percentile(m, 99.9)),
                "max": int(m.max()) if m.size else 0,
                "max_rejected": self.rejected_peak,
            },
            "memory_limit_bytes": self.memory_limit,
            "slowest_case": self.slowest,
            "largest_case": self.largest,
            "outcomes": dict(self.outcomes.most_common()),
            "by_mutation": {k: dict(v) for k, v in sorted(self.by_mutation.items())},
            "failed": self.failed,
            "failures": self.failures,
        }

    def table(self) -> str:
        """A human-readable summary."""
        s = self.summary()
        ms, rss = s["case_ms"], s["case_peak_rss_bytes"]
        mib = 1 << 20
        lines = [
            f"fedrot.fuzz: {s['cases']} cases (seed {s['seed']}; {s['settings']} "
            f"codec settings x sizes {s['sizes']}, {len(MUTATIONS)} mutations)",
            f"  {s['seconds']:.1f} s, {s['cases_per_s']:.0f} cases/s; per case: median "
            f"{ms['median']:.3f} ms, p99 {ms['p99']:.2f} ms, "
            f"p99.9 {ms['p99.9']:.2f} ms, max {ms['max']:.1f} ms "
            f"({self.slowest.get('what', '-')})",
            f"  peak RSS per case: p99.9 {rss['p99.9'] / mib:.2f} MiB, max "
            f"{rss['max'] / mib:.2f} MiB ({self.largest.get('what', '-')}); "
            f"rejected payloads max {rss['max_rejected'] / mib:.2f} MiB",
            "",
            f"  {'mutation':<15}{'PayloadError':>13}{'decoded':>9}{'FAILED':>8}",
        ]
        for kind, c in sorted(self.by_mutation.items()):
            bad = sum(n for k, n in c.items() if k not in OK_OUTCOMES)
            lines.append(
                f"  {kind:<15}{c['payload-error']:>13}{c['decoded']:>9}{bad:>8}"
            )
        total = self.outcomes
        lines.append(
            f"  {'total':<15}{total['payload-error']:>13}{total['decoded']:>9}"
            f"{self.failed:>8}"
        )
        for f in self.failures[:10]:
            lines.append(
                f"  FAILED case {f['case']}: {f['outcome']} in {f['what']}: "
                f"{f['detail']}"
            )
        if self.failed > len(self.failures[:10]):
            lines.append(f"  ... {self.failed} failed cases in all")
        return "\n".join(lines)
