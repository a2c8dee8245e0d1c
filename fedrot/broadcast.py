"""Compressed broadcasts: the model the nodes hold, and how the server moves it.

The server broadcasts the global model ``x_v`` (version ``v``: the v-th distinct
model of the run) to the nodes. With downlink compression the nodes hold an
estimate ``m_v`` instead, rebuilt bit for bit the same way on the server, so both
sides agree on the model the nodes train from. Two modes:

* **model** (stateless nodes, cross-device; LFL-style, Amiri et al.,
  https://arxiv.org/abs/2006.10672): ``m_v = decode(encode(x_v))`` with one shared
  rotation, encoded once per version; every node gets the same payload.
* **delta** (nodes that keep state; EF21-P-style server-side error feedback,
  https://arxiv.org/abs/2209.15218): ``c_v = encode(x_v - m_{v-1})`` and
  ``m_v = m_{v-1} + decode(c_v)``. Since each correction compresses the whole gap
  between the true model and the mirror, compression errors do not accumulate.
  Every node starts from the zero model ``m_{-1} = 0``, so the first version is a
  correction like the others (``c_0 = encode(x_0)``) and round 1's broadcast is
  compressed too. A node that holds ``m_s`` (a node without state holds
  ``m_{-1}``) catches up with ``c_{s+1}, ..., c_v``, or gets ``m_v`` exactly
  (float32) when that is fewer bytes or a correction it needs is no longer stored:
  each node downloads the cheaper of the two.

Steps (client): decode the payload(s) with ``seed = downlink_seed(run_seed, u)`` and
``client = DOWNLINK_CLIENT`` for each version ``u``, add them in version order in
float32 (delta mode), and check the CRC-32 of ``m_v``'s bytes against the server's.
The server performs exactly the same float32 operations.

This module is Flower-free; :mod:`fedrot.strategies` and :mod:`fedrot.clients`
carry its payloads in Flower messages.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import Codec, get_codec
from .seeds import DOWNLINK_CLIENT, downlink_seed

__all__ = [
    "MODES",
    "Broadcaster",
    "DownlinkSpec",
    "apply_corrections",
    "checksum",
    "decode_model",
]

MODES = ("model", "delta")


@dataclass(frozen=True)
class DownlinkSpec:
    """How broadcasts are compressed: a codec and a mode.

    Attributes
    ----------
    codec
        The codec of the broadcast payloads (any registry codec).
    mode
        ``"model"`` or ``"delta"`` (see the module docstring).
    """

    codec: Codec
    mode: str

    @classmethod
    def parse(cls, settings: Mapping[str, Any], *, device: str = "cpu") -> DownlinkSpec:
        """From ``{"codec": name, "mode": "model" | "delta", **codec params}``.

        Raises
        ------
        TypeError
            If ``settings`` is not a mapping.
        ValueError
            If the codec is missing or unknown, the mode is not one of ``MODES``,
            or a codec parameter is invalid (the message names it).
        """
        if not isinstance(settings, Mapping):
            raise TypeError(
                "`downlink` must be None or a dict such as {'codec': 'eden', "
                f"'bits': 8, 'mode': 'model'}}. Found {settings!r}."
            )
        params = dict(settings)
        name = params.pop("codec", None)
        mode = params.pop("mode", "model")
        if not isinstance(name, str):
            raise ValueError(
                "`downlink` needs a 'codec' entry naming a codec, e.g. "
                f"{{'codec': 'eden', 'bits': 8}}. Found {settings!r}."
            )
        if mode not in MODES:
            raise ValueError(
                f"`downlink['mode']` must be one of {MODES}. Found {mode!r}."
            )
        try:
            codec = get_codec(name, device=device, **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`downlink`: {exc}") from exc
        return cls(codec=codec, mode=mode)


def checksum(model: np.ndarray) -> int:
    """CRC-32 of a float32 model vector's little-endian bytes."""
    return zlib.crc32(np.ascontiguousarray(model, dtype="<f4").tobytes())


def decode_model(
    codec: Codec, blob: bytes, *, run_seed: int, version: int
) -> np.ndarray:
    """The float32 vector a broadcast payload of ``version`` decodes to.

    Raises
    ------
    fedrot.PayloadError
        If the payload is corrupt or of another codec.
    """
    seed = downlink_seed(run_seed, version)
    out = codec.decode(blob, seed=seed, client=DOWNLINK_CLIENT)
    return np.asarray(out.cpu().numpy(), dtype=np.float32)


