"""The one reader and writer of the JSON tables shipped in ``fedrot/tables/data/``.

Every shipped file has the same outline::

    {"format": 1,                       # version of the file layout
     "generator": "python -m ... (...)",  # provenance: the command that wrote it
     "method": "...",                   # optional: solver settings, library versions
     "<section>": {"<key>": {...}, ...}}  # one entry per shipped configuration

The runtime loaders (:mod:`fedrot.tables.lloyd_max`, :mod:`fedrot.tables.quic_fl`,
:mod:`fedrot.tables.vq`) read entries through :class:`ShippedFile`, which checks the
version and the provenance once per file, names the shipped keys when one is
missing, and checks each array's shape, finiteness and (where the entry stores one)
CRC-32. The offline solvers (:mod:`fedrot.tables.solvers`) write through
:meth:`ShippedFile.write`, so a regenerated file has the same layout and formatting.
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import numpy as np

__all__ = ["ShippedFile", "crc32_f64", "regenerate"]


def crc32_f64(values: np.ndarray) -> int:
    """CRC-32 of ``values`` as contiguous little-endian float64 bytes.

    Examples
    --------
    >>> crc32_f64(np.zeros(2)) == zlib.crc32(bytes(16))
    True
    """
    return zlib.crc32(np.ascontiguousarray(values, dtype="<f8").tobytes())


@cache
def _document(name: str) -> dict[str, Any]:
    """The parsed file ``name`` (read once per process; callers must not mutate it)."""
    doc: dict[str, Any] = json.loads(_path(name).read_text())
    return doc


def _path(name: str) -> Traversable:
    return resources.files(__package__).joinpath("data", name)


@dataclass(frozen=True)
class ShippedFile:
    """One shipped JSON table file: where it lives, its layout and how to remake it.

    Attributes
    ----------
    name
        File name in ``fedrot/tables/data/``, e.g. ``"lloyd_max.json"``.
    section
        Top-level key that holds the entries (``"tables"`` or ``"codebooks"``).
    regenerate
        The command that rewrites the file, e.g.
        ``"python -m fedrot.tables.solvers.lloyd_max"``; quoted in error messages
        and written as the file's provenance.
    format
        The layout version the loaders understand.
    """

    name: str
    section: str
    regenerate: str
    format: int = 1

    def document(self) -> Mapping[str, Any]:
        """The whole file, after checking its version and provenance.

        Raises
        ------
        ValueError
            If the file's ``format`` is not :attr:`format`, it names no generator,
            or the section is missing.
        """
        doc = _document(self.name)
        if doc.get("format") != self.format:
            raise ValueError(
                f"{self.name} has format {doc.get('format')!r}; this fedrot reads "
                f"format {self.format}. Regenerate it with `{self.regenerate}`."
            )
        generator = doc.get("generator")
        if not isinstance(generator, str) or not generator.startswith("python -m "):
            raise ValueError(
                f"{self.name} does not say which command wrote it (`generator` is "
                f"{generator!r}). Regenerate it with `{self.regenerate}`."
            )
        if not isinstance(doc.get(self.section), dict):
            raise ValueError(f"{self.name} has no {self.section!r} section.")
        return doc

    def keys(self) -> list[str]:
        """The keys of the shipped entries, in file order."""
        return list(self.document()[self.section])

    def entry(self, key: str, *, missing: str) -> Mapping[str, Any]:
        """The entry ``key``; ``missing`` says what is shipped when there is none.

        Raises
        ------
        ValueError
            ``missing`` and the command that makes other entries, when ``key`` is
            not shipped.
        """
        entries = self.document()[self.section]
        if key not in entries:
            raise ValueError(f"{missing} Make others with `{self.regenerate}`.")
        found: Mapping[str, Any] = entries[key]
        return found

    def array(
        self,
        key: str,
        entry: Mapping[str, Any],
        field: str,
        *,
        shape: tuple[int, ...],
        crc_field: str | None = None,
    ) -> np.ndarray:
        """``entry[field]`` as a float64 array, checked before anyone uses it.

        Parameters
        ----------
        key
            The entry's key (for the error message).
        entry
            The entry, from :meth:`entry`.
        field
            The array's field name in the entry.
        shape
            The shape the array must have.
        crc_field
            Field holding the CRC-32 (:func:`crc32_f64`) of the array, if stored.

        Raises
        ------
        ValueError
            If the shape differs, a value is not finite or the CRC does not match.
        """
        values = np.asarray(entry[field], dtype=np.float64)
        problem = None
        if values.shape != shape:
            problem = f"{field} has shape {values.shape}, expected {shape}"
        elif not np.isfinite(values).all():
            problem = f"{field} holds non-finite values"
        elif crc_field is not None and crc32_f64(values) != entry[crc_field]:
            problem = f"{field} does not match its {crc_field}"
        if problem is not None:
            raise ValueError(
                f"{self.name} entry {key!r} is corrupt ({problem}). Reinstall fedrot "
                f"or regenerate the file with `{self.regenerate}`."
            )
        return values

    def write(
        self,
        path: str,
        entries: Mapping[str, Any],
        *,
        source: str,
        method: str | None = None,
    ) -> None:
        """Write a complete file in the shipped layout and formatting.

        Parameters
        ----------
        path
            Destination file.
        entries
            The section's entries, by key.
        source
            The solver, as ``"fedrot/tables/solvers/x.py:function"``; with
            :attr:`regenerate` it forms the file's ``generator`` (provenance).
        method
            Solver settings and library versions, if worth recording.
        """
        doc: dict[str, Any] = {
            "format": self.format,
            "generator": f"{self.regenerate} ({source})",
        }
        if method is not None:
            doc["method"] = method
        doc[self.section] = dict(entries)
        with open(path, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")

    def shipped_path(self) -> str:
        """Filesystem path of the shipped file (where the solvers write by default)."""
        return str(_path(self.name))


def regenerate(
    shipped: ShippedFile,
    write: Callable[[str], None],
    argv: Sequence[str] | None = None,
) -> None:
    """Command line of a solver module: solve, then write the shipped file or ``--out``.

    Parameters
    ----------
    shipped
        The file the solver makes.
    write
        The solver's writer, called with the destination path.
    argv
        Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog=shipped.regenerate.removeprefix("python -m "),
        description=f"Solve and write {shipped.name} (deterministic).",
    )
    parser.add_argument(
        "--out",
        default=shipped.shipped_path(),
        help="destination (default: the shipped file inside the package)",
    )
    out = parser.parse_args(argv).out
    write(out)
    print(f"wrote {out}")
