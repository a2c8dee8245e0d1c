"""Intervals over seeds: Student-t means and paired differences (standard library only).

A setting's runs over seeds give a mean final accuracy with a 95% t interval; its
difference to fp32 is taken seed by seed (the runs of one seed are paired: same
clients, batches and initial model, see :mod:`fedrot_sim.sampling`), and the interval
of that paired difference is what says whether the codec costs accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

_SIMPSON_STEPS = 2000


def _t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom, x >= 0 (Simpson)."""
    log_norm = (
        math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    )

    def pdf(t: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    h = x / _SIMPSON_STEPS
    total = pdf(0.0) + pdf(x)
    for i in range(1, _SIMPSON_STEPS):
        total += (4 if i % 2 else 2) * pdf(i * h)
    return 0.5 + total * h / 3


@cache
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` >= 1 (bisection).

    Equivalent to ``scipy.stats.t.ppf(p, df)`` to about 1e-6.
    """
    if not 0.5 < p < 1:
        raise ValueError(f"`p` must be in (0.5, 1). Found {p}.")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"`df` must be an int >= 1. Found {df!r}.")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A mean with the half-width of its two-sided 95% t interval (NaN for n < 2)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0 (n >= 2 only)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def mean_interval(values: Sequence[float], *, level: float = 0.95) -> Interval:
    """Mean of ``values`` and the half-width of its t interval at ``level``."""
    n = len(values)
    if n == 0:
        raise ValueError("`values` must hold at least one value. Found none.")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, n)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile(0.5 + level / 2, n - 1) * math.sqrt(var / n)
    return Interval(mean, half, n)


def paired_interval(
    values: Sequence[float], reference: Sequence[float], *, level: float = 0.95
) -> Interval:
    """Interval of the mean of ``values[i] - reference[i]`` (pairs share a seed)."""
    if len(values) != len(reference):
        raise ValueError(
            "`values` and `reference` must pair up one to one. Found "
            f"{len(values)} and {len(reference)} values."
        )
    return mean_interval(
        [v - r for v, r in zip(values, reference, strict=True)], level=level
    )
