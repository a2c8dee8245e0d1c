"""The fuzz loop: generate each case, run it under the guards, record the outcome."""

from __future__ import annotations

import random
import time
from collections import Counter

import torch

from ..errors import PayloadError
from .corpus import setting_label, shared_corpus
from .guards import PeakRss, address_space_limit, case_alarm
from .mutations import MUTATIONS
from .report import OK_OUTCOMES, FuzzReport

__all__ = ["AGGREGATE_EVERY", "fuzz"]

#: Cases that aggregate the hostile payload with a valid one: one in this many.
AGGREGATE_EVERY = 8


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
    corpus = shared_corpus()
    rng = random.Random(seed)
    kinds = [k for k, (_, weight) in MUTATIONS.items() for _ in range(weight)]
    mem = PeakRss()
    with address_space_limit(memory_budget) as limit, case_alarm(case_timeout) as arm:
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
            what = f"{setting_label(src.setting)}, d={src.d}, {kind}" + (
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
