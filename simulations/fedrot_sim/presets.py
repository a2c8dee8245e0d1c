"""The sweep presets, as typed records.

A :class:`Preset` is a list of :class:`Group` s; a group is one task's run template
(a :class:`~fedrot_sim.config.RunConfig` without codec and seed), the codec
:class:`Setting` s to compare and the seeds to run them with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig


@dataclass(frozen=True)
class Setting:
    """One codec setting: ``fedrot.get_codec(codec, **params)`` (+ error feedback)."""

    codec: str
    params: Mapping[str, Any] = field(default_factory=dict)
    error_feedback: bool = False


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
DEFAULT_SETTINGS = (
    FP32,
    Setting("drive"),
    Setting("eden", {"bits": 1}),
    Setting("eden", {"bits": 2}),
    Setting("quic-fl", {"bits": 2}),
    Setting("hadamard-sq", {"bits": 1}),
    Setting("qsgd", {"levels": 15}),
)
FASHION = RunConfig(
    task="fashion-mnist",
    rounds=30,
    num_clients=100,
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

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        about="digits, 10 clients (5 per round), 5 rounds: fp32, EDEN 1b, DRIVE; "
        "fp32 and EDEN 1b on a BatchNorm MLP",
        groups=(
            Group(DIGITS, (FP32, Setting("eden", {"bits": 1}), Setting("drive"))),
            Group(
                dataclasses.replace(DIGITS, model="digits-bn-mlp"),
                (FP32, Setting("eden", {"bits": 1})),
            ),
        ),
    ),
    "default": Preset(
        about="Fashion-MNIST, 100 clients (10 per round), Dirichlet 0.5, 30 rounds",
        groups=(Group(FASHION, DEFAULT_SETTINGS),),
    ),
    "paper": Preset(
        about="Fashion-MNIST 100 rounds x 3 seeds (+ variants) and Shakespeare",
        groups=(
            Group(
                dataclasses.replace(FASHION, rounds=100),
                DEFAULT_SETTINGS
                + (
                    Setting("eden", {"bits": 1, "rotations": 1}),
                    Setting("eden", {"bits": 1, "rotations": "auto"}),
                    Setting("quic-fl", {"bits": 1}),
                    Setting("vq", {"bits": 2}),
                    Setting("topk", {"fraction": 0.03125}, error_feedback=True),
                    Setting("signsgd", error_feedback=True),
                ),
                seeds=(0, 1, 2),
            ),
            Group(
                RunConfig(
                    task="shakespeare",
                    rounds=40,
                    num_clients=100,
                    clients_per_round=10,
                    alpha=0.5,
                    lr=1.0,
                    batch_size=32,
                ),
                (
                    FP32,
                    Setting("eden", {"bits": 1}),
                    Setting("drive"),
                    Setting("quic-fl", {"bits": 2}),
                    Setting("hadamard-sq", {"bits": 1}),
                ),
            ),
        ),
    ),
}


def preset_configs(
    name: str, *, rounds: int | None = None, task: str | None = None
) -> list[RunConfig]:
    """Every run of a preset (optionally only one task's), in execution order."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}."
        )
    return PRESETS[name].configs(rounds=rounds, task=task)
