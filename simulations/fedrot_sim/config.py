"""Typed settings of one simulation run, parsed once from Flower's run config.

The codec is a registry name plus a parameter mapping passed unchanged to
``fedrot.get_codec`` (``{"bits": 1}`` for EDEN, ``{"levels": 15}`` for QSGD,
``{"fraction": 0.03125}`` for top-k): the simulations hold no codec knowledge of their
own, and a run's label is built from the codec's own parameters. The broadcast
(downlink) setting is a mapping passed unchanged to
``CompressedStrategy(downlink=...)`` (``{"codec": "eden", "bits": 8, "mode":
"model"}``; empty: the model travels as float32).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import fedrot
from fedrot.broadcast import DownlinkSpec

from .models import DEFAULT_MODELS, check_model

TASKS = ("fashion-mnist", "digits", "shakespeare")
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
#: Run-config keys of the app that are not RunConfig fields: where records go, and
#: the batch file of a sweep (``fedrot_sim.server_app.batch_configs``).
APP_KEYS = frozenset({"out", "runs-file"})
_PARAM = re.compile(r"^[a-z][a-z0-9_-]*$")
#: RunConfig fields that are mappings, written as ``name=value`` pairs in Flower's
#: run config.
_MAPPINGS = frozenset({"codec_params", "downlink"})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one federated run (and its result file).

    Attributes
    ----------
    task
        One of :data:`TASKS`.
    model
        A model of the task (``fedrot_sim.models.MODELS``); empty means the task's
        default, and is replaced by its name at construction.
    codec, codec_params
        ``fedrot.get_codec(codec, **codec_params)`` is the run's codec.
    error_feedback
        Passed to ``CompressedStrategy``.
    downlink
        ``CompressedStrategy(downlink=...)``: ``{"codec": name, "mode": "model" |
        "delta", **codec params}``; empty means float32 broadcasts (``None``).
    seed
        Run seed: initial model, partition, client sampling and fedrot's seeds.
    """

    task: str = "fashion-mnist"
    model: str = ""
    codec: str = "fp32"
    codec_params: dict[str, Any] = field(default_factory=dict)
    error_feedback: bool = False
    downlink: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    rounds: int = 30
    num_clients: int = 100
    clients_per_round: int = 10
    alpha: float = 0.5
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"`task` must be one of {list(TASKS)}. Found {self.task!r}."
            )
        if not self.model:
            object.__setattr__(self, "model", DEFAULT_MODELS[self.task])
        check_model(self.task, self.model)
        if not isinstance(self.codec_params, dict):
            raise TypeError(
                "`codec_params` must be a dict of fedrot.get_codec keyword "
                f"parameters. Found {type(self.codec_params).__name__}."
            )
        object.__setattr__(self, "codec_params", dict(self.codec_params))
        if not isinstance(self.downlink, dict):
            raise TypeError(
                "`downlink` must be a dict such as {'codec': 'eden', 'bits': 8, "
                "'mode': 'model'} (empty: float32). Found "
                f"{type(self.downlink).__name__}."
            )
        object.__setattr__(self, "downlink", dict(self.downlink))
        for name in (
            "seed",
            "rounds",
            "num_clients",
            "clients_per_round",
            "local_epochs",
            "batch_size",
        ):
            value = getattr(self, name)
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}. Found {value!r}.")
        if self.clients_per_round > self.num_clients:
            raise ValueError(
                f"`clients_per_round` ({self.clients_per_round}) exceeds `num_clients` "
                f"({self.num_clients})."
            )
        if not self.alpha > 0 or not self.lr > 0:
            raise ValueError(
                f"`alpha` and `lr` must be > 0. Found {self.alpha}, {self.lr}."
            )
        self.make_codec()  # validates the codec and its parameters now, not mid-run
        self.downlink_spec()  # ... and the broadcast setting

    def make_codec(self) -> fedrot.Codec:
        """``fedrot.get_codec(codec, **codec_params)``.

        Raises
        ------
        ValueError
            For an unknown codec or parameter, or a bad value (fedrot's message).
        """
        return fedrot.get_codec(self.codec, **self.codec_params)

    def downlink_spec(self) -> DownlinkSpec | None:
        """The parsed broadcast setting (None: float32 broadcasts).

        Raises
        ------
        ValueError
            For a missing or unknown codec, a bad mode or codec parameter.
        """
        if not self.downlink:
            return None
        return DownlinkSpec.parse(self.downlink)

    @property
    def label(self) -> str:
        """Legend label, e.g. ``fp32``, ``topk fraction=0.03 +EF`` or
        ``eden bits=1 | down eden bits=8 model``.

        The codec's name and the parameters this run sets, as the codec reports
        them (``codec.params()``), in the codec's order; then the broadcast's
        codec, parameters and mode after ``| down`` when broadcasts are compressed.
        """
        params = self.make_codec().params()
        shown = [k for k in params if k in self.codec_params]
        parts = [self.codec, *(f"{k}={_show(params[k])}" for k in shown)]
        label = " ".join(parts) + (" +EF" if self.error_feedback else "")
        return label + self.downlink_label

    @property
    def downlink_label(self) -> str:
        """``" | down eden bits=8 model"``, or ``""`` for float32 broadcasts."""
        spec = self.downlink_spec()
        if spec is None:
            return ""
        params = spec.codec.params()
        shown = [f"{k}={_show(params[k])}" for k in params if k in self.downlink]
        return " | down " + " ".join([spec.codec.name, *shown, spec.mode])

    @property
    def family(self) -> str:
        """The codec family a frontier line joins: the label without parameters,
        e.g. ``eden``, ``topk +EF`` or ``eden | down eden model``."""
        family = self.codec + (" +EF" if self.error_feedback else "")
        spec = self.downlink_spec()
        if spec is not None:
            family += f" | down {spec.codec.name} {spec.mode}"
        return family

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The config a run record stores under ``"config"``."""
        return cls(**data)

    @property
    def run_id(self) -> str:
        """Stable file name: readable prefix + hash of the full config."""
        digest = hashlib.sha1(
            json.dumps(self.to_dict(), sort_keys=True).encode()
        ).hexdigest()
        params = "".join(
            f"-{k}{_show(v)}" for k, v in sorted(self.codec_params.items())
        )
        if self.downlink:
            down = dict(self.downlink)
            codec, mode = down.pop("codec", ""), down.pop("mode", "model")
            params += f"-down-{codec}" + "".join(
                f"-{k}{_show(v)}" for k, v in sorted(down.items())
            )
            params += f"-{mode}"
        params = re.sub(r"[^A-Za-z0-9_.=-]", "", params)
        return f"{self.task}-{self.codec}{params}-s{self.seed}-{digest[:8]}"

    @classmethod
    def from_run_config(cls, rc: dict[str, Any]) -> RunConfig:
        """Parse Flower's kebab-case ``run_config`` (unknown keys are an error).

        ``codec-params`` is a string of ``name=value`` pairs separated by spaces or
        commas (``"bits=1 rotations=auto"``); see :func:`parse_codec_params`.
        ``downlink`` likewise (``"codec=eden bits=8 mode=model"``; ``""`` for
        float32 broadcasts).
        """
        names = {f.name.replace("_", "-"): f for f in dataclasses.fields(cls)}
        unknown = sorted(set(rc) - set(names) - APP_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown run-config key(s) {unknown}. "
                f"Valid keys: {', '.join(sorted(names))}."
            )
        kwargs: dict[str, Any] = {}
        for key, f in names.items():
            if key not in rc:
                continue
            if f.name in _MAPPINGS:
                kwargs[f.name] = parse_codec_params(str(rc[key]), key=key)
            else:
                kwargs[f.name] = _coerce(key, rc[key], _TYPES[str(f.type)])
        return cls(**kwargs)

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case run config that :meth:`from_run_config` parses back."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if key in _MAPPINGS:
                value = format_codec_params(value)
            out[key.replace("_", "-")] = value
        return out


def parse_codec_params(text: str, *, key: str = "codec-params") -> dict[str, Any]:
    """``"bits=1 rotations=auto"`` -> ``{"bits": 1, "rotations": "auto"}``.

    Pairs are separated by spaces or commas; a value is read as JSON when it parses
    (``1``, ``0.5``, ``true``, ``null``) and as a string otherwise. Names may be
    kebab-case (``chunk-size`` -> ``chunk_size``).

    Raises
    ------
    ValueError
        For a pair without ``=``, a bad name, or a name given twice.
    """
    out: dict[str, Any] = {}
    for pair in re.split(r"[\s,]+", text.strip()):
        if not pair:
            continue
        name, sep, raw = pair.partition("=")
        if not sep or not _PARAM.match(name) or not raw:
            raise ValueError(
                f"`{key}` must be name=value pairs such as 'bits=1 "
                f"rotations=auto'. Found {pair!r} in {text!r}."
            )
        param = name.replace("-", "_")
        if param in out:
            raise ValueError(f"`{key}` sets {param!r} twice in {text!r}.")
        try:
            out[param] = json.loads(raw)
        except json.JSONDecodeError:
            out[param] = raw
    return out


def format_codec_params(params: dict[str, Any]) -> str:
    """The inverse of :func:`parse_codec_params` (JSON values, sorted names)."""
    return " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v)}"
        for k, v in sorted(params.items())
    )


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a run-config value to the field's type, refusing lossy conversions."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
    elif (
        kind is int
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and float(value).is_integer()
    ):
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
