"""In-process simulation: the e2e Flower app trained through Strategy.start (no Ray)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from flower_factories import LocalGrid, set_task_identity

from fedrot.constants import (
    METRIC_FAILED_REPLIES,
    METRIC_UPLINK_BYTES,
    METRIC_UPLINK_PAYLOAD_BYTES,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deployment_app"))
from fedrot_e2e.client_app import app as client_app  # noqa: E402
from fedrot_e2e.server_app import run  # noqa: E402


@pytest.mark.parametrize(("codec", "bits"), [("eden", 1.0), ("quic-fl", 2.0)])
def test_compressed_training_improves_accuracy(codec: str, bits: float) -> None:
    set_task_identity()
    run_config = {
        "codec": codec,
        "bits": bits,
        "num-server-rounds": 3,
        "hidden": 32,
        "lr": 0.3,
    }
    result = run(LocalGrid(client_app, 3, run_config), run_config)
    acc = {r: m["acc"] for r, m in result.evaluate_metrics_serverapp.items()}
    assert acc[3] >= acc[0] + 0.2, acc
    for rnd in (1, 2, 3):
        train = result.train_metrics_clientapp[rnd]
        assert train[METRIC_FAILED_REPLIES] == 0
        assert 0 < train[METRIC_UPLINK_PAYLOAD_BYTES] < train[METRIC_UPLINK_BYTES]
        assert result.evaluate_metrics_clientapp[rnd]["eval-acc"] > 0
    # the mod really compressed: ~bits per parameter, not 32
    d = sum(a.numpy().size for a in result.arrays.values())
    assert (
        result.train_metrics_clientapp[1][METRIC_UPLINK_PAYLOAD_BYTES]
        < 3 * d * (bits + 1) / 8
    )


@pytest.mark.slow
def test_flower_simulation_engine_runs_compressed_training() -> None:
    """The same apps under Flower's Ray simulation engine (run_simulation)."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    results = []
    server_app = ServerApp()
    run_config = {
        "codec": "eden",
        "bits": 1.0,
        "num-server-rounds": 2,
        "hidden": 32,
        "lr": 0.3,
    }

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        results.append(run(grid, run_config))

    saved = dict(os.environ)
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=3,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 1, "include_dashboard": False},
            },
        )
    finally:  # Flower and Ray leave PYTHONPATH and RAY_* set in this process
        os.environ.clear()
        os.environ.update(saved)
    assert len(results) == 1
    result = results[0]
    acc = {r: m["acc"] for r, m in result.evaluate_metrics_serverapp.items()}
    assert acc[2] > acc[0], acc
    for rnd in (1, 2):
        assert result.train_metrics_clientapp[rnd][METRIC_FAILED_REPLIES] == 0
