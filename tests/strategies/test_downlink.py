"""Compressed broadcasts through Flower: nodes rebuild exactly the server's record."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from flower_factories import set_task_identity
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg
from real_model import (
    CLASSES,
    FEATURES,
    RecordingGrid,
    load_data,
    make_client_app,
    make_model,
    one_torch_thread,
)

from fedrot.broadcast import checksum
from fedrot.clients import compression_mod
from fedrot.constants import (
    DOWNLINK_RECORD,
    METRIC_DOWNLINK_BYTES,
    METRIC_DOWNLINK_PAYLOAD_BYTES,
    METRIC_FAILED_PREFIX,
    METRIC_FAILED_REPLIES,
    METRIC_TOTAL_BYTES,
    METRIC_UPLINK_BYTES,
    STATE_DOWNLINK_MODEL,
    STATE_DOWNLINK_TAG,
)
from fedrot.strategies import CompressedStrategy


@pytest.fixture(autouse=True)
def _identity() -> None:
    set_task_identity()
    random.seed(0)


class SpyGrid(RecordingGrid):
    """Also records what each node's ClientApp received (after the mod)."""

    def __init__(self, n: int, *, restart: dict[int, int] | None = None) -> None:
        self.seen: list[tuple[int, str, ArrayRecord]] = []
        app = make_client_app()

        def spying_app(msg, ctxt):
            return app(msg, ctxt)

        super().__init__(spying_app, n)
        self.restart = restart or {}  # call number -> node whose state is wiped
        self.calls = 0

    def send_and_receive(self, messages, *, timeout=None):
        self.calls += 1
        node = self.restart.get(self.calls)
        if node is not None:  # a restart that kept its node id but lost its state
            self.contexts[node] = type(self.contexts[node])(
                run_id=1,
                node_id=node,
                node_config=self.contexts[node].node_config,
                state=type(self.contexts[node].state)(),
                run_config={},
            )
        return super().send_and_receive(messages, timeout=timeout)


def _train(strategy, grid, rounds=3):
    with one_torch_thread():
        return strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(make_model().state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": 0.05}),
        )


def _held_models(grid, sender):
    """{node: (version, model vector)} of every node that holds a model."""
    out = {}
    for node, ctxt in grid.contexts.items():
        if STATE_DOWNLINK_MODEL in ctxt.state:
            version = int(ctxt.state[STATE_DOWNLINK_TAG]["version"])
            out[node] = (version, ctxt.state[STATE_DOWNLINK_MODEL]["model"].numpy())
    return out


@pytest.mark.parametrize("mode", ["model", "delta"])
def test_broadcasts_are_compressed_and_training_counts_every_reply(mode) -> None:
    grid = RecordingGrid(make_client_app(), 4)
    strategy = CompressedStrategy(
        FedAvg(),
        codec="eden",
        bits=1,
        seed=2,
        downlink={"codec": "eden", "bits": 4, "mode": mode},
    )
    result = _train(strategy, grid)
    initial = ArrayRecord(make_model().state_dict())
    for rnd in (1, 2, 3):
        metrics = result.train_metrics_clientapp[rnd]
        assert metrics[METRIC_FAILED_REPLIES] == 0
        assert metrics[METRIC_TOTAL_BYTES] == (
            metrics[METRIC_UPLINK_BYTES] + metrics[METRIC_DOWNLINK_BYTES]
        )
    sent, _ = grid.by_type("train")
    for msg in sent:  # every instruction carries the broadcast, not the arrays
        assert DOWNLINK_RECORD in msg.content
        assert "fc.weight" not in msg.content["arrays"]
    # the aggregate keeps the initial dtypes
    assert {k: a.dtype for k, a in result.arrays.items()} == {
        k: a.dtype for k, a in initial.items()
    }
    # 4-bit broadcasts in every round, round 1 included (delta mode: the nodes
    # start from the zero model, so version 0 is a compressed correction too)
    fp32 = 4 * sum(a.numpy().size for a in initial.values()) * 4  # 4 nodes
    for rnd in (1, 2, 3):
        sent_bytes = result.train_metrics_clientapp[rnd][METRIC_DOWNLINK_PAYLOAD_BYTES]
        assert 0 < sent_bytes < fp32 / 3  # d is small: headers weigh in


