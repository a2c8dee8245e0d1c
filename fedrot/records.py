"""The records both Flower sides build: the flat-vector layout, messages, payloads.

Flower glue used by :mod:`fedrot.strategies` (server) and :mod:`fedrot.clients`
(client) and by nothing else; like Flower's ``flwr.supercore.differential_privacy``
for its DP mods and strategies, the neutral modules (this one,
:mod:`fedrot.model_spec` and :mod:`fedrot.settings`) are what the two sides share,
so that ``import fedrot.clients`` does not load the server wrapper. It imports flwr;
``import fedrot`` does not load it.

Once the server has chosen which arrays the codec compresses
(:mod:`fedrot.model_spec`), both sides cut those arrays into one float32 vector
with a :class:`Layout` and rebuild them with :func:`float_arrays`; the exact arrays
travel as their own Arrays next to the payload Array (:func:`payload_array`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, RecordDict

from . import wire
from .constants import PAYLOAD_ARRAY_KEY, STYPE_PREFIX
from .model_spec import FLOAT_DTYPES, is_float_array

__all__ = [
    "Layout",
    "assemble",
    "flatten",
    "float_arrays",
    "is_payload",
    "payload_array",
    "payload_stype",
    "rebuild_message",
    "single_array_record",
    "split_payloads",
    "split_reply",
    "with_content",
    "with_error",
]


# ---------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Where each compressed array of a record sits in the flat vector.

    Attributes
    ----------
    keys
        All keys of the record, in order.
    float_keys
        The compressed keys, in flattening order.
    shapes, dtypes
        Shape and dtype name of each compressed key.
    d
        Length of the flat vector.
    """

    keys: tuple[str, ...]
    float_keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    d: int

    @classmethod
    def of(cls, record: ArrayRecord, mask: Sequence[bool]) -> Layout:
        """The layout of ``record`` with the keys flagged in ``mask`` compressed.

        Raises
        ------
        ValueError
            If ``mask`` does not have one flag per key or flags a non-float array.
        """
        keys = tuple(record.keys())
        if len(mask) != len(keys):
            raise ValueError(
                f"the compress mask has {len(mask)} flags, the record {len(keys)} keys"
            )
        float_keys = tuple(k for k, m in zip(keys, mask, strict=True) if m)
        for key in float_keys:
            if not is_float_array(record[key]):
                raise ValueError(
                    f"array {key!r} is flagged for compression but is "
                    f"{record[key].dtype} (stype {record[key].stype!r}), not a float "
                    "numpy array"
                )
        shapes = tuple(tuple(int(s) for s in record[k].shape) for k in float_keys)
        return cls(
            keys=keys,
            float_keys=float_keys,
            shapes=shapes,
            dtypes=tuple(str(record[k].dtype) for k in float_keys),
            d=sum(int(np.prod(s, dtype=np.int64)) for s in shapes),
        )

    @property
    def exact_keys(self) -> tuple[str, ...]:
        """The keys that travel as their own Arrays, in record order."""
        compressed = set(self.float_keys)
        return tuple(k for k in self.keys if k not in compressed)

    def to_json(self) -> str:
        """The layout as compact JSON (travels with compressed broadcasts)."""
        return json.dumps(
            {
                "keys": list(self.keys),
                "compressed": [
                    [k, list(s), t]
                    for k, s, t in zip(
                        self.float_keys, self.shapes, self.dtypes, strict=True
                    )
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Layout:
        """Inverse of :meth:`to_json`.

        Raises
        ------
        ValueError
            If ``text`` is not a layout written by :meth:`to_json`.
        """
        try:
            obj = json.loads(text)
            keys = tuple(str(k) for k in obj["keys"])
            entries = [
                (str(k), tuple(int(n) for n in s), str(t))
                for k, s, t in obj["compressed"]
            ]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"not a fedrot layout: {text[:80]!r}") from exc
        float_keys = tuple(k for k, _, _ in entries)
        if not set(float_keys) <= set(keys) or any(
            t not in FLOAT_DTYPES or min(s, default=0) < 0 for _, s, t in entries
        ):
            raise ValueError(f"inconsistent fedrot layout: {text[:80]!r}")
        shapes = tuple(s for _, s, _ in entries)
        return cls(
            keys=keys,
            float_keys=float_keys,
            shapes=shapes,
            dtypes=tuple(t for _, _, t in entries),
            d=sum(int(np.prod(s, dtype=np.int64)) for s in shapes),
        )

    def mismatch(self, record: ArrayRecord) -> str | None:
        """Why a local model ``record`` cannot be flattened with this layout."""
        if tuple(record.keys()) != self.keys:
            return (
                f"the reply's ArrayRecord keys {list(record.keys())[:6]} differ from "
                f"the received global model's keys {list(self.keys)[:6]}"
            )
        for k, shape in zip(self.float_keys, self.shapes, strict=True):
            arr = record[k]
            if not is_float_array(arr) or tuple(arr.shape) != shape:
                return (
                    f"array {k!r} is {arr.dtype}{list(arr.shape)} (stype "
                    f"{arr.stype!r}) in the reply but a float array of shape "
                    f"{list(shape)} in the global model"
                )
        return None


def flatten(record: ArrayRecord, layout: Layout) -> np.ndarray:
    """Concatenate the compressed arrays of ``record`` into one float32 vector."""
    if not layout.float_keys:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(
        [
            record[k].numpy().astype(np.float32, copy=False).ravel()
            for k in layout.float_keys
        ]
    )


def float_arrays(vec: np.ndarray, layout: Layout) -> dict[str, Array]:
    """The compressed arrays cut from a flat vector, cast to their dtypes."""
    pieces: dict[str, Array] = {}
    start = 0
    for key, shape, dtype in zip(
        layout.float_keys, layout.shapes, layout.dtypes, strict=True
    ):
        n = int(np.prod(shape, dtype=np.int64))
        piece = vec[start : start + n].reshape(shape).astype(dtype, copy=False)
        pieces[key] = Array(np.asarray(piece, order="C"))
        start += n
    return pieces


def assemble(
    layout: Layout, floats: dict[str, Array], raw: dict[str, Array]
) -> ArrayRecord:
    """A record in ``layout``'s key order from compressed and exact arrays."""
    return ArrayRecord({k: floats[k] if k in floats else raw[k] for k in layout.keys})


# ------------------------------------------------------------------- messages
def with_content(msg: Message, content: RecordDict) -> Message:
    """A new Message with a copy of ``msg``'s metadata and ``content``."""
    return rebuild_message(copy.copy(msg.metadata), content=content)


def with_error(msg: Message, error: Error) -> Message:
    """A new Message with a copy of ``msg``'s metadata and ``error``."""
    return rebuild_message(copy.copy(msg.metadata), error=error)


def rebuild_message(metadata: Metadata, **body: RecordDict | Error) -> Message:
    """``Message(metadata=..., content=... | error=...)``, typed.

    Flower's typed overloads omit the metadata form its own runtime uses to
    rebuild stored messages; the constructor accepts it.
    """
    out: Message = Message(metadata=metadata, **body)  # type: ignore[call-overload]
    return out


def single_array_record(msg: Message, *, holding: str) -> tuple[str, ArrayRecord]:
    """The key and record of the one ArrayRecord in ``msg``'s content.

    Raises
    ------
    ValueError
        If the content holds none or several; the message names ``holding`` (what
        the record should hold, e.g. ``"the global model"``) and the count found.
    """
    items = list(msg.content.array_records.items())
    if len(items) != 1:
        raise ValueError(
            f"needs exactly one ArrayRecord ({holding}); found {len(items)}"
        )
    return items[0]


# -------------------------------------------------------------- payload Array
def payload_stype(codec_name: str) -> str:
    """``Array.stype`` of a compressed update, e.g. ``"fedrot/eden/v1"``."""
    return f"{STYPE_PREFIX}{codec_name}/v{wire.FORMAT_VERSION}"


def payload_array(codec_name: str, blob: bytes) -> Array:
    """The compressed update as one Array of real bytes."""
    return Array(
        dtype="uint8",
        shape=(len(blob),),
        stype=payload_stype(codec_name),
        data=bytes(blob),
    )


def is_payload(arr: Array) -> bool:
    """Whether ``arr`` is a fedrot payload (of any codec or version)."""
    return arr.stype.startswith(STYPE_PREFIX)


def split_payloads(
    record: ArrayRecord, prefix: str
) -> tuple[dict[str, Array], dict[str, Array]]:
    """({name after ``prefix``: payload Array}, {key: other Array}) of a record."""
    payloads = {
        k[len(prefix) :]: a
        for k, a in record.items()
        if k.startswith(prefix) and is_payload(a)
    }
    others = {
        k: a for k, a in record.items() if not (k.startswith(prefix) and is_payload(a))
    }
    return payloads, others


def split_reply(record: ArrayRecord) -> tuple[Array | None, dict[str, Array]]:
    """(the payload Array or None, the exact arrays) of a compressed reply record."""
    raw = {k: a for k, a in record.items() if k != PAYLOAD_ARRAY_KEY}
    payload = record.get(PAYLOAD_ARRAY_KEY)
    if payload is not None and not is_payload(payload):
        return None, dict(record)
    return payload, raw
