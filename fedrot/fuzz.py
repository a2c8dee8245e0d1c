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

import argparse
import ctypes
import ctypes.util
import json
import random
import resource
import signal
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .codecs import Codec, get_codec
from .errors import PayloadError

__all__ = ["SETTINGS", "SIZES", "FuzzReport", "fuzz", "main"]

#: Codec settings fuzzed: (registry name, parameters). Covers every registered codec.
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("fp32", {}),
    ("fp16", {}),
    ("drive", {"rotations": 1}),
    ("drive", {"rotations": 2}),
    ("drive", {"rotations": 3, "scale": "biased"}),
    ("drive", {"rotations": "auto", "chunk_size": 1024}),
    ("eden", {"bits": 1, "rotations": 1}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 2, "rotations": 3}),
    ("eden", {"bits": 4, "rotations": "auto"}),
    ("eden", {"bits": 8, "chunk_size": 1024}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 0.25, "rotations": "auto"}),
    ("eden", {"bits": 0.75, "rotations": 1, "chunk_size": 1024}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 2.5, "rotations": "auto"}),
    ("eden", {"bits": 3.25, "rotations": 3, "chunk_size": 1024}),
    ("quic-fl", {"bits": 1}),
    ("quic-fl", {"bits": 2, "rotations": 1}),
    ("quic-fl", {"bits": 2, "rotations": "auto", "outlier_fraction": 2.0**-7}),
    ("quic-fl", {"bits": 3, "outlier_fraction": 2.0**-11}),
    ("quic-fl", {"bits": 4, "chunk_size": 1024}),
    ("vq", {"block": 2, "bits": 1}),
    ("vq", {"block": 2, "bits": 2, "rotations": 2}),
    ("vq", {"block": 2, "bits": 3, "rotations": "auto"}),
    ("vq", {"block": 4, "bits": 1, "chunk_size": 1024}),
    ("vq", {"block": 4, "bits": 2}),
    ("hadamard-sq", {"bits": 1}),
    ("hadamard-sq", {"bits": 3, "rotations": 2}),
    ("hadamard-sq", {"bits": 8, "rotations": "auto"}),
    ("qsgd", {"levels": 1}),
    ("qsgd", {"levels": 15}),
    ("terngrad", {}),
    ("terngrad", {"clip": 2.5}),
    ("topk", {"fraction": 0.01}),
    ("topk", {"fraction": 0.25}),
    ("randk", {"fraction": 0.01}),
    ("randk", {"fraction": 0.25}),
    ("signsgd", {}),
)
#: Vector lengths of the valid payloads that the mutations start from.
SIZES: tuple[int, ...] = (1, 33, 1000, 70_001)
#: Cases that aggregate the hostile payload with a valid one: one in this many.
AGGREGATE_EVERY = 8

_HUGE = (0, 1, 2, 255, 2**16 - 1, 2**31 - 1, 2**32, 2**40, 2**47 - 1, 2**48, 2**64 - 1)
_FLOATS = (float("nan"), float("inf"), -float("inf"), 3.4e38, -3.4e38, 1e-45, -0.0)
_HEAD = 16  # bytes before the parameter block (fedrot.wire)


# -------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class _Source:
    """A valid payload and how it was made."""

    setting: int
    d: int
    seed: int
    client: int
    blob: bytes


