"""The benchmark suite covers the registry and its issue-14 targets read real rows."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fedrot  # noqa: E402
from bench.codecs import CODECS, bench_codecs  # noqa: E402
from bench.run import SECTION_KEYS, bench_aggregation, bench_fwht  # noqa: E402
from bench.targets import TARGETS, Target, evaluate  # noqa: E402
from bench.threads import bench_threads  # noqa: E402


def test_codec_section_covers_every_registered_codec() -> None:
    assert {name for name, _ in CODECS} == set(fedrot.available_codecs())


def test_targets_name_real_sections() -> None:
    for target in TARGETS:
        assert target.section in SECTION_KEYS, target


def test_targets_read_rows_of_a_tiny_run() -> None:
    """Every target finds its row and column in what the sections produce."""
    results = {
        "fwht": bench_fwht([10], 1),
        "codecs": bench_codecs([10], 1),
        "aggregation": bench_aggregation(10, [2], 1),
    }
    rows = evaluate(results)
    assert len(rows) == len(TARGETS)
    for row in rows:
        assert row["status"] in ("met", "MISSED"), row
        assert isinstance(row["measured"], float), row


def test_codec_rows_cover_rotation_modes() -> None:
    rows = bench_codecs([10], 1)
    eden1 = {r["RHTs"] for r in rows if r["codec"] == "eden bits=1"}
    assert eden1 == {"2", "auto"}
    vq = {r["RHTs"] for r in rows if r["codec"] == "vq bits=2"}
    assert vq == {"2", "auto", "3"}  # VQ's default (3) is timed too
    assert {r["RHTs"] for r in rows if r["codec"] == "topk fraction=0.03125"} == {"-"}


def test_targets_prefer_the_issue_size_and_fall_back_to_the_largest() -> None:
    target = Target("t", "codecs", "encode_x_pass", 8.0, {"codec": "c"})
    rows = [
        {"codec": "c", "d": "2^20", "encode_x_pass": 9.0},
        {"codec": "c", "d": "2^24", "encode_x_pass": 7.0},
        {"codec": "c", "d": "2^26", "encode_x_pass": 20.0},
        {"codec": "other", "d": "2^24", "encode_x_pass": 1.0},
    ]
    (met,) = evaluate({"codecs": rows}, (target,))
    assert (met["size"], met["measured"], met["status"]) == ("d=2^24", 7.0, "met")
    (missed,) = evaluate({"codecs": rows[:1] + rows[2:]}, (target,))
    assert (missed["size"], missed["status"]) == ("d=2^26", "MISSED")
    (absent,) = evaluate({}, (target,))
    assert absent["status"] == "not run"


def test_thread_section_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    rows = bench_threads([10], 1)
    assert torch.get_num_threads() == before
    assert rows[0]["operation"] == "fwht_ in place"
    assert all(r["ms_1_thread"] > 0 and r["ms_2_threads"] > 0 for r in rows)
