"""Failures that cannot hide: every lost reply counted by reason, lost rounds raise."""

from __future__ import annotations

import logging
import resource

import numpy as np
import pytest
from flower_factories import (
    NODE_IDS,
    FakeGrid,
    LocalGrid,
    make_arrays,
    make_context,
    perturb,
    set_task_identity,
    train_reply,
)
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
)
from real_model import make_client_app, make_model

import fedrot
from fedrot import wire
from fedrot.clients import compression_mod
from fedrot.constants import (
    KEY_COMPRESS_MASK,
    METRIC_FAILED_PREFIX,
    METRIC_FAILED_REPLIES,
    MOD_ERROR_PREFIX,
    PAYLOAD_ARRAY_KEY,
)
from fedrot.model_spec import hex_to_mask
from fedrot.strategies import CompressedStrategy


@pytest.fixture(autouse=True)
def _identity() -> None:
    set_task_identity()


def _replies(strategy, global_arrays, *, mod=True, make_local=None):
    """One train round through the mod with hand-built client replies."""
    msgs = list(
        strategy.configure_train(
            1, global_arrays, ConfigRecord({"lr": 0.1}), FakeGrid()
        )
    )
    out = []
    for i, msg in enumerate(msgs):
        local = (make_local or (lambda a, i: perturb(a, seed=i + 1)))(global_arrays, i)

        def call_next(m, c, local=local, weight=10.0 + i):
            return train_reply(m, local, weight)

        node = msg.metadata.dst_node_id
        out.append(
            compression_mod(msg, make_context(node), call_next)
            if mod
            else call_next(msg, None)
        )
    return out


def _with_payload(reply: Message, blob: bytes) -> Message:
    record = reply.content["arrays"]
    new = ArrayRecord(dict(record.items()))
    old = record[PAYLOAD_ARRAY_KEY]
    new[PAYLOAD_ARRAY_KEY] = Array(
        dtype="uint8", shape=(len(blob),), stype=old.stype, data=blob
    )
    content = RecordDict(dict(reply.content.items()))
    content["arrays"] = new
    reply.content = content
    return reply


def _forge(blob: bytes, *, d: int | None = None, body: bytes | None = None) -> bytes:
    """A payload with rewritten d and/or body and a valid CRC (a hostile client)."""
    header, old_body = wire.parse(blob)
    return wire.build(
        codec_id=header.codec_id,
        rotations=header.rotations,
        chunk_log2=header.chunk_log2,
        d=header.d if d is None else d,
        params=header.params,
        body=[bytes(old_body) if body is None else body],
    )


# ------------------------------------------------------------------ counting
@pytest.mark.parametrize(
    ("codec", "params"), [("eden", {"bits": 0.5}), ("quic-fl", {"bits": 2})]
)
def test_forged_d_costs_one_reply_and_bounded_memory(codec, params) -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec=codec, seed=4, **params)
    replies = _replies(strategy, global_arrays)
    blob = replies[0].content["arrays"][PAYLOAD_ARRAY_KEY].data
    replies[0] = _with_payload(replies[0], _forge(blob, d=2**40))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, metrics = strategy.aggregate_train(1, replies)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert out is not None
    assert metrics[METRIC_FAILED_REPLIES] == 1
    assert metrics[METRIC_FAILED_PREFIX + "mismatch"] == 1
    assert grown_kib < 100 * 1024, f"peak RSS grew by {grown_kib} KiB"


def test_payload_with_a_garbled_body_is_corrupt_and_the_round_completes() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=2, seed=4)
    replies = _replies(strategy, global_arrays)
    blob = replies[2].content["arrays"][PAYLOAD_ARRAY_KEY].data
    replies[2] = _with_payload(replies[2], _forge(blob, body=b"\x01" * 7))
    out, metrics = strategy.aggregate_train(1, replies)
    assert out is not None
    assert metrics[METRIC_FAILED_PREFIX + "corrupt"] == 1
    assert metrics[METRIC_FAILED_REPLIES] == 1


def test_every_reason_is_reported_even_when_zero() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)
    _, metrics = strategy.aggregate_train(1, _replies(strategy, global_arrays))
    reasons = [k for k in metrics if k.startswith(METRIC_FAILED_PREFIX)]
    assert len(reasons) == len(fedrot.constants.FAILURE_REASONS)
    assert all(metrics[k] == 0 for k in reasons) and metrics[METRIC_FAILED_REPLIES] == 0


# --------------------------------------------------------- rounds lost to fedrot
def test_all_clients_refusing_to_encode_raises_with_their_reason() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)

    def diverged(arrays, i):
        local = perturb(arrays, seed=i + 1)
        w = local["fc.weight"].numpy().copy()
        w[0, 0] = np.inf
        local["fc.weight"] = Array(w)
        return local

    replies = _replies(strategy, global_arrays, make_local=diverged)
    assert all(r.error.reason.startswith(MOD_ERROR_PREFIX) for r in replies)
    with pytest.raises(RuntimeError, match="client-mod x3.*learning rate"):
        strategy.aggregate_train(1, replies)


def test_one_client_refusing_is_counted_not_raised() -> None:
    global_arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)

    def one_bad(arrays, i):
        local = perturb(arrays, seed=i + 1)
        if i == 1:
            w = local["fc.bias"].numpy().copy()
            w[0] = np.nan
            local["fc.bias"] = Array(w)
        return local

    out, metrics = strategy.aggregate_train(
        1, _replies(strategy, global_arrays, make_local=one_bad)
    )
    assert out is not None and metrics[METRIC_FAILED_PREFIX + "client-mod"] == 1