class _Corpus:
    """One codec per setting and one valid payload per (setting, size)."""

    def __init__(self) -> None:
        self.codecs: list[Codec] = [get_codec(n, **p) for n, p in SETTINGS]
        self.sources: list[list[_Source]] = []
        for i, codec in enumerate(self.codecs):
            row = []
            for d in SIZES:
                g = torch.Generator().manual_seed(d * 131 + i)
                x = torch.randn(d, generator=g)
                x[: d // 4] = 0.0  # a sparse part: "auto" then picks two RHTs
                seed, client = 1000 + d, 7 + i
                blob = codec.encode(x, seed=seed, client=client)
                row.append(_Source(i, d, seed, client, blob))
            self.sources.append(row)

    def any_source(self, rng: random.Random) -> _Source:
        return rng.choice(rng.choice(self.sources))


@cache
def _corpus() -> _Corpus:
    """The corpus, built once per process (encoding it takes a few seconds)."""
    return _Corpus()


def _with_crc(b: bytes | bytearray) -> bytes:
    body = bytes(b[:-4]) if len(b) >= 4 else bytes(b)
    return body + struct.pack("<I", zlib.crc32(body))


def _put(b: bytearray, pos: int, value: int, size: int) -> None:
    b[pos : pos + size] = (value % (1 << (8 * size))).to_bytes(size, "little")


def _plen(blob: bytes) -> int:
    return int.from_bytes(blob[6:8], "little") if len(blob) >= 8 else 0


# ----------------------------------------------------------------- mutations
# Each takes (rng, source, corpus) and returns hostile bytes for source's codec.
_Mutation = Callable[[random.Random, _Source, _Corpus], bytes]


def _random(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    return rng.randbytes(rng.randrange(200))


def _random_body(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    """A well-formed envelope (this codec's header and parameters) around noise."""
    head = bytearray(src.blob[: _HEAD + _plen(src.blob)])
    _put(head, 8, rng.choice([src.d, rng.randrange(1, 1 << 20), *_HUGE]), 8)
    return _with_crc(bytes(head) + rng.randbytes(rng.randrange(300)) + bytes(4))


def _truncate(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    cut = src.blob[: rng.randrange(len(src.blob))]
    return _with_crc(cut) if rng.random() < 0.5 and len(cut) >= 4 else cut


def _extend(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    longer = src.blob + rng.randbytes(rng.randrange(1, 64))
    return _with_crc(longer) if rng.random() < 0.5 else longer


def _bitflip(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    b = bytearray(src.blob)
    fix = rng.random() < 0.5
    for _ in range(rng.randrange(1, 5)):
        b[rng.randrange(len(b) - 4 if fix else len(b))] ^= 1 << rng.randrange(8)
    return _with_crc(b) if fix else bytes(b)


def _forge_d(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    b = bytearray(src.blob)
    near = [src.d - 1, src.d + 1, src.d + 7, 2 * src.d, src.d // 2, 1 << 16]
    _put(b, 8, rng.choice([*near, *_HUGE]), 8)
    return _with_crc(b)


def _forge_header(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    b = bytearray(src.blob)
    pos, size = rng.choice([(2, 1), (3, 1), (4, 1), (5, 1), (6, 2)])
    _put(b, pos, rng.choice([*_HUGE, rng.randrange(256), int(b[pos]) + 1]), size)
    return _with_crc(b)


def _forge_params(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    plen = _plen(src.blob)
    if plen == 0:
        return _forge_header(rng, src, corpus)
    b = bytearray(src.blob)
    pos = _HEAD + rng.randrange(plen)
    if rng.random() < 0.5:
        b[pos] = rng.randrange(256)
    else:
        b[pos : pos + 4] = struct.pack("<f", rng.choice(_FLOATS))  # may spill over
    return _with_crc(b[: len(src.blob)])


def _forge_word(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    """A count, index or scale in the body replaced by a hostile value."""
    b = bytearray(src.blob)
    start = _HEAD + _plen(src.blob)
    room = len(b) - 4 - start
    if room < 1:
        return _forge_d(rng, src, corpus)
    pos = start + rng.randrange(min(room, 96))
    if rng.random() < 0.3:
        word = struct.pack("<f", rng.choice(_FLOATS))
    else:
        size = rng.choice([1, 2, 4, 8])
        value = rng.choice([*_HUGE, src.d, src.d + 1, src.d // 2, 2**39])
        word = (value % (1 << (8 * size))).to_bytes(size, "little")
    word = word[: len(b) - 4 - pos]
    b[pos : pos + len(word)] = word
    return _with_crc(b)


def _forge_d_and_count(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    """A consistent lie: a huge d and a 64-bit body count that fits it (the fraction
    of d a sub-bit, top-k or rand-k payload would declare)."""
    b = bytearray(src.blob)
    d = rng.choice([2**20, 2**32, 2**40, 2**47 - 1])
    _put(b, 8, d, 8)
    start = _HEAD + _plen(src.blob)
    words = (len(b) - 4 - start) // 8
    if words >= 1:
        pos = start + (0 if rng.random() < 0.5 else 8 * rng.randrange(min(words, 4)))
        fraction = rng.choice([1.0, 0.75, 0.5, 0.25, 0.01, 1e-6])
        _put(b, pos, round(d * fraction), 8)
    return _with_crc(b)


def _graft(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    """This codec's header and parameters on another payload's body."""
    other = corpus.any_source(rng)
    head = src.blob[: _HEAD + _plen(src.blob)]
    body = other.blob[_HEAD + _plen(other.blob) :]
    b = bytearray(head + body)
    if rng.random() < 0.5:
        _put(b, 8, other.d, 8)
    return _with_crc(b)


def _foreign(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    """Another setting's valid payload, as is or relabelled with this codec's id."""
    other = corpus.any_source(rng).blob
    if rng.random() < 0.5:
        return other
    b = bytearray(other)
    b[3] = src.blob[3]
    return _with_crc(b)


def _valid(rng: random.Random, src: _Source, corpus: _Corpus) -> bytes:
    return src.blob


#: name -> (mutation, weight). Forgeries that pass the CRC reach the deepest code,
#: so they are drawn more often than noise the envelope check rejects at once.
MUTATIONS: dict[str, tuple[_Mutation, int]] = {
    "random": (_random, 1),
    "random-body": (_random_body, 2),
    "truncate": (_truncate, 1),
    "extend": (_extend, 1),
    "bitflip": (_bitflip, 2),
    "forge-d": (_forge_d, 2),
    "forge-header": (_forge_header, 1),
    "forge-params": (_forge_params, 1),
    "forge-word": (_forge_word, 2),
    "forge-d+count": (_forge_d_and_count, 3),
    "graft": (_graft, 2),
    "foreign": (_foreign, 1),
    "valid": (_valid, 1),
}


# ------------------------------------------------------------------ guards
class CaseTimeout(Exception):
    """A case ran past the per-case time limit (raised by the alarm handler)."""


def _vm_size() -> int:
    """Current virtual memory size of this process in bytes (Linux), else 0."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextmanager
def _address_space_limit(budget: int | None) -> Iterator[int | None]:
    """Cap RLIMIT_AS at the current size plus ``budget`` bytes; restore on exit."""
    if budget is None or _vm_size() == 0:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class _PeakRss:
    """Peak resident memory of one case: Linux VmHWM, reset before the case."""

    def __init__(self) -> None:
        self.ok = False
        try:
            self._reset_hwm()
            self.ok = self._hwm() > 0
        except OSError:
            pass
        self._base = 0

    @staticmethod
    def _reset_hwm() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # "5": reset the peak RSS to the current RSS

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def reset(self) -> None:
        if self.ok:
            self._reset_hwm()
            self._base = self._hwm()

    def peak(self) -> int:
        """Bytes of resident memory above the level at the last reset."""
        return max(0, self._hwm() - self._base) if self.ok else 0


def _mmap_large_allocations(threshold: int = 1 << 16) -> bool:
    """Make glibc serve every allocation of ``threshold`` bytes or more with its own
    mmap (no dynamic threshold), so it shows in the peak RSS and leaves on free.
    Returns whether it took effect (False off glibc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3
    return bool(mallopt(m_mmap_threshold, threshold))


@contextmanager
def _alarm(limit: float | None) -> Iterator[Callable[[bool], None]]:
    """``arm(True)``/``arm(False)`` start/stop a per-case alarm raising CaseTimeout
    (main thread only; elsewhere, or with no limit, arming does nothing)."""
    if not limit or threading.current_thread() is not threading.main_thread():
        yield lambda on: None
        return

    def handler(signum: int, frame: object) -> None:
        raise CaseTimeout(f"case ran over {limit} s")

    def arm(on: bool) -> None:
        signal.setitimer(signal.ITIMER_REAL, limit if on else 0.0)

    old = signal.signal(signal.SIGALRM, handler)
    try:
        yield arm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------- report
OK_OUTCOMES = ("payload-error", "decoded")


def _label(setting: int) -> str:
    name, params = SETTINGS[setting]
    return " ".join([name, *(f"{k}={v}" for k, v in params.items())])


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


@dataclass
class FuzzReport:
    """Outcome counts, per-case times and peak memory, and the failures of a run."""

    cases: int
    seed: int
    seconds: float
    memory_limit: int | None
    outcomes: Counter[str] = field(default_factory=Counter)
    by_mutation: dict[str, Counter[str]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    rejected_peak: int = 0
    slowest: dict[str, Any] = field(default_factory=dict)
    largest: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Cases whose outcome is neither PayloadError nor a valid output."""
        return sum(n for k, n in self.outcomes.items() if k not in OK_OUTCOMES)

    def summary(self) -> dict[str, Any]:
        """The run's figures as plain JSON-ready values."""
        t = np.asarray(self.times)
        m = np.asarray(self.peaks, dtype=np.float64)
        return {
            "cases": self.cases,
            "seed": self.seed,
            "settings": len(SETTINGS),
            "sizes": list(SIZES),
            "seconds": round(self.seconds, 3),
            "cases_per_s": round(self.cases / self.seconds, 1) if self.seconds else 0,
            "case_ms": {
                "median": round(1e3 * _percentile(t, 50), 4),
                "p99": round(1e3 * _percentile(t, 99), 4),
                "p99.9": round(1e3 * _percentile(t, 99.9), 4),
                "max": round(1e3 * float(t.max()), 4) if t.size else 0,
            },
            "case_peak_rss_bytes": {
                "p99.9": int(_percentile(m, 99.9)),
                "max": int(m.max()) if m.size else 0,
                "max_rejected": self.rejected_peak,
            },
            "memory_limit_bytes": self.memory_limit,
            "slowest_case": self.slowest,
            "largest_case": self.largest,
            "outcomes": dict(self.outcomes.most_common()),
            "by_mutation": {k: dict(v) for k, v in sorted(self.by_mutation.items())},
            "failed": self.failed,
            "failures": self.failures,
        }

    def table(self) -> str:
        """A human-readable summary."""
        s = self.summary()
        ms, rss = s["case_ms"], s["case_peak_rss_bytes"]
        mib = 1 << 20
        lines = [
            f"fedrot.fuzz: {s['cases']} cases (seed {s['seed']}; {s['settings']} "
            f"codec settings x sizes {s['sizes']}, {len(MUTATIONS)} mutations)",
            f"  {s['seconds']:.1f} s, {s['cases_per_s']:.0f} cases/s; per case: median "
            f"{ms['median']:.3f} ms, p99 {ms['p99']:.2f} ms, "
            f"p99.9 {ms['p99.9']:.2f} ms, max {ms['max']:.1f} ms "
            f"({self.slowest.get('what', '-')})",
            f"  peak RSS per case: p99.9 {rss['p99.9'] / mib:.2f} MiB, max "
            f"{rss['max'] / mib:.2f} MiB ({self.largest.get('what', '-')}); "
            f"rejected payloads max {rss['max_rejected'] / mib:.2f} MiB",
            "",
            f"  {'mutation':<15}{'PayloadError':>13}{'decoded':>9}{'FAILED':>8}",
        ]
        for kind, c in sorted(self.by_mutation.items()):
            bad = sum(n for k, n in c.items() if k not in OK_OUTCOMES)
            lines.append(
                f"  {kind:<15}{c['payload-error']:>13}{c['decoded']:>9}{bad:>8}"
            )
        total = self.outcomes
        lines.append(
            f"  {'total':<15}{total['payload-error']:>13}{total['decoded']:>9}"
            f"{self.failed:>8}"
        )
        for f in self.failures[:10]:
            lines.append(
                f"  FAILED case {f['case']}: {f['outcome']} in {f['what']}: "
                f"{f['detail']}"
            )
        if self.failed > len(self.failures[:10]):
            lines.append(f"  ... {self.failed} failed cases in all")
        return "\n".join(lines)


# --------------------------------------------------------------------- run
def _bad_output(out: object, d: int) -> str | None:
    if not isinstance(out, torch.Tensor):
        return f"returned {type(out).__name__}, not a tensor"
    if out.dtype != torch.float32 or out.dim() != 1:
        return f"returned dtype {out.dtype}, shape {tuple(out.shape)}"
    if out.numel() != d:
        return f"returned {out.numel()} values; the payload declares d = {d}"
    if not bool(torch.isfinite(out).all()):
        return "returned non-finite values"
    return None


def fuzz(
    cases: int,
    *,
    seed: int = 0,
    memory_budget: int | None = 2 << 30,
    case_timeout: float | None = 10.0,
    only: int | None = None,
    max_failures: int = 100,
    threads: int | None = 1,
) -> FuzzReport:
    """Run ``cases`` hostile payloads through the decoders (see the module docstring).

    Parameters
    ----------
    cases
        Number of cases; case ``i`` is the same for every run with this ``seed``.
    seed
        Seed of the case generator.
    memory_budget
        Bytes of address space allowed above the size at the start (RLIMIT_AS);
        None leaves the limit alone.
    case_timeout
        Seconds per case before it counts as a ``timeout`` failure (None: no limit;
        only enforced on the main thread).
    only
        Run only case ``only`` (the others are generated, not run): a replay.
    max_failures
        Failures recorded in detail (all are counted).
    threads
        torch's intra-op threads during the run (restored after); 1 keeps per-case
        times free of thread start-up and contention. None leaves torch's setting.

    Returns
    -------
    FuzzReport
        Outcome counts, times, memory and failures.
    """
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise ValueError(f"`cases` must be an int >= 1. Found {cases!r}.")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(cases, seed, memory_budget, case_timeout, only, max_failures)
    finally:
        torch.set_num_threads(old_threads)


def _run(
    cases: int,
    seed: int,
    memory_budget: int | None,
    case_timeout: float | None,
    only: int | None,
    max_failures: int,
) -> FuzzReport:
    corpus = _corpus()
    rng = random.Random(seed)
    kinds = [k for k, (_, weight) in MUTATIONS.items() for _ in range(weight)]
    mem = _PeakRss()
    with _address_space_limit(memory_budget) as limit, _alarm(case_timeout) as arm:
        report = FuzzReport(cases=0, seed=seed, seconds=0.0, memory_limit=limit)
        start = time.perf_counter()
        for i in range(cases):
            src = rng.choice(rng.choice(corpus.sources))
            kind = rng.choice(kinds)
            blob = MUTATIONS[kind][0](rng, src, corpus)
            aggregate = rng.randrange(AGGREGATE_EVERY) == 0
            same = rng.random() < 0.875
            seed_, client = (
                (src.seed, src.client)
                if same
                else (rng.getrandbits(64), rng.randrange(9))
            )
            if only is not None and i != only:
                continue
            codec = corpus.codecs[src.setting]
            what = f"{_label(src.setting)}, d={src.d}, {kind}" + (
                ", aggregate" if aggregate else ""
            )
            detail = ""
            mem.reset()
            t0 = time.perf_counter()
            try:
                arm(True)
                try:
                    if aggregate:
                        out = codec.aggregate(
                            [src.blob, blob],
                            seed=seed_,
                            clients=[src.client, src.client + 1],
                        )
                        expected = src.d
                    else:
                        out = codec.decode(blob, seed=seed_, client=client)
                        expected = int.from_bytes(blob[8:16], "little")
                finally:
                    arm(False)
                problem = _bad_output(out, expected)
                outcome = "decoded" if problem is None else "bad-output"
                detail = problem or ""
                del out
            except PayloadError:
                outcome = "payload-error"
            except Exception as exc:  # every other exception is a finding
                outcome = type(exc).__name__
                detail = str(exc)[:300]
            elapsed = time.perf_counter() - t0
            peak = mem.peak()
            report.cases += 1
            report.times.append(elapsed)
            report.peaks.append(peak)
            report.outcomes[outcome] += 1
            report.by_mutation.setdefault(kind, Counter())[outcome] += 1
            if outcome == "payload-error" and not aggregate:
                report.rejected_peak = max(report.rejected_peak, peak)
            where = {"case": i, "what": what, "bytes": len(blob)}
            if elapsed >= report.slowest.get("seconds", -1.0):
                report.slowest = {**where, "seconds": round(elapsed, 6)}
            if peak >= report.largest.get("peak_rss_bytes", -1):
                report.largest = {**where, "peak_rss_bytes": peak}
            if outcome not in OK_OUTCOMES and len(report.failures) < max_failures:
                report.failures.append(
                    {
                        **where,
                        "outcome": outcome,
                        "detail": detail,
                        "seconds": round(elapsed, 6),
                        "peak_rss_bytes": peak,
                        "blob_hex": blob[:4096].hex(),
                    }
                )
        report.seconds = time.perf_counter() - start
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print the table, optionally write JSON; 1 on any failure."""
    parser = argparse.ArgumentParser(
        prog="python -m fedrot.fuzz",
        description="Feed hostile payloads to every codec's decoder; exit 1 if any "
        "case raises something other than PayloadError or returns a bad tensor.",
    )
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--memory-budget-mib",
        type=int,
        default=2048,
        help="address space allowed above the start (RLIMIT_AS); 0: no limit",
    )
    parser.add_argument(
        "--case-timeout", type=float, default=10.0, help="seconds; 0: no limit"
    )
    parser.add_argument("--only", type=int, help="replay one case by its index")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error(f"--cases must be >= 1. Found {args.cases}.")
    _mmap_large_allocations()
    report = fuzz(
        args.cases,
        seed=args.seed,
        memory_budget=(args.memory_budget_mib << 20) or None,
        case_timeout=args.case_timeout or None,
        only=args.only,
    )
    print(report.table())
    if args.json is not None:
        args.json.write_text(json.dumps(report.summary(), indent=1) + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
