"""``python -m fedrot.fuzz``: run, print the table, optionally write JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .guards import mmap_large_allocations
from .run import fuzz

__all__ = ["main"]


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
    mmap_large_allocations()
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
