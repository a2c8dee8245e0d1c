"""ServerApp: the only fedrot line wraps the strategy in ``CompressedStrategy``."""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Result

from fedrot.strategies import CompressedStrategy

from .task import evaluate, load_data, make_model, num_params

app = ServerApp()


def run(grid: Grid, run_config: dict[str, Any]) -> Result:
    """Train ``num-server-rounds`` rounds; write the Result to ``results-path``."""
    hidden = int(run_config.get("hidden", 32))
    codec = str(run_config.get("codec", "eden"))
    bits = float(run_config.get("bits", 1.0))
    params = {"bits": int(bits) if bits.is_integer() else bits}
    params = params if codec in ("eden", "quic-fl") else {}
    strategy = CompressedStrategy(
        FedAvg(fraction_evaluate=1.0, min_train_nodes=2, min_available_nodes=2),
        codec=codec,
        seed=int(run_config.get("seed", 1234)),
        **params,
    )
    x_test, y_test = load_data(-1)

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = make_model(hidden)
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x_test, y_test)
        return MetricRecord({"loss": loss, "acc": acc})

    model = make_model(hidden)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        train_config=ConfigRecord({"lr": float(run_config.get("lr", 0.3))}),
        num_rounds=int(run_config.get("num-server-rounds", 2)),
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
                },
                f,
                indent=1,
            )
    return result


@app.main()
def main(grid: Grid, context: Context) -> None:
    run(grid, dict(context.run_config))
