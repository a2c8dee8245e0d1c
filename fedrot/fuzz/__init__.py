"""Hostile-payload fuzzing of every codec's decoder and aggregator.

``python -m fedrot.fuzz --cases N [--seed S] [--json PATH]`` builds valid payloads for
a spread of codec settings (every codec in the registry; 1, 2, 3 and "auto" RHTs,
sub-bit and fractional EDEN, QUIC-FL 1-4 bits, every VQ codebook, top-k, ...) at
several vector lengths, then feeds each decoder N hostile variants: random bytes,
truncations, extensions, bit flips with a stale or a recomputed CRC, forged header,
length, parameter and count fields (d up to 2**64 - 1), forged floats, and grafts of
another codec's body or whole payload. About one case in eight aggregates the hostile
payload with a valid one instead of decoding it alone.

The contract checked for every case: ``decode`` (or ``aggregate``) either raises
:class:`fedrot.PayloadError`, or returns a finite 1-D float32 tensor of the length
the payload declares (of the valid partner's length for ``aggregate``). Anything else
is a failure: another exception (a ``MemoryError`` or ``RuntimeError`` from a forged
size, a plain ``ValueError``), a wrong output, or a case over the time limit.

Safety: the run caps the process's address space (``RLIMIT_AS``: what it uses at
the start plus ``memory_budget``), so a decoder that trusts a forged size fails with
an allocation error, reported as a failure, instead of exhausting the machine; and a
per-case alarm turns a runaway case into a failure. Measured per case: wall time and
peak resident memory (Linux ``VmHWM``, reset before each case; the command has glibc
map every allocation of 64 KiB or more separately, so each shows in the peak).

The command prints a summary table and exits 1 when any case failed. Pure library:
numpy and torch only (no Flower).
"""

from __future__ import annotations

from .cli import main
from .corpus import SETTINGS, SIZES
from .mutations import MUTATIONS
from .report import FuzzReport
from .run import fuzz

__all__ = ["MUTATIONS", "SETTINGS", "SIZES", "FuzzReport", "fuzz", "main"]
