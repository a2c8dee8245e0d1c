"""Typed settings of one simulation run, parsed once from Flower's run config."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import fedrot

TASKS = ("fashion-mnist", "digits", "shakespeare")
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
ROTATION_CHOICES = ("1", "2", "3", "auto", "none")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one federated run (and its result file).

    ``bits`` means: bits per coordinate for drive (must be 1), eden, quic-fl, vq and
    hadamard-sq; quantization levels s for qsgd; the kept fraction for topk/randk;
    ignored (0) for fp32, fp16, terngrad and signsgd. ``rotations`` is "none" for
    codecs that do not rotate.
    """

    task: str = "fashion-mnist"
    codec: str = "fp32"
    bits: float = 0.0
    rotations: str = "none"
    seed: int = 0
    rounds: int = 30
    num_clients: int = 100
    clients_per_round: int = 10
    alpha: float = 0.5
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    error_feedback: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"`task` must be one of {list(TASKS)}. Found {self.task!r}."
            )
        if self.codec not in fedrot.available_codecs():
            raise ValueError(
                f"`codec` must be one of {fedrot.available_codecs()}. "
                f"Found {self.codec!r}."
            )
        if self.rotations not in ROTATION_CHOICES:
            raise ValueError(
                f"`rotations` must be one of {list(ROTATION_CHOICES)}. "
                f"Found {self.rotations!r}."
            )
        for name in (
            "rounds",
            "num_clients",
            "clients_per_round",
            "local_epochs",
            "batch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1. Found {value!r}.")
        if self.clients_per_round > self.num_clients:
            raise ValueError(
                f"`clients_per_round` ({self.clients_per_round}) exceeds `num_clients` "
                f"({self.num_clients})."
            )
        if not self.alpha > 0 or not self.lr > 0:
            raise ValueError(
                f"`alpha` and `lr` must be > 0. Found {self.alpha}, {self.lr}."
            )
        self.codec_kwargs()  # validates codec parameters now, not mid-run

    def codec_kwargs(self) -> dict[str, Any]:
        """Keyword parameters for ``fedrot.get_codec`` / ``CompressedStrategy``."""
        kw: dict[str, Any] = dict(self.extra)
        bits = int(self.bits) if float(self.bits).is_integer() else float(self.bits)
        if self.codec in ("eden", "quic-fl", "vq", "hadamard-sq"):
            kw["bits"] = bits
        elif self.codec == "qsgd":
            kw["levels"] = int(self.bits)
        elif self.codec in ("topk", "randk"):
            kw["fraction"] = float(self.bits)
        elif self.codec == "drive" and self.bits not in (0, 1):
            raise ValueError(
                f"DRIVE sends 1 bit per coordinate. Found bits={self.bits}."
            )
        if self.rotations != "none":
            kw["rotations"] = (
                "auto" if self.rotations == "auto" else int(self.rotations)
            )
        fedrot.get_codec(self.codec, **kw)
        return kw

    @property
    def label(self) -> str:
        """Legend label of the codec setting, e.g. ``eden 1b`` or ``fp32``."""
        if self.codec in ("fp32", "fp16", "terngrad", "signsgd"):
            base = self.codec
        elif self.codec == "qsgd":
            base = f"qsgd s={int(self.bits)}"
        elif self.codec in ("topk", "randk"):
            base = f"{self.codec} {self.bits:g}"
        else:
            base = f"{self.codec} {self.bits:g}b"
        if self.rotations not in ("none", "2") and self.codec not in ("hadamard-sq",):
            base += f" R={self.rotations}"
        return base + (" +EF" if self.error_feedback else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    @property
    def run_id(self) -> str:
        """Stable file name: readable prefix + hash of the full config."""
        digest = hashlib.sha1(
            json.dumps(self.to_dict(), sort_keys=True).encode()
        ).hexdigest()
        rot = "" if self.rotations == "none" else f"-r{self.rotations}"
        return f"{self.task}-{self.codec}-{self.bits:g}{rot}-s{self.seed}-{digest[:8]}"

    @classmethod
    def from_run_config(cls, rc: dict[str, Any]) -> RunConfig:
        """Parse Flower's kebab-case ``run_config`` (unknown keys are an error)."""
        names = {
            f.name.replace("_", "-"): f
            for f in dataclasses.fields(cls)
            if f.name != "extra"
        }
        unknown = sorted(set(rc) - set(names) - {"out"})
        if unknown:
            raise ValueError(
                f"Unknown run-config key(s) {unknown}. "
                f"Valid keys: {', '.join(sorted(names))}."
            )
        kwargs: dict[str, Any] = {}
        for key, f in names.items():
            if key in rc:
                kwargs[f.name] = _coerce(key, rc[key], _TYPES[str(f.type)])
        return cls(**kwargs)


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a run-config value to the field's type, refusing lossy conversions."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
    elif kind is int and isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)
    elif (
        kind is float
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
        return float(value)
    elif kind is str:
        return str(value)
    raise ValueError(
        f"Run-config key `{key}` must be {kind.__name__}. Found {value!r}."
    )
