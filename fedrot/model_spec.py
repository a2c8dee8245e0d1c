"""The model a run compresses: its spec, and which of its arrays the codec packs.

Flower glue shared by :mod:`fedrot.strategies` (server) and :mod:`fedrot.clients`
(client), like :mod:`fedrot.records`; it imports flwr, ``import fedrot`` does not
load it.

1. The server fixes a :class:`ModelSpec` (keys, dtypes, shapes) from the first model
   it broadcasts, and decides once which arrays the codec compresses
   (:func:`select_compressed`): trainable floating parameters. Running statistics
   (BatchNorm/InstanceNorm ``running_mean``/``running_var``), counters
   (``num_batches_tracked``) and every non-float array travel exactly.
2. The decision travels in the train ConfigRecord as a bit mask over the record's
   keys (:func:`mask_to_hex`), so the client never re-decides from dtypes that an
   aggregation may have changed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord

__all__ = [
    "DEFAULT_EXACT_KEYS",
    "EXACT_DTYPES",
    "FLOAT_DTYPES",
    "ModelSpec",
    "hex_to_mask",
    "is_float_array",
    "mask_to_hex",
    "select_compressed",
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


def is_float_array(arr: Array, dtypes: frozenset[str] = FLOAT_DTYPES) -> bool:
    """Whether ``arr`` is a numpy array of one of ``dtypes``."""
    return arr.stype == _NUMPY_STYPE and arr.dtype in dtypes


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
        chosen = is_float_array(arr, dtypes) and not any(
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
