"""Flower ArrayRecords <-> one flat float32 vector, and the payload Array.

Shared by the server wrapper and the client mod. Only floating numpy arrays
(``stype == "numpy.ndarray"``, dtype float16/float32/float64; float16/float32 only for
lossless codecs) are flattened, in the key order of the broadcast global record; every
other Array (integer buffers such as BatchNorm's ``num_batches_tracked``, bools,
custom stypes) travels raw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord

from .. import wire
from ..constants import PAYLOAD_ARRAY_KEY, STYPE_PREFIX

__all__ = [
    "EXACT_DTYPES",
    "FLOAT_DTYPES",
    "Layout",
    "assemble",
    "flatten",
    "float_arrays",
    "is_payload",
    "payload_array",
    "payload_stype",
    "split_reply",
    "unflatten",
]

FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
#: Dtypes float32 holds exactly: the only ones packed when the payload must be exact.
EXACT_DTYPES = frozenset({"float16", "float32"})
_NUMPY_STYPE = "numpy.ndarray"


def _is_float(arr: Array, dtypes: frozenset[str] = FLOAT_DTYPES) -> bool:
    return arr.stype == _NUMPY_STYPE and arr.dtype in dtypes


@dataclass(frozen=True)
class Layout:
    """Where each floating array of a record sits in the flat vector.

    Attributes
    ----------
    keys
        All keys of the record, in order.
    float_keys
        The floating keys, in flattening order.
    shapes, dtypes
        Shape and dtype name of each floating key.
    d
        Length of the flat vector.
    """

    keys: tuple[str, ...]
    float_keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    d: int

    @classmethod
    def of(cls, record: ArrayRecord, *, exact: bool = False) -> Layout:
        """The layout of ``record`` (the global model the server broadcast).

        With ``exact=True`` (lossless codecs) float64 arrays are left raw, since the
        float32 vector could not hold them bit for bit.
        """
        dtypes = EXACT_DTYPES if exact else FLOAT_DTYPES
        float_keys = [k for k, a in record.items() if _is_float(a, dtypes)]
        shapes = tuple(tuple(int(s) for s in record[k].shape) for k in float_keys)
        return cls(
            keys=tuple(record.keys()),
            float_keys=tuple(float_keys),
            shapes=shapes,
            dtypes=tuple(record[k].dtype for k in float_keys),
            d=sum(int(np.prod(s, dtype=np.int64)) for s in shapes),
        )

    def mismatch(self, record: ArrayRecord) -> str | None:
        """Why ``record`` cannot be flattened with this layout, or None if it can."""
        if tuple(record.keys()) != self.keys:
            return (
                f"the reply's ArrayRecord keys {list(record.keys())} differ from the "
                f"received global model's keys {list(self.keys)}"
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
    """Concatenate the floating arrays of ``record`` into one float32 vector."""
    if not layout.float_keys:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(
        [
            record[k].numpy().astype(np.float32, copy=False).ravel()
            for k in layout.float_keys
        ]
    )


def float_arrays(vec: np.ndarray, layout: Layout) -> dict[str, Array]:
    """The floating arrays of ``layout`` cut from a flat vector, cast to their dtype."""
    pieces: dict[str, Array] = {}
    start = 0
    for key, shape, dtype in zip(
        layout.float_keys, layout.shapes, layout.dtypes, strict=True
    ):
        n = int(np.prod(shape, dtype=np.int64))
        piece = vec[start : start + n].reshape(shape).astype(dtype, copy=False)
        pieces[key] = Array(piece)
        start += n
    return pieces


def assemble(
    layout: Layout, floats: dict[str, Array], raw: dict[str, Array]
) -> ArrayRecord:
    """A record in ``layout``'s key order from floating and raw arrays."""
    return ArrayRecord({k: floats[k] if k in floats else raw[k] for k in layout.keys})


def unflatten(vec: np.ndarray, layout: Layout, raw: dict[str, Array]) -> ArrayRecord:
    """Rebuild a record in ``layout``'s key order from a flat vector and raw arrays.

    Floating arrays are cut from ``vec`` and cast back to their dtype; the others are
    taken from ``raw`` unchanged.
    """
    return assemble(layout, float_arrays(vec, layout), raw)


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


def split_reply(record: ArrayRecord) -> tuple[Array | None, dict[str, Array]]:
    """(the payload Array or None, the raw arrays) of a compressed reply record."""
    raw = {k: a for k, a in record.items() if k != PAYLOAD_ARRAY_KEY}
    payload = record.get(PAYLOAD_ARRAY_KEY)
    if payload is not None and not is_payload(payload):
        return None, dict(record)
    return payload, raw
