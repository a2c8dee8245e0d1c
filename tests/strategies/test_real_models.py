"""End to end with a model like users' models: BatchNorm, an int64 counter, float64.

In-process simulation (Strategy.start over a LocalGrid, no Ray), 4 nodes, 3 rounds,
every inner strategy x every codec family. Each round must count all replies, move
the model, keep evaluation finite, keep BatchNorm variances >= 0 and broadcast the
initial dtypes at a constant size. The diagonal runs in the default suite; the
full matrix is ``-m slow``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from flower_factories import set_task_identity
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
)
from real_model import (
    RecordingGrid,
    evaluate,
    is_finite,
    load_data,
    make_client_app,
    make_model,
    one_torch_thread,
)

from fedrot.constants import (
    FAILURE_REASONS,
    METRIC_FAILED_PREFIX,
    METRIC_FAILED_REPLIES,
)
from fedrot.strategies import CompressedStrategy

NODES, ROUNDS = 4, 3
BATCHES_PER_ROUND = 6  # 120 examples per node, batches of 20

INNER = {
    "fedavg": lambda: FedAvg(),
    "fedprox": lambda: FedProx(proximal_mu=0.01),
    "fedadam": lambda: FedAdam(eta=0.03),
    "fedyogi": lambda: FedYogi(eta=0.03),
    "fedtrimmedavg": lambda: FedTrimmedAvg(beta=0.25),
    "fedmedian": lambda: FedMedian(),
    "krum": lambda: Krum(num_malicious_nodes=0),
    "dp-server": lambda: DifferentialPrivacyServerSideFixedClipping(
        FedAvg(), noise_multiplier=0.0, clipping_norm=50.0, num_sampled_clients=NODES
    ),
}
CODECS = {
    "fp32": {"codec": "fp32"},
    "fp16": {"codec": "fp16"},
    "eden-1": {"codec": "eden", "bits": 1},
    "drive": {"codec": "drive"},
    "quic-fl-2": {"codec": "quic-fl", "bits": 2},
    "topk-ef": {"codec": "topk", "fraction": 0.1, "error_feedback": True},
    "vq": {"codec": "vq"},
}
# every inner strategy and every codec at least once, in the default suite
DIAGONAL = [
    (inner, codec)
    for inner, codec in zip(sorted(INNER), itertools.cycle(sorted(CODECS)))
]
MATRIX = [
    pytest.param(
        inner, codec, marks=() if (inner, codec) in DIAGONAL else pytest.mark.slow
    )
    for inner in sorted(INNER)
    for codec in sorted(CODECS)
]


def run_training(inner: str, codec: str):
    set_task_identity()
    grid = RecordingGrid(make_client_app(), NODES)
    strategy = CompressedStrategy(INNER[inner](), seed=3, **CODECS[codec])
    initial = ArrayRecord(make_model().state_dict())
    x_test, y_test = load_data(-1, NODES)

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = make_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x_test, y_test)
        return MetricRecord({"loss": loss, "acc": acc})

    with one_torch_thread():
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=ROUNDS,
            train_config=ConfigRecord({"lr": 0.05}),
            evaluate_fn=central,
        )
    return result, grid, initial


def _rounds(messages):
    """Instructions grouped per round (every node is sampled every round)."""
    assert len(messages) == NODES * ROUNDS
    return [messages[i : i + NODES] for i in range(0, len(messages), NODES)]


@pytest.mark.parametrize(("inner", "codec"), MATRIX)
def test_three_rounds_with_batchnorm(inner: str, codec: str) -> None:
    result, grid, initial = run_training(inner, codec)
    dtypes = {k: a.dtype for k, a in initial.items()}
    train_sent, train_replies = grid.by_type("train")
    eval_sent, _ = grid.by_type("evaluate")

    # every round: all replies are results and all of them count
    assert not [r.error.reason for r in train_replies if r.has_error()]
    for rnd in range(1, ROUNDS + 1):
        metrics = result.train_metrics_clientapp[rnd]
        assert metrics[METRIC_FAILED_REPLIES] == 0
        assert sum(metrics[METRIC_FAILED_PREFIX + r] for r in FAILURE_REASONS) == 0

    # the broadcast keeps the initial dtypes and size; BatchNorm stays valid
    sizes = set()
    previous = None
    for msgs in _rounds(train_sent) + _rounds(eval_sent):
        for msg in msgs:
            arrays = msg.content["arrays"]
            assert {k: a.dtype for k, a in arrays.items()} == dtypes
            assert (arrays["bn.running_var"].numpy() >= 0).all()
            sizes.add(sum(len(a.data) for a in arrays.values()))
    assert len(sizes) == 1, sizes
    for msgs in _rounds(train_sent):
        weights = msgs[0].content["arrays"]["fc.weight"].numpy()
        if previous is not None:
            assert not np.array_equal(weights, previous), "the model did not change"
        previous = weights
    final = result.arrays
    assert {k: a.dtype for k, a in final.items()} == dtypes
    assert (final["bn.running_var"].numpy() >= 0).all()
    assert not np.array_equal(final["fc.weight"].numpy(), previous)
    # the counter travels exactly and averages to the clients' count; clipping
    # (DP) and server optimizers (FedAdam, FedYogi) step it like any array
    if inner not in ("dp-server", "fedadam", "fedyogi"):
        assert int(final["bn.num_batches_tracked"].numpy()) == BATCHES_PER_ROUND * 3

    # evaluation is finite and moves every round
    losses = [result.evaluate_metrics_serverapp[r]["loss"] for r in range(ROUNDS + 1)]
    assert all(is_finite(v) for v in losses), losses
    assert len(set(losses)) == len(losses), losses
    for rnd in range(1, ROUNDS + 1):
        assert is_finite(result.evaluate_metrics_clientapp[rnd]["eval-loss"])
