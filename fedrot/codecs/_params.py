"""Codec parameter blocks: one declared layout packs them and reads them back.

Every payload carries its codec's parameters (bits, rotation mode, table checksum,
...) in a fixed little-endian layout, and a decoder accepts only payloads whose block
equals its own. Declaring the layout once, as named fields with their conversions to
and from the wire, gives both the bytes and a readable account of a mismatch
(``bits=2 vs bits=1``) from the same place.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "ParamLayout"]


def _same(value: Any) -> Any:
    return value


def show(value: Any) -> str:
    """A parameter value as written in a message: floats in shortest form."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


@dataclass(frozen=True)
class Field:
    """One parameter of a block: its name, struct code and wire conversions.

    ``from_wire`` may raise ``ValueError``/``KeyError``/``IndexError`` for a value
    no codec writes; the field is then shown as its raw wire value.
    """

    name: str
    code: str
    to_wire: Callable[[Any], Any] = _same
    from_wire: Callable[[Any], Any] = _same
    show: Callable[[Any], str] = show


@dataclass(frozen=True)
class ParamLayout:
    """The fields of a parameter block, in wire order.

    Examples
    --------
    >>> layout = ParamLayout((Field("bits", "d"), Field("levels", "H")))
    >>> block = layout.pack({"bits": 2.0, "levels": 3})
    >>> layout.read(block)
    {'bits': '2', 'levels': '3'}
    >>> layout.mismatch(layout.pack({"bits": 1.0, "levels": 3}), block)
    'bits=1 vs bits=2'
    """

    fields: tuple[Field, ...] = ()

    @property
    def _struct(self) -> struct.Struct:
        return struct.Struct("<" + "".join(f.code for f in self.fields))

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """The block for the given human-level values (one per field)."""
        return self._struct.pack(*(f.to_wire(values[f.name]) for f in self.fields))

    def read(self, block: bytes) -> dict[str, str] | None:
        """Each field of a block, shown as in messages (None: wrong length)."""
        if len(block) != self._struct.size:
            return None
        out = {}
        for f, raw in zip(self.fields, self._struct.unpack(block), strict=True):
            try:
                out[f.name] = f.show(f.from_wire(raw))
            except (ValueError, KeyError, IndexError):
                out[f.name] = f"<invalid {raw!r}>"
        return out

    def mismatch(self, got: bytes, want: bytes) -> str:
        """``name=got vs name=want`` for every field that differs."""
        theirs, ours = self.read(got), self.read(want)
        if theirs is None or ours is None:
            return (
                f"a parameter block of {len(got)} bytes where this codec's has "
                f"{len(want)}"
            )
        return ", ".join(
            f"{name}={theirs[name]} vs {name}={ours[name]}"
            for name in ours
            if theirs[name] != ours[name]
        )