def _wide_mlp() -> torch.nn.Module:
    """A 491,526-parameter MLP without BatchNorm (like the simulations' CNN, whose
    arrays are all compressed)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 1 << 14),
        torch.nn.ReLU(),
        torch.nn.Linear(1 << 14, CLASSES),
    )


def _wide_mlp_app() -> ClientApp:
    app = ClientApp(mods=[compression_mod])

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        model = _wide_mlp()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        x, y = load_data(int(context.node_config["partition-id"]), 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        metrics = MetricRecord({"num-examples": len(x)})
        arrays = ArrayRecord(model.state_dict())
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


@pytest.mark.parametrize(
    ("mode", "bits", "factor"), [("delta", 2, 15.0), ("model", 8, 3.5)]
)
def test_compressed_broadcasts_cut_the_total_byte_bill(
    mode: str, bits: int, factor: float
) -> None:
    """10 nodes, all every round, 10 rounds: EDEN 1-bit uplink + EDEN 2-bit delta
    broadcasts (cross-silo) or 8-bit model broadcasts (cross-device) against
    float32 both ways (Fleet bytes of every train phase, the first model's
    broadcast included): the issue's >= 15x and >= 3.5x."""
    totals = {}
    for label, kwargs in {
        "fp32": {"codec": "fp32"},
        "eden": {
            "codec": "eden",
            "bits": 1,
            "downlink": {"codec": "eden", "bits": bits, "mode": mode},
        },
    }.items():
        strategy = CompressedStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0), seed=3, **kwargs
        )
        with one_torch_thread():
            result = strategy.start(
                grid=RecordingGrid(_wide_mlp_app(), 10),
                initial_arrays=ArrayRecord(_wide_mlp().state_dict()),
                num_rounds=10,
            )
        metrics = result.train_metrics_clientapp
        assert all(metrics[r][METRIC_FAILED_REPLIES] == 0 for r in range(1, 11))
        totals[label] = sum(metrics[r][METRIC_TOTAL_BYTES] for r in range(1, 11))
    assert totals["fp32"] / totals["eden"] >= factor, totals


def test_model_mode_payload_is_the_same_for_every_node() -> None:
    grid = RecordingGrid(make_client_app(), 3)
    strategy = CompressedStrategy(
        FedAvg(), codec="eden", downlink={"codec": "eden", "bits": 8}
    )
    _train(strategy, grid, rounds=1)
    sent, _ = grid.by_type("train")
    blobs = {
        a.data
        for m in sent
        for k, a in m.content["arrays"].items()
        if k.startswith("fedrot.downlink/")
    }
    assert len(blobs) == 1


def test_delta_mode_nodes_agree_bit_for_bit_with_random_participation() -> None:
    """6 nodes, half sampled per round, one node wiped (restart, same id)."""
    grid = SpyGrid(6, restart={5: 100 + 0, 9: 100 + 3})  # LocalGrid ids: 100..105
    strategy = CompressedStrategy(
        FedAvg(fraction_train=0.5, fraction_evaluate=0.5, min_available_nodes=2),
        codec="eden",
        bits=1,
        seed=4,
        downlink={"codec": "eden", "bits": 2, "mode": "delta"},
    )
    sender = strategy._sender
    history: dict[int, np.ndarray] = {}
    update = sender.broadcaster.update

    def recording_update(target):
        v = update(target)
        history[v] = sender.broadcaster.model.copy()
        return v

    sender.broadcaster.update = recording_update
    result = _train(strategy, grid, rounds=6)
    held = _held_models(grid, sender)
    assert len(held) >= 4
    for node, (version, model) in held.items():
        np.testing.assert_array_equal(model, history[version], err_msg=str(node))
        assert checksum(model) == sender.broadcaster.checksums[version]
    # nodes that missed rounds caught up; the wiped ones cost one failed reply each
    lost = sum(
        result.train_metrics_clientapp[r][METRIC_FAILED_PREFIX + "client-mod"]
        for r in result.train_metrics_clientapp
    )
    assert 1 <= lost <= 2  # node 103 was wiped before a round that sampled it
    assert all(
        result.train_metrics_clientapp[r][METRIC_FAILED_REPLIES]
        == result.train_metrics_clientapp[r][METRIC_FAILED_PREFIX + "client-mod"]
        for r in result.train_metrics_clientapp
    )


def test_client_app_sees_plain_arrays_in_the_initial_dtypes() -> None:
    seen = []

    def spy_mod(msg, ctxt, call_next):
        seen.append(msg)
        return call_next(msg, ctxt)

    grid = RecordingGrid(make_client_app(after=[spy_mod]), 2)
    strategy = CompressedStrategy(
        FedAvg(), codec="eden", downlink={"codec": "eden", "bits": 8, "mode": "delta"}
    )
    _train(strategy, grid, rounds=2)
    dtypes = {k: a.dtype for k, a in ArrayRecord(make_model().state_dict()).items()}
    assert len(seen) == 8  # 2 nodes x 2 rounds x (train + evaluate)
    for msg in seen:  # the mod rebuilt the model before the ClientApp ran
        assert DOWNLINK_RECORD not in msg.content
        assert {k: a.dtype for k, a in msg.content["arrays"].items()} == dtypes


def test_downlink_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        CompressedStrategy(FedAvg(), downlink={"codec": "eden", "mode": "x"})
    with pytest.raises(TypeError, match="downlink"):
        CompressedStrategy(FedAvg(), downlink="eden")  # type: ignore[arg-type]
    # a lossless uplink sends deltas when the broadcast is lossy
    s = CompressedStrategy(FedAvg(), codec="fp32", downlink={"codec": "eden"})
    assert s.update == "delta"