def apply_corrections(
    model: np.ndarray,
    corrections: Sequence[tuple[int, bytes]],
    codec: Codec,
    *,
    run_seed: int,
) -> np.ndarray:
    """``model`` plus the decoded corrections, added in order in float32."""
    out = np.array(model, dtype=np.float32, copy=True)
    for version, blob in corrections:
        step = decode_model(codec, blob, run_seed=run_seed, version=version)
        if step.shape != out.shape:
            raise ValueError(
                f"the correction of version {version} holds {step.size} values, the "
                f"model {out.size}"
            )
        out += step
    return out


class Broadcaster:
    """The server's side of compressed broadcasts: versions, payloads, mirror.

    Parameters
    ----------
    spec : DownlinkSpec
        Codec and mode.
    run_seed : int
        The run seed (payload seeds are ``downlink_seed(run_seed, version)``).
    """

    def __init__(self, spec: DownlinkSpec, *, run_seed: int) -> None:
        self.spec = spec
        self.run_seed = int(run_seed)
        self._full_codec = get_codec("fp32", device=spec.codec.device)
        self.reset()

    def reset(self) -> None:
        """Forget every version (a new run starts from version 0)."""
        self.version = -1
        self.model: np.ndarray | None = None  # m_v, the nodes' model
        self._target: np.ndarray | None = None  # x_v
        self._payload: bytes | None = None  # model mode: the version's payload
        self._full: bytes | None = None
        self._corrections: dict[int, bytes] = {}  # delta mode: version -> c_v
        self.checksums: dict[int, int] = {}

    def update(self, target: np.ndarray) -> int:
        """Make ``target`` (float32 ``x``) the current version if it is new.

        Returns the current version. Model mode encodes it once; delta mode
        compresses ``x_v - m_{v-1}`` and advances the mirror.
        """
        target = np.asarray(target, dtype=np.float32)
        if self._target is not None and np.array_equal(target, self._target):
            return self.version
        if self._target is not None and target.shape != self._target.shape:
            raise ValueError(
                f"the model changed size from {self._target.size} to {target.size} "
                "values within a run"
            )
        self.version += 1
        self._target = target.copy()
        self._full = None
        v, codec = self.version, self.spec.codec
        seed = downlink_seed(self.run_seed, v)
        if self.spec.mode == "model":
            self._payload = codec.encode(target, seed=seed, client=DOWNLINK_CLIENT)
            self.model = decode_model(
                codec, self._payload, run_seed=self.run_seed, version=v
            )
        else:  # delta mode; before version 0 the nodes hold the zero model
            held = np.zeros_like(target) if self.model is None else self.model
            blob = codec.encode(target - held, seed=seed, client=DOWNLINK_CLIENT)
            self._corrections[v] = blob
            self.model = apply_corrections(
                held, [(v, blob)], codec, run_seed=self.run_seed
            )
            self._prune()
        self.checksums[v] = checksum(self.model)
        return v

    def full_payload(self) -> bytes:
        """The current ``m_v`` exactly, as an fp32 payload (delta mode)."""
        if self.model is None:
            raise RuntimeError("update() has not been called")
        if self._full is None:
            self._full = self._full_codec.encode(
                self.model,
                seed=downlink_seed(self.run_seed, self.version),
                client=DOWNLINK_CLIENT,
            )
        return self._full

    def model_payload(self) -> bytes:
        """The current version's payload (model mode)."""
        if self._payload is None:
            raise RuntimeError("model_payload() needs mode 'model' and update()")
        return self._payload

    def plan(self, held: int | None) -> list[tuple[int, bytes]] | None:
        """Corrections that bring a node from version ``held`` (None: no state,
        which is the zero model of version -1) to the current one, or None when the
        node must get the full model (a correction the server no longer stores, or
        corrections costing more bytes)."""
        if held is None:
            held = -1
        if held > self.version or held < -1:
            return None
        steps = [
            (u, self._corrections.get(u)) for u in range(held + 1, self.version + 1)
        ]
        if any(blob is None for _, blob in steps):
            return None
        total = sum(len(b) for _, b in steps if b is not None)
        if total >= len(self.full_payload()):
            return None
        return [(u, b) for u, b in steps if b is not None]

    def _prune(self) -> None:
        """Drop corrections no node could ever use more cheaply than the full model."""
        budget = len(self.full_payload())
        total = 0
        for u in sorted(self._corrections, reverse=True):
            total += len(self._corrections[u])
            if total >= budget:
                for old in [w for w in self._corrections if w <= u]:
                    del self._corrections[old]
                break
