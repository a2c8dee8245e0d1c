"""Time to accuracy: measured CPU times plus a link model of each client's network.

A round of a run record takes, in simulated seconds,

    T_r = server_cpu_r + max_i (train_cpu_i + codec_cpu_i)
          + 8 * downlink_bytes_r / (n_r * downlink_bps)
          + 8 * uplink_bytes_r / (n_r * uplink_bps)

where ``n_r`` is the number of clients of the round and the bytes are the round's
Fleet message bytes (train and evaluate phases): every client has its own link of
the given bandwidths (a mobile device's, not a shared server link), downloads its
share of the broadcast, trains and encodes, uploads. The CPU times are the ones
measured in the simulation (one thread of this machine's CPU per client); the
central evaluation is not part of a round. Only the bandwidths change between
scenarios, so the time to reach an accuracy is ``C + 8 U / uplink_bps + 8 D /
downlink_bps`` with ``C``, ``U``, ``D`` summed over the rounds it took, and
whether a codec reaches it sooner than fp32 is a threshold on the bandwidth
(:func:`break_even_mbps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Defaults typical of a mobile client (LTE-class: a few Mbit/s up, more down).
DEFAULT_UPLINK_MBPS = 5.0
DEFAULT_DOWNLINK_MBPS = 25.0


@dataclass(frozen=True)
class Link:
    """A client's link: uplink and downlink bandwidth in Mbit/s (10^6 bit/s)."""

    uplink_mbps: float = DEFAULT_UPLINK_MBPS
    downlink_mbps: float = DEFAULT_DOWNLINK_MBPS

    def __post_init__(self) -> None:
        for name in ("uplink_mbps", "downlink_mbps"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(
                    f"`{name}` must be a positive number of Mbit/s. Found {value!r}."
                )

    def describe(self) -> str:
        """``"5 Mbit/s up, 25 Mbit/s down"``."""
        return f"{self.uplink_mbps:g} Mbit/s up, {self.downlink_mbps:g} Mbit/s down"


@dataclass(frozen=True)
class RoundCost:
    """What a round costs a client, split by what the link changes.

    ``cpu_s``: server CPU plus the slowest client's CPU; ``uplink_bytes`` and
    ``downlink_bytes``: one client's share of the round's bytes.
    """

    cpu_s: float
    uplink_bytes: float
    downlink_bytes: float

    def seconds(self, link: Link) -> float:
        """Simulated duration of the round on ``link``."""
        return (
            self.cpu_s
            + 8 * self.uplink_bytes / (link.uplink_mbps * 1e6)
            + 8 * self.downlink_bytes / (link.downlink_mbps * 1e6)
        )


def round_cost(record: dict[str, Any]) -> RoundCost:
    """The cost of one round of a run record (round 0 costs nothing)."""
    clients = max(1, len(record["clients"]))
    cpu = [
        t + c for t, c in zip(record["train_cpu_s"], record["codec_cpu_s"], strict=True)
    ]
    return RoundCost(
        cpu_s=float(record["server_cpu_s"]) + (max(cpu) if cpu else 0.0),
        uplink_bytes=record["uplink_bytes"] / clients,
        downlink_bytes=record["downlink_bytes"] / clients,
    )


def simulated_times(doc: dict[str, Any], link: Link) -> list[float]:
    """Simulated time at the end of each round of a run (round 0 at 0 s)."""
    out, now = [], 0.0
    for r in doc["rounds"]:
        if r["round"] > 0:
            now += round_cost(r).seconds(link)
        out.append(now)
    return out


def rounds_to(doc: dict[str, Any], target: float) -> int | None:
    """The first round (>= 1) whose test accuracy reaches ``target``, or None."""
    for r in doc["rounds"][1:]:
        if r["accuracy"] >= target:
            return int(r["round"])
    return None


def cost_to(doc: dict[str, Any], target: float) -> RoundCost | None:
    """The summed cost of a run's rounds up to the one that reaches ``target``."""
    reached = rounds_to(doc, target)
    if reached is None:
        return None
    costs = [round_cost(r) for r in doc["rounds"][1 : reached + 1]]
    return RoundCost(
        cpu_s=sum(c.cpu_s for c in costs),
        uplink_bytes=sum(c.uplink_bytes for c in costs),
        downlink_bytes=sum(c.downlink_bytes for c in costs),
    )


def mean_cost(costs: Sequence[RoundCost]) -> RoundCost:
    """The component-wise mean of some costs (e.g. over seeds)."""
    if not costs:
        raise ValueError("`costs` must hold at least one cost. Found none.")
    n = len(costs)
    return RoundCost(
        cpu_s=sum(c.cpu_s for c in costs) / n,
        uplink_bytes=sum(c.uplink_bytes for c in costs) / n,
        downlink_bytes=sum(c.downlink_bytes for c in costs) / n,
    )


@dataclass(frozen=True)
class BreakEven:
    """Where a codec reaches the target sooner than the reference (fp32).

    With the downlink a fixed multiple of the uplink (the link's ratio), the codec
    is faster for uplinks ``below`` a bandwidth, ``above`` one, ``always`` or
    ``never``; ``mbps`` is that uplink bandwidth (NaN for always and never).
    """

    kind: str  # "below" | "above" | "always" | "never"
    mbps: float

    def describe(self) -> str:
        """``"below 37 Mbit/s up"``, ``"always"``, ..."""
        if self.kind in ("always", "never"):
            return self.kind
        value = f"{self.mbps:,.0f}" if self.mbps >= 100 else f"{self.mbps:.3g}"
        return f"{self.kind} {value} Mbit/s up"


def break_even_mbps(cost: RoundCost, reference: RoundCost, link: Link) -> BreakEven:
    """Uplink bandwidths at which ``cost`` takes less time than ``reference``.

    The downlink scales with the uplink (``link``'s ratio), so a time is
    ``cpu + 8 (U + D / k) / u`` for uplink ``u`` bit/s and ``k = down / up``; the
    two times cross at one ``u`` at most.
    """
    k = link.downlink_mbps / link.uplink_mbps
    saved_bits = 8 * (
        (reference.uplink_bytes - cost.uplink_bytes)
        + (reference.downlink_bytes - cost.downlink_bytes) / k
    )
    extra_cpu = cost.cpu_s - reference.cpu_s
    if saved_bits <= 0 and extra_cpu >= 0:
        return BreakEven("never", math.nan)
    if saved_bits >= 0 and extra_cpu <= 0:
        return BreakEven("always", math.nan)
    crossing = saved_bits / extra_cpu / 1e6
    return BreakEven("below" if saved_bits > 0 else "above", crossing)
