"""CompressedStrategy with hand-built Messages and a fake Grid (no Ray)."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
from flower_factories import (
    NODE_IDS,
    FakeGrid,
    as_numpy,
    make_arrays,
    make_context,
    perturb,
    set_task_identity,
    train_reply,
)
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
)

import fedrot
from fedrot.clients import compression_mod
from fedrot.constants import (
    KEY_CODEC,
    KEY_RUN_SEED,
    METRIC_DOWNLINK_BYTES,
    METRIC_DOWNLINK_PAYLOAD_BYTES,
    METRIC_FAILED_PREFIX,
    METRIC_FAILED_REPLIES,
    METRIC_UPLINK_BYTES,
    METRIC_UPLINK_PAYLOAD_BYTES,
    METRIC_UPLINK_REQUESTS,
    PAYLOAD_ARRAY_KEY,
)
from fedrot.model_spec import ModelSpec
from fedrot.strategies import CompressedStrategy, instruction_bytes, reply_bytes

WEIGHTS = {NODE_IDS[0]: 10.0, NODE_IDS[1]: 30.0, NODE_IDS[2]: 20.0}


@pytest.fixture(autouse=True)
def _identity() -> None:
    set_task_identity()
    random.seed(0)


def _locals(global_arrays: ArrayRecord, step: float = 0.1) -> dict[int, ArrayRecord]:
    return {
        node: perturb(global_arrays, seed=i + 1, step=step)
        for i, node in enumerate(NODE_IDS)
    }


def _round(strategy, global_arrays, local, *, server_round=1, mod=True, config=None):
    """configure_train -> (mod + ClientApp) per node -> replies sorted by node id."""
    config = ConfigRecord({"lr": 0.1}) if config is None else config
    msgs = sorted(
        strategy.configure_train(server_round, global_arrays, config, FakeGrid()),
        key=lambda m: m.metadata.dst_node_id,
    )
    replies = []
    for msg in msgs:
        node = msg.metadata.dst_node_id

        def call_next(m, ctxt, node=node):
            return train_reply(
                m, local[node], WEIGHTS[node], train_loss=float(node % 7)
            )

        if mod:
            replies.append(compression_mod(msg, make_context(node), call_next))
        else:
            replies.append(call_next(msg, None))
    return replies


FLOAT_KEYS = ("fc.weight", "fc.bias", "head.weight")


def _flat_floats(record: ArrayRecord) -> np.ndarray:
    return np.concatenate(
        [record[k].numpy().astype(np.float64).ravel() for k in FLOAT_KEYS]
    )


# --------------------------------------------------------------- exact fp32 path
INNER = {
    "fedavg": lambda: FedAvg(),
    "fedprox": lambda: FedProx(proximal_mu=0.1),
    "fedadam": lambda: FedAdam(eta=0.1),
    "fedyogi": lambda: FedYogi(),
    "fedmedian": lambda: FedMedian(),
    "fedtrimmedavg": lambda: FedTrimmedAvg(beta=0.2),
    "krum": lambda: Krum(num_malicious_nodes=0),
    "dp-client": lambda: DifferentialPrivacyClientSideFixedClipping(
        FedAvg(), noise_multiplier=0.0, clipping_norm=100.0, num_sampled_clients=3
    ),
    "dp-server": lambda: DifferentialPrivacyServerSideFixedClipping(
        FedAvg(), noise_multiplier=0.0, clipping_norm=0.5, num_sampled_clients=3
    ),
}


@pytest.mark.parametrize("name", sorted(INNER))
def test_fp32_path_is_bit_identical_to_bare_strategy(name: str) -> None:
    """Two rounds (stateful FedOpt / DP included): aggregates equal with atol = 0."""
    bare, wrapped = INNER[name](), CompressedStrategy(INNER[name](), codec="fp32")
    arrays_bare = arrays_wrapped = make_arrays(0)
    spec = ModelSpec.of(arrays_bare)
    for rnd in (1, 2, 3):
        # fresh local records per run: FedMedian pops arrays out of the replies
        local = _locals(arrays_bare, step=0.05 * rnd)
        out_bare, metrics_bare = bare.aggregate_train(
            rnd, _round(bare, arrays_bare, local, server_round=rnd, mod=False)
        )
        local = _locals(arrays_bare, step=0.05 * rnd)
        out_wrapped, metrics = wrapped.aggregate_train(
            rnd, _round(wrapped, arrays_wrapped, local, server_round=rnd)
        )
        assert list(out_wrapped.keys()) == list(out_bare.keys())
        # the wrapper keeps the model's dtypes (the bare strategy drifts to float64)
        for key, want in as_numpy(spec.cast(out_bare)).items():
            got = out_wrapped[key].numpy()
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(
                got, want, err_msg=f"{name} round {rnd} {key}"
            )
        for key, value in (metrics_bare or {}).items():
            assert metrics[key] == value
        assert metrics[METRIC_FAILED_REPLIES] == 0
        # the bare strategy continues from the same (cast) model as the wrapper
        arrays_bare, arrays_wrapped = spec.cast(out_bare), out_wrapped


# ------------------------------------------------------------ lossy codecs
def _true_mean_delta(global_arrays, local):
    total = sum(WEIGHTS.values())
    g = _flat_floats(global_arrays)
    return sum(WEIGHTS[n] / total * (_flat_floats(local[n]) - g) for n in local), g


@pytest.mark.parametrize(
    ("codec", "params"),
    [
        ("eden", {"bits": 1}),
        ("eden", {"bits": 2}),
        ("drive", {}),
        ("quic-fl", {"bits": 2}),
    ],
)
@pytest.mark.parametrize("fast_path", [None, False])
def test_lossy_aggregate_within_expected_error(codec, params, fast_path) -> None:
    """Error <= 1.5 sum_i w_i^2 vNMSE ||delta_i||^2 (unbiased, independent clients)."""
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    strategy = CompressedStrategy(
        FedAvg(), codec=codec, seed=3, fast_path=fast_path, **params
    )
    assert strategy.fast_path is (fast_path is None)
    out, _ = strategy.aggregate_train(1, _round(strategy, global_arrays, local))
    mean, g = _true_mean_delta(global_arrays, local)
    err = float(np.sum((_flat_floats(out) - g - mean) ** 2))
    vnmse = strategy.codec.info(mean.size).expected_vnmse
    total = sum(WEIGHTS.values())
    expected = sum(
        (WEIGHTS[n] / total) ** 2
        * vnmse
        * float(np.sum((_flat_floats(local[n]) - g) ** 2))
        for n in local
    )
    assert 0 < err <= 1.5 * expected, (err, expected)
    # the int64 counter is averaged by FedAvg as without compression
    assert out["bn.num_batches_tracked"].numpy() == pytest.approx(1.0, abs=1e-9)


def test_fast_path_equals_per_client_decoding() -> None:
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    outs = []
    for fast in (True, False):
        strategy = CompressedStrategy(FedAvg(), codec="quic-fl", seed=9, fast_path=fast)
        outs.append(
            strategy.aggregate_train(1, _round(strategy, global_arrays, local))[0]
        )
    for key in ("fc.weight", "fc.bias"):
        np.testing.assert_allclose(
            outs[0][key].numpy(), outs[1][key].numpy(), rtol=0, atol=1e-5
        )
    # float16 arrays: per-client rounding to float16 before averaging vs once after
    np.testing.assert_allclose(
        outs[0]["head.weight"].numpy(),
        outs[1]["head.weight"].numpy(),
        rtol=0,
        atol=2e-3,
    )


@pytest.mark.parametrize(
    "name", ["fedavg", "fedprox", "fedadam", "fedmedian", "dp-client", "dp-server"]
)
def test_wraps_inner_strategies_with_a_lossy_codec(name: str) -> None:
    """EDEN 4-bit around each inner strategy stays close to the bare strategy."""
    global_arrays = make_arrays(0)
    bare, wrapped = (
        INNER[name](),
        CompressedStrategy(INNER[name](), codec="eden", bits=4, seed=1),
    )
    want, _ = bare.aggregate_train(
        1, _round(bare, global_arrays, _locals(global_arrays), mod=False)
    )
    got, metrics = wrapped.aggregate_train(
        1, _round(wrapped, global_arrays, _locals(global_arrays))
    )
    step = _flat_floats(want) - _flat_floats(global_arrays)
    err = _flat_floats(got) - _flat_floats(want)
    assert np.sum(err**2) <= 0.05 * np.sum(step**2), (
        name
    )  # EDEN-4: vNMSE ~ 0.009 per client
    assert metrics[METRIC_FAILED_REPLIES] == 0


# ------------------------------------------------------------------ robustness
def _corrupt(reply: Message, flip_at: int = 40) -> Message:
    key, record = next(iter(reply.content.array_records.items()))
    payload = record[PAYLOAD_ARRAY_KEY]
    data = bytearray(payload.data)
    data[flip_at] ^= 0xFF
    bad = ArrayRecord(dict(record.items()))
    bad[PAYLOAD_ARRAY_KEY] = Array(
        dtype=payload.dtype, shape=payload.shape, stype=payload.stype, data=bytes(data)
    )
    content = RecordDict(dict(reply.content.items()))
    content[key] = bad
    reply.content = content
    return reply


@pytest.mark.parametrize(("codec", "params"), [("fp32", {}), ("eden", {"bits": 2})])
def test_corrupt_reply_is_a_failure_and_the_round_uses_the_others(
    codec, params, caplog
) -> None:
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    strategy = CompressedStrategy(FedAvg(), codec=codec, seed=5, **params)
    replies = _round(strategy, global_arrays, local)
    bad_node = replies[1].metadata.src_node_id
    replies[1] = _corrupt(replies[1])
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        out, metrics = strategy.aggregate_train(1, replies)
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert metrics[METRIC_FAILED_REPLIES] == 1
    assert metrics[METRIC_FAILED_PREFIX + "corrupt"] == 1
    assert any(
        str(bad_node) in r.getMessage() and "corrupt" in r.getMessage()
        for r in caplog.records
    )
    # same result as a round that only had the two good replies
    ref = CompressedStrategy(FedAvg(), codec=codec, seed=5, **params)
    good = [
        r
        for r in _round(ref, global_arrays, local)
        if r.metadata.src_node_id != bad_node
    ]
    want, want_metrics = ref.aggregate_train(1, good)
    for key, arr in as_numpy(want).items():
        np.testing.assert_array_equal(out[key].numpy(), arr)
    assert metrics["train_loss"] == want_metrics["train_loss"]


def test_mismatched_codec_reply_is_a_failure() -> None:
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    drive = CompressedStrategy(FedAvg(), codec="drive", seed=5)
    eden = CompressedStrategy(FedAvg(), codec="eden", bits=1, seed=5)
    replies = _round(eden, global_arrays, local)
    replies[0] = _round(drive, global_arrays, local)[0]  # a client on another codec
    _, metrics = eden.aggregate_train(1, replies)
    assert metrics[METRIC_FAILED_REPLIES] == 1


def test_client_failures_pass_through_and_are_counted_by_reason() -> None:
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    strategy = CompressedStrategy(FedAvg(), codec="fp32")
    replies = _round(strategy, global_arrays, local)
    from flwr.app import Error

    replies[2] = Message(
        Error(code=2, reason="boom"), reply_to=_round(strategy, global_arrays, local)[2]
    )
    replies[2].metadata.__dict__["_src_node_id"] = NODE_IDS[2]
    seen = []

    class Spy(FedAvg):
        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            seen.extend(replies)
            return super().aggregate_train(server_round, replies)

    spy = CompressedStrategy(Spy(), codec="fp32")
    spy._spec, spy._mask = strategy._spec, strategy._mask
    spy._global, spy._layout, spy._round = strategy._global, strategy._layout, 1
    _, metrics = spy.aggregate_train(1, replies)
    assert sum(m.has_error() for m in seen) == 1 and len(seen) == 3
    assert metrics[METRIC_FAILED_REPLIES] == 1
    assert metrics[METRIC_FAILED_PREFIX + "client-exception"] == 1
    assert metrics[METRIC_FAILED_PREFIX + "corrupt"] == 0


def test_inputs_are_not_mutated() -> None:
    global_arrays = make_arrays(0)
    before = as_numpy(global_arrays)
    config = ConfigRecord({"lr": 0.1})
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=2)
    replies = _round(strategy, global_arrays, _locals(global_arrays), config=config)
    assert dict(config) == {"lr": 0.1}
    snapshot = [dict(r.content.array_records) for r in replies]
    strategy.aggregate_train(1, replies)
    assert [dict(r.content.array_records) for r in replies] == snapshot
    for key, arr in before.items():
        np.testing.assert_array_equal(global_arrays[key].numpy(), arr)


def test_config_carries_codec_settings_and_the_run_seed() -> None:
    strategy = CompressedStrategy(
        FedAvg(), codec="eden", bits=1, rotations="auto", seed=42
    )
    msgs = list(strategy.configure_train(3, make_arrays(0), ConfigRecord(), FakeGrid()))
    config = msgs[0].content["config"]
    assert config[KEY_CODEC] == "eden" and config[KEY_RUN_SEED] == 42
    assert config["server-round"] == 3 and config["fedrot.server-round"] == 3
    assert (
        fedrot.get_codec(
            "eden", **__import__("json").loads(config["fedrot.codec-params"])
        ).params()
        == strategy.codec.params()
    )


# ------------------------------------------------------------- misconfiguration
def test_wrapper_without_mod_raises_with_the_fix() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden")
    replies = _round(strategy, global_arrays, _locals(global_arrays), mod=False)
    with pytest.raises(RuntimeError, match="compression_mod"):
        strategy.aggregate_train(1, replies)


def test_one_uncompressed_reply_is_a_failure() -> None:
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    strategy = CompressedStrategy(FedAvg(), codec="eden")
    replies = _round(strategy, global_arrays, local)
    replies[0] = _round(strategy, global_arrays, local, mod=False)[0]
    out, metrics = strategy.aggregate_train(1, replies)
    assert out is not None and metrics[METRIC_FAILED_REPLIES] == 1


def test_aggregate_without_configure_raises() -> None:
    with pytest.raises(RuntimeError, match="configure_train"):
        CompressedStrategy(FedAvg()).aggregate_train(1, [])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"codec": "zip"}, ValueError, "Valid codecs"),
        ({"codec": "eden", "bitz": 2}, ValueError, "Valid parameters"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**63}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"codec": "fp32", "error_feedback": True}, ValueError, "lossless"),
        ({"codec": "fp32", "fast_path": True}, ValueError, "lossless"),
    ],
)
def test_constructor_validates(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        CompressedStrategy(FedAvg(), **kwargs)


def test_constructor_rejects_fast_path_for_non_mean_and_non_strategies() -> None:
    with pytest.raises(ValueError, match="FedMedian"):
        CompressedStrategy(FedMedian(), fast_path=True)
    assert CompressedStrategy(FedMedian()).fast_path is False
    with pytest.raises(TypeError, match="Strategy"):
        CompressedStrategy(object())  # type: ignore[arg-type]


def test_summary_logs_settings_then_delegates(caplog) -> None:
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="flwr")
    try:
        CompressedStrategy(FedAvg(), codec="eden", bits=1, seed=7).summary()
    finally:
        flwr_logger.removeHandler(caplog.handler)
    text = caplog.text
    assert "get_codec('eden', bits=1" in text and "Run seed: 7" in text
    assert "Minimum available nodes" in text  # FedAvg's own summary follows


# ------------------------------------------------------------------ byte metrics
def test_byte_metrics_equal_the_serialized_messages() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)
    msgs = list(strategy.configure_train(1, global_arrays, ConfigRecord(), FakeGrid()))
    down = [instruction_bytes(m) for m in msgs]
    replies = []
    for m in msgs:
        node = m.metadata.dst_node_id
        replies.append(
            compression_mod(
                m,
                make_context(node),
                lambda x, c, n=node: train_reply(
                    x, perturb(global_arrays, 1), WEIGHTS[n]
                ),
            )
        )
    up = [reply_bytes(r) for r in replies]
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics[METRIC_UPLINK_BYTES] == sum(u.message_bytes for u in up)
    assert metrics[METRIC_UPLINK_REQUESTS] == sum(u.requests for u in up)
    assert metrics[METRIC_DOWNLINK_BYTES] == sum(d.message_bytes for d in down)
    sent = [a for r in replies for a in r.content["arrays"].values()]
    assert len(sent) == 2 * len(replies)  # the payload + the raw int64 counter
    assert metrics[METRIC_UPLINK_PAYLOAD_BYTES] == sum(len(a.data) for a in sent)
    assert metrics[METRIC_DOWNLINK_PAYLOAD_BYTES] == 3 * sum(
        len(a.data) for a in global_arrays.values()
    )
    # the protobuf bytes exceed the payload by Flower's per-object framing only
    assert (
        0
        < metrics[METRIC_UPLINK_BYTES] - metrics[METRIC_UPLINK_PAYLOAD_BYTES]
        < 3 * 3000
    )


def test_evaluate_phase_records_bytes() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden")
    msgs = list(
        strategy.configure_evaluate(1, global_arrays, ConfigRecord(), FakeGrid())
    )
    replies = [
        Message(
            RecordDict({"metrics": MetricRecord({"num-examples": 5, "acc": 0.5})}),
            reply_to=m,
        )
        for m in msgs
    ]
    metrics = strategy.aggregate_evaluate(1, replies)
    assert metrics["acc"] == pytest.approx(0.5)
    assert metrics[METRIC_DOWNLINK_BYTES] == sum(
        instruction_bytes(m).message_bytes for m in msgs
    )
    assert metrics[METRIC_UPLINK_BYTES] == sum(
        reply_bytes(r).message_bytes for r in replies
    )


def test_eden_1bit_uplink_is_25x_below_fp32_for_1e5_parameters() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((400, 256)).astype(np.float32)
    global_arrays = ArrayRecord({"w": Array(w)})
    local = {
        n: ArrayRecord(
            {"w": Array((w + 0.01 * rng.standard_normal(w.shape)).astype(np.float32))}
        )
        for n in NODE_IDS
    }
    up = {}
    for codec, params in (("fp32", {}), ("eden", {"bits": 1})):
        strategy = CompressedStrategy(FedAvg(), codec=codec, **params)
        up[codec] = strategy.aggregate_train(1, _round(strategy, global_arrays, local))[
            1
        ][METRIC_UPLINK_BYTES]
    assert up["fp32"] / up["eden"] >= 25, up


def test_reply_missing_a_raw_array_is_a_failure_before_the_fast_path() -> None:
    global_arrays = make_arrays(0)
    local = _locals(global_arrays)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=2, seed=5)
    replies = _round(strategy, global_arrays, local)
    record = replies[0].content["arrays"]
    content = RecordDict(dict(replies[0].content.items()))
    content["arrays"] = ArrayRecord(
        {k: a for k, a in record.items() if k != "bn.num_batches_tracked"}
    )
    replies[0].content = content
    out, metrics = strategy.aggregate_train(1, replies)
    assert metrics[METRIC_FAILED_REPLIES] == 1
    ref = CompressedStrategy(FedAvg(), codec="eden", bits=2, seed=5)
    good = _round(ref, global_arrays, _locals(global_arrays))[1:]
    want, _ = ref.aggregate_train(1, good)
    np.testing.assert_allclose(
        out["fc.weight"].numpy(), want["fc.weight"].numpy(), rtol=0, atol=1e-6
    )
