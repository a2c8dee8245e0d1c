"""ServerApp: the only fedrot line wraps the strategy in ``CompressedStrategy``.

Run config (besides the model's ``hidden`` and ``lr``): ``codec``, ``bits`` and
``seed`` of the uplink; ``downlink-codec`` (empty: fp32 broadcasts),
``downlink-bits`` and ``downlink-mode`` (``model`` or ``delta``) of the broadcasts;
``error-feedback``; ``fraction-evaluate`` (0: no client evaluation); ``min-nodes``
(the nodes every phase waits for and samples at least); ``round-timeout``
(seconds each phase waits for replies, Flower's ``Strategy.start(timeout=...)``);
``control-dir`` and ``pause-after-round`` (a test acts between two rounds, see
:func:`fedrot_e2e.observe.pause_point`); and ``results-path``, where the run's
metrics and phases are written as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Result

from fedrot.strategies import CompressedStrategy

from .observe import RecordingGrid, pause_point
from .task import evaluate, load_data, make_model, num_params

app = ServerApp()


def _bits(value: Any) -> dict[str, int | float]:
    bits = float(value)
    return {"bits": int(bits) if bits.is_integer() else bits}


def _downlink(run_config: dict[str, Any]) -> dict[str, Any] | None:
    codec = str(run_config.get("downlink-codec", ""))
    if not codec:
        return None
    params = _bits(run_config.get("downlink-bits", 8)) if codec == "eden" else {}
    return {
        "codec": codec,
        "mode": str(run_config.get("downlink-mode", "model")),
        **params,
    }


def run(grid: Grid, run_config: dict[str, Any]) -> Result:
    """Train ``num-server-rounds`` rounds; write the Result to ``results-path``."""
    hidden = int(run_config.get("hidden", 32))
    codec = str(run_config.get("codec", "eden"))
    params = _bits(run_config.get("bits", 1.0)) if codec in ("eden", "quic-fl") else {}
    min_nodes = int(run_config.get("min-nodes", 2))
    strategy = CompressedStrategy(
        FedAvg(
            fraction_evaluate=float(run_config.get("fraction-evaluate", 1.0)),
            min_train_nodes=min_nodes,
            min_evaluate_nodes=min_nodes,
            min_available_nodes=min_nodes,
        ),
        codec=codec,
        seed=int(run_config.get("seed", 1234)),
        error_feedback=bool(run_config.get("error-feedback", False)),
        downlink=_downlink(run_config),
        **params,
    )
    x_test, y_test = load_data(-1)
    control_dir = str(run_config.get("control-dir", ""))
    pause_after = int(run_config.get("pause-after-round", 0))

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = make_model(hidden)
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x_test, y_test)
        if control_dir and pause_after > 0 and server_round == pause_after:
            pause_point(control_dir, server_round)
        return MetricRecord({"loss": loss, "acc": acc})

    model = make_model(hidden)
    recording = RecordingGrid(grid)
    result = strategy.start(
        grid=recording,
        initial_arrays=ArrayRecord(model.state_dict()),
        train_config=ConfigRecord({"lr": float(run_config.get("lr", 0.3))}),
        num_rounds=int(run_config.get("num-server-rounds", 2)),
        timeout=float(run_config.get("round-timeout", 3600)),
        evaluate_fn=central,
    )
    path = str(run_config.get("results-path", ""))
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "run_config": dict(run_config),
                    "num_params": num_params(model),
                    "train": {
                        r: dict(m) for r, m in result.train_metrics_clientapp.items()
                    },
                    "evaluate": {
                        r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()
                    },
                    "server": {
                        r: dict(m) for r, m in result.evaluate_metrics_serverapp.items()
                    },
                    "phases": recording.phases,
                },
                f,
                indent=1,
            )
    return result


@app.main()
def main(grid: Grid, context: Context) -> None:
    run(grid, dict(context.run_config))
