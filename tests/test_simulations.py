"""The simulations app: config parsing, partitions, CLI errors, and the smoke preset."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "simulations"))

from fedrot_sim.config import RunConfig  # noqa: E402
from fedrot_sim.data import dirichlet_partition  # noqa: E402
from fedrot_sim.sweep import PRESETS, preset_configs  # noqa: E402


def _simulations(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run ``python -m simulations ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "simulations", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_config_parses_kebab_case_and_rejects_unknown_keys() -> None:
    cfg = RunConfig.from_run_config(
        {
            "task": "digits",
            "codec": "eden",
            "bits": 2.0,
            "rotations": "auto",
            "num-clients": 10,
            "clients-per-round": 5,
            "rounds": 3,
        }
    )
    assert cfg.codec_kwargs() == {"bits": 2, "rotations": "auto"}
    assert cfg.label == "eden 2b R=auto"
    with pytest.raises(ValueError, match="Unknown run-config key.*num-client"):
        RunConfig.from_run_config({"num-client": 3})
    with pytest.raises(ValueError, match="codec"):
        RunConfig(codec="zip")
    with pytest.raises(ValueError, match="bits"):
        RunConfig(codec="eden", bits=9, rotations="2")
    with pytest.raises(ValueError, match="clients_per_round"):
        RunConfig(num_clients=5, clients_per_round=6)


def test_task_filter_selects_one_task_of_a_preset() -> None:
    shakespeare = preset_configs("paper", task="shakespeare", rounds=3)
    assert shakespeare and {c.task for c in shakespeare} == {"shakespeare"}
    assert {c.rounds for c in shakespeare} == {3}
    assert preset_configs("smoke", task="shakespeare") == []


def test_run_ids_are_stable_and_distinct() -> None:
    configs = [c for name in PRESETS for c in preset_configs(name)]
    assert len({c.run_id for c in configs}) == len(configs)
    assert preset_configs("default")[0].run_id == preset_configs("default")[0].run_id


def test_dirichlet_partition_covers_every_example_once() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 20, 0.5, seed=3)
    merged = np.sort(np.concatenate(parts))
    assert np.array_equal(merged, np.arange(1000)) and min(len(p) for p in parts) >= 10
    again = dirichlet_partition(labels, 20, 0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_cli_fails_fast_on_bad_options(tmp_path: Path) -> None:
    for args in (
        ["--preset", "nope", "--out", str(tmp_path)],
        ["--preset", "smoke"],
        ["--preset", "smoke", "--out", str(tmp_path), "--rounds", "0"],
        ["--preset", "smoke", "--out", str(tmp_path), "--bogus"],
        ["--preset", "smoke", "--out", str(tmp_path), "--task", "mnist"],
        ["--preset", "smoke", "--out", str(tmp_path), "--task", "shakespeare"],
    ):
        out = _simulations(*args, timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert "error:" in out.stderr


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path: Path) -> None:
    out = _simulations("--preset", "smoke", "--out", str(tmp_path), timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = sorted((tmp_path / "runs").glob("*.json"))
    configs = preset_configs("smoke")
    assert len(runs) == len(configs)
    for path in runs:
        doc = json.loads(path.read_text())
        assert (
            doc["config"]["task"] == "digits" and doc["environment"]["flwr"] == "1.41.0"
        )
        assert len(doc["rounds"]) == doc["config"]["rounds"] + 1
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(c.rounds + 1 for c in configs)
    by_label: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    for label, series in by_label.items():
        cum = [int(r["cumulative_uplink_bytes"]) for r in series]
        assert all(b > a for a, b in zip(cum[1:], cum[2:], strict=False)), label
        assert all(int(r["failed_replies"]) == 0 for r in series)
        assert float(series[-1]["accuracy"]) > float(series[0]["accuracy"]), label
    total = {
        label: int(s[-1]["cumulative_uplink_bytes"]) for label, s in by_label.items()
    }
    assert total["fp32"] > 5 * total["eden 1b"]
    for name in ("accuracy_vs_uplink.png", "accuracy_vs_round.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "| digits | fp32 |" in (tmp_path / "summary.md").read_text()
    # resumable: a second invocation finds every run finished and only rebuilds reports
    again = _simulations("--preset", "smoke", "--out", str(tmp_path), timeout=300)
    assert again.returncode == 0 and "0 to run" in again.stdout
