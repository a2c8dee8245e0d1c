"""fedrot.fuzz: hostile payloads give PayloadError or a finite tensor of length d."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fedrot.codecs import CODECS
from fedrot.fuzz import MUTATIONS, SETTINGS, fuzz

ROOT = Path(__file__).resolve().parents[1]


def _run_cli(tmp_path: Path, *args: str, prelude: str = "") -> tuple[int, str, Any]:
    """Run the fuzz command in a fresh process; returns (exit code, output, JSON)."""
    out = tmp_path / "fuzz.json"
    code = prelude + (
        "import sys\nfrom fedrot.fuzz import main\n"
        f"sys.exit(main({[*args, '--json', str(out)]!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    report = json.loads(out.read_text()) if out.exists() else None
    return proc.returncode, proc.stdout + proc.stderr, report


def _check_clean_run(rc: int, output: str, report: Any, cases: int) -> None:
    assert report is not None, output
    failures = "\n".join(
        f"{f['outcome']} in case {f['case']} ({f['what']}): {f['detail']}"
        for f in report["failures"]
    )
    assert report["failed"] == 0 and rc == 0, failures or output
    assert report["cases"] == cases
    assert set(report["by_mutation"]) == set(MUTATIONS)
    outcomes = report["outcomes"]
    assert set(outcomes) == {"payload-error", "decoded"}
    # the forgeries reach the decoders' deep paths: many decode, many are rejected
    assert min(outcomes.values()) > cases // 20
    # a rejected payload never costs memory of the size it declares
    assert report["case_peak_rss_bytes"]["max_rejected"] < 64 << 20
    assert report["cases_per_s"] > 0 and report["case_ms"]["max"] > 0


def test_settings_cover_every_registered_codec() -> None:
    assert {name for name, _ in SETTINGS} == set(CODECS)


def test_two_thousand_hostile_payloads_only_raise_payload_error(
    tmp_path: Path,
) -> None:
    rc, output, report = _run_cli(tmp_path, "--cases", "2000", "--seed", "0")
    _check_clean_run(rc, output, report, 2000)
    assert "cases/s" in output and "PayloadError" in output


@pytest.mark.slow
def test_ten_thousand_hostile_payloads_only_raise_payload_error(
    tmp_path: Path,
) -> None:
    rc, output, report = _run_cli(tmp_path, "--cases", "10000", "--seed", "1")
    _check_clean_run(rc, output, report, 10_000)


def test_guards_report_huge_allocations_and_runaway_cases(tmp_path: Path) -> None:
    """A decoder that trusts a forged size or hangs is a reported failure, not a
    crash: the address-space cap turns the allocation into an error, the alarm ends
    the case, and the command exits 1."""
    prelude = textwrap.dedent(
        """
        import time
        import torch
        from fedrot.codecs import CODECS

        def allocate(self, header, reader, seed, client):
            return torch.ones(3 << 28)  # 3 GiB: more than the budget below

        def hang(self, header, reader, seed, client):
            time.sleep(30)

        CODECS["fp32"]._decode = allocate
        CODECS["fp16"]._decode = hang
        """
    )
    rc, output, report = _run_cli(
        tmp_path,
        "--cases",
        "300",
        "--memory-budget-mib",
        "1024",
        "--case-timeout",
        "0.5",
        prelude=prelude,
    )
    assert rc == 1 and report is not None, output
    outcomes = report["outcomes"]
    assert outcomes.get("CaseTimeout", 0) > 0, outcomes
    assert outcomes.get("RuntimeError", 0) + outcomes.get("MemoryError", 0) > 0
    assert all(f["what"].startswith(("fp32", "fp16")) for f in report["failures"])
    assert "FAILED case" in output
    assert report["case_ms"]["max"] < 5_000  # the alarm ended the 30 s sleeps


def test_cases_are_deterministic_and_replay_one_by_one() -> None:
    whole = fuzz(40, seed=5, memory_budget=None, case_timeout=None)
    assert whole.cases == 40
    again = fuzz(40, seed=5, memory_budget=None, case_timeout=None)
    assert again.by_mutation == whole.by_mutation
    replayed: Counter[str] = Counter()
    for i in range(40):
        one = fuzz(40, seed=5, memory_budget=None, case_timeout=None, only=i)
        assert one.cases == 1
        replayed += one.outcomes
    assert replayed == whole.outcomes


def test_cases_must_be_positive() -> None:
    with pytest.raises(ValueError, match="`cases` must be an int >= 1"):
        fuzz(0)
