"""The record layout both Flower sides share: which arrays are compressed, and how.

Flower glue used by :mod:`fedrot.strategies` (server) and :mod:`fedrot.clients`
(client) and by nothing else; like Flower's ``flwr.supercore.differential_privacy``
for its DP mods and strategies, it is the one module the two sides share, so that
``import fedrot.clients`` does not load the server wrapper. It imports flwr;
``import fedrot`` does not load it.

The protocol, per train round:

1. The server fixes a :class:`ModelSpec` (keys, dtypes, shapes) from the first model
   it broadcasts, and decides once which arrays the codec compresses
   (:func:`select_compressed`): trainable floating parameters. Running statistics
   (BatchNorm/InstanceNorm ``running_mean``/``running_var``), counters
   (``num_batches_tracked``) and every non-float array travel exactly.
2. The decision travels in the train ConfigRecord as a bit mask over the record's
   keys (:func:`mask_to_hex`), so the client never re-decides from dtypes that an
   aggregation may have changed.
3. Both sides cut the compressed arrays into one float32 vector with a
   :class:`Layout` and rebuild them with :func:`float_arrays`; the exact arrays
   travel as their own Arrays next to the payload Array.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    RecordDict,
)

from . import wire
from .constants import PAYLOAD_ARRAY_KEY, STYPE_PREFIX

__all__ = [
    "DEFAULT_EXACT_KEYS",
    "EXACT_DTYPES",
    "FLOAT_DTYPES",
    "Layout",
    "ModelSpec",
    "assemble",
    "config_int",
    "config_str",
    "flatten",
    "float_arrays",
    "hex_to_mask",
    "is_payload",
    "mask_to_hex",
    "payload_array",
    "payload_stype",
    "rebuild_message",
    "select_compressed",
    "split_payloads",
    "split_reply",
    "with_content",
    "with_error",
]

FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
#: Dtypes a float32 vector holds exactly: the only ones a lossless codec packs.
EXACT_DTYPES = frozenset({"float16", "float32"})
#: ``fnmatch`` patterns of the keys that travel exactly by default: BatchNorm /
#: InstanceNorm running statistics and their batch counter (PyTorch state_dict
#: names). Compressing them breaks evaluation (a lossy ``running_var`` can turn
#: negative) while saving almost nothing.
DEFAULT_EXACT_KEYS: tuple[str, ...] = (
    "*running_mean",
    "*running_var",
    "*num_batches_tracked",
)
_NUMPY_STYPE = "numpy.ndarray"


def _is_float(arr: Array, dtypes: frozenset[str] = FLOAT_DTYPES) -> bool:
    return arr.stype == _NUMPY_STYPE and arr.dtype in dtypes


# ------------------------------------------------------------------ model spec
@dataclass(frozen=True)
class ModelSpec:
    """Keys, dtypes and shapes of the model a run started from.

    The server takes it from the first model it broadcasts and keeps every later
    broadcast in these dtypes (:meth:`cast`), whatever dtype an inner strategy's
    aggregation returns.
    """

    keys: tuple[str, ...]
    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, record: ArrayRecord) -> ModelSpec:
        """The spec of ``record``."""
        return cls(
            keys=tuple(record.keys()),
            dtypes=tuple(str(a.dtype) for a in record.values()),
            shapes=tuple(tuple(int(s) for s in a.shape) for a in record.values()),
        )

    def mismatch(self, record: ArrayRecord, *, sizes_only: bool = False) -> str | None:
        """Why ``record`` does not follow this spec's keys and shapes, or None.

        With ``sizes_only=True`` an array only needs the right number of elements
        (some Flower aggregations turn a 0-d array into shape ``(1,)``).
        """
        if tuple(record.keys()) != self.keys:
            return (
                f"its keys {list(record.keys())[:6]} differ from the run's model keys "
                f"{list(self.keys)[:6]}"
            )
        for key, shape in zip(self.keys, self.shapes, strict=True):
            got = tuple(int(s) for s in record[key].shape)
            if sizes_only and np.prod(got, dtype=np.int64) == np.prod(
                shape, dtype=np.int64
            ):
                continue
            if got != shape:
                return (
                    f"array {key!r} has shape {list(record[key].shape)}, the run's "
                    f"model has {list(shape)}"
                )
        return None

    def cast(self, record: ArrayRecord) -> ArrayRecord:
        """``record`` with every numpy array in this spec's dtype.

        Floating values are cast (float64 -> float32 rounds to nearest); values
        for an integer or bool array are rounded to the nearest integer. (Loading
        Flower's float64 state dict into an integer buffer with ``torch.Tensor.copy_``
        truncates instead, which turns a weighted mean of equal counters that lands
        a hair below the integer, e.g. 5.999999999999999, into one less.) An array
        with the right number of elements but another shape is reshaped. Arrays
        already in their dtype and shape are reused as they are; non-numpy arrays
        are left untouched.

        Raises
        ------
        ValueError
            If ``record`` does not have this spec's keys and array sizes.
        """
        problem = self.mismatch(record, sizes_only=True)
        if problem is not None:
            raise ValueError(
                f"The arrays to broadcast do not match the run's model: {problem}. "
                "CompressedStrategy keeps the layout of the first model of a run."
            )
        out: dict[str, Array] = {}
        for key, dtype, shape in zip(self.keys, self.dtypes, self.shapes, strict=True):
            arr = record[key]
            same = arr.dtype == dtype and tuple(arr.shape) == shape
            if same or arr.stype != _NUMPY_STYPE:
                out[key] = arr
                continue
            values = arr.numpy()
            target = np.dtype(dtype)
            if target.kind in "iub" and values.dtype.kind == "f":
                values = np.rint(values)
            values = values.astype(target).reshape(shape)
            out[key] = Array(np.array(values, order="C"))  # keeps 0-d shapes
        return ArrayRecord(out)


def select_compressed(
    record: ArrayRecord,
    *,
    exact_keys: Sequence[str],
    compress_keys: Sequence[str] | None,
    lossless: bool,
) -> tuple[bool, ...]:
    """Which arrays of ``record`` the codec compresses, one flag per key.

    An array is compressed when it is a floating numpy array (float16/32/64; only
    float16/32 for a lossless codec, since a float32 vector cannot hold float64
    values bit for bit), its key matches no ``exact_keys`` pattern, and, when
    ``compress_keys`` is given, matches one of those patterns. Patterns are
    :func:`fnmatch.fnmatchcase` globs such as ``"*running_var"``.
    """
    dtypes = EXACT_DTYPES if lossless else FLOAT_DTYPES
    flags = []
    for key, arr in record.items():
        chosen = _is_float(arr, dtypes) and not any(
            fnmatch.fnmatchcase(key, p) for p in exact_keys
        )
        if compress_keys is not None:
            chosen = chosen and any(fnmatch.fnmatchcase(key, p) for p in compress_keys)
        flags.append(chosen)
    return tuple(flags)


def mask_to_hex(mask: Sequence[bool]) -> str:
    """The flags as a hex string (bit i of byte i // 8 is flag i)."""
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    return bits.tobytes().hex()


def hex_to_mask(text: str, n: int) -> tuple[bool, ...]:
    """Inverse of :func:`mask_to_hex` for ``n`` keys.

    Raises
    ------
    ValueError
        If ``text`` is not hex of exactly ``ceil(n / 8)`` bytes with zero padding.
    """
    try:
        raw = bytes.fromhex(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the compress mask {text!r} is not a hex string") from exc
    if len(raw) != (n + 7) // 8:
        raise ValueError(
            f"the compress mask covers {8 * len(raw)} keys, the model has {n}"
        )
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise ValueError(f"the compress mask {text!r} flags keys beyond the {n}th")
    return tuple(bool(b) for b in bits[:n])


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
            if not _is_float(record[key]):
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
            if not _is_float(arr) or tuple(arr.shape) != shape:
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


def config_int(config: ConfigRecord, key: str) -> int:
    """``config[key]`` as an int, or a ValueError naming the key and value."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an int. Found {value!r}.")
    return value


def config_str(config: ConfigRecord, key: str) -> str:
    """``config[key]`` as a str, or a ValueError naming the key and value."""
    value = config[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a str. Found {value!r}.")
    return value


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