def test_client_exceptions_everywhere_do_not_raise_but_are_counted() -> None:
    """Not fedrot's failure: Flower's behaviour (no arrays this round) is kept."""
    grid = LocalGrid(lambda msg, ctxt: 1 / 0, 3)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)
    msgs = strategy.configure_train(1, make_arrays(0), ConfigRecord(), grid)
    out, metrics = strategy.aggregate_train(1, grid.send_and_receive(msgs))
    assert out is None
    assert metrics[METRIC_FAILED_PREFIX + "client-exception"] == 3


def test_wrapper_without_mod_raises_in_a_real_run() -> None:
    grid = LocalGrid(make_client_app(mod=False), 3)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)
    with pytest.raises(RuntimeError, match="no-payload x3.*compression_mod"):
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(make_model().state_dict()),
            num_rounds=2,
            train_config=ConfigRecord({"lr": 0.05}),
        )


def test_mod_without_wrapper_replies_with_the_fix() -> None:
    """No fedrot code runs on a bare server: each reply carries the fix, which
    Flower logs, and the bare strategy gets no arrays."""
    grid = LocalGrid(make_client_app(), 3)
    bare = FedAvg()
    msgs = bare.configure_train(
        1, ArrayRecord(make_model().state_dict()), ConfigRecord({"lr": 0.05}), grid
    )
    replies = grid.send_and_receive(msgs)
    assert all(r.has_error() for r in replies)
    assert all("CompressedStrategy" in r.error.reason for r in replies)
    assert bare.aggregate_train(1, replies)[0] is None


# ------------------------------------------------------------------- settings
def test_biased_codec_without_error_feedback_warns(caplog) -> None:
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        CompressedStrategy(FedAvg(), codec="topk", fraction=0.1)
        warned = caplog.text
        caplog.clear()
        CompressedStrategy(FedAvg(), codec="topk", fraction=0.1, error_feedback=True)
        CompressedStrategy(FedAvg(), codec="eden", bits=1)
        CompressedStrategy(FedAvg(), codec="fp16")
        quiet = caplog.text
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert "error_feedback=True" in warned
    assert "error_feedback" not in quiet


def test_nesting_a_compressed_strategy_is_refused() -> None:
    inner = CompressedStrategy(FedAvg(), codec="eden")
    with pytest.raises(ValueError, match="already contains a CompressedStrategy"):
        CompressedStrategy(inner)
    dp = DifferentialPrivacyServerSideFixedClipping(
        inner, noise_multiplier=0.0, clipping_norm=1.0, num_sampled_clients=2
    )
    with pytest.raises(ValueError, match="already contains"):
        CompressedStrategy(dp)


def _mask(strategy, arrays) -> dict[str, bool]:
    msg = next(iter(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid())))
    flags = hex_to_mask(msg.content["config"][KEY_COMPRESS_MASK], len(arrays))
    return dict(zip(arrays.keys(), flags, strict=True))


def test_running_statistics_and_counters_travel_exactly_by_default() -> None:
    arrays = ArrayRecord(make_model().state_dict())
    mask = _mask(CompressedStrategy(FedAvg(), codec="eden"), arrays)
    assert mask == {
        "fc.weight": True,
        "fc.bias": True,
        "bn.weight": True,
        "bn.bias": True,
        "bn.running_mean": False,
        "bn.running_var": False,
        "bn.num_batches_tracked": False,
        "head.weight": True,
        "head.bias": True,
        "offset": True,  # float64 is compressed by a lossy codec ...
    }
    lossless = _mask(CompressedStrategy(FedAvg(), codec="fp32"), arrays)
    assert lossless["offset"] is False  # ... and sent exactly by fp32


def test_exact_and_compress_key_patterns() -> None:
    arrays = ArrayRecord(make_model().state_dict())
    every = _mask(CompressedStrategy(FedAvg(), codec="eden", exact_keys=()), arrays)
    assert every["bn.running_var"] and not every["bn.num_batches_tracked"]
    only_fc = _mask(
        CompressedStrategy(FedAvg(), codec="eden", compress_keys=["fc.*"]), arrays
    )
    assert [k for k, v in only_fc.items() if v] == ["fc.weight", "fc.bias"]
    with pytest.raises(TypeError, match="exact_keys"):
        CompressedStrategy(FedAvg(), exact_keys="*running_var")


def test_mask_is_fixed_by_the_first_model_not_by_drifted_dtypes() -> None:
    """An aggregation that returns float64 counters does not change the layout."""
    arrays = make_arrays(0)
    strategy = CompressedStrategy(FedMedian(), codec="eden", bits=2)
    out, _ = strategy.aggregate_train(1, _replies(strategy, arrays))
    assert out["bn.num_batches_tracked"].dtype == "int64"
    assert out["head.weight"].dtype == "float16"
    drifted = ArrayRecord(
        {k: Array(a.numpy().astype(np.float64)) for k, a in out.items()}
    )
    msgs = list(strategy.configure_train(2, drifted, ConfigRecord(), FakeGrid()))
    sent = msgs[0].content["arrays"]
    assert {k: a.dtype for k, a in sent.items()} == {
        k: a.dtype for k, a in arrays.items()
    }
    assert _mask(strategy, arrays) == _mask(
        CompressedStrategy(FedMedian(), codec="eden"), arrays
    )
    assert len(NODE_IDS) == len(msgs)


def test_instructions_without_a_reply_are_counted() -> None:
    """A phase that ends on Flower's timeout returns fewer replies than nodes."""
    arrays = make_arrays(0)
    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1)
    replies = _replies(strategy, arrays)
    out, metrics = strategy.aggregate_train(1, replies[:2])
    assert out is not None
    assert metrics[METRIC_FAILED_PREFIX + "no-reply"] == 1
    assert metrics[METRIC_FAILED_REPLIES] == 1
