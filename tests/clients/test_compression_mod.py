"""compression_mod with hand-built Messages (no Ray, no server)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from flower_factories import (
    as_numpy,
    instruction,
    make_arrays,
    make_context,
    perturb,
    set_task_identity,
    train_reply,
)
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

import fedrot
from fedrot.clients import CompressionMod, compression_mod
from fedrot.constants import (
    KEY_CODEC,
    KEY_CODEC_PARAMS,
    KEY_COMPRESS_MASK,
    KEY_ERROR_FEEDBACK,
    KEY_RUN_SEED,
    KEY_SERVER_ROUND,
    KEY_UPDATE,
    MOD_ERROR_PREFIX,
    PAYLOAD_ARRAY_KEY,
    STATE_RESIDUAL,
    UPDATE_DELTA,
    UPDATE_WEIGHTS,
)
from fedrot.model_spec import DEFAULT_EXACT_KEYS, mask_to_hex, select_compressed

NODE = 2**64 - 3  # node ids are unsigned 64-bit


@pytest.fixture(autouse=True)
def _identity() -> None:
    set_task_identity()


def _config(
    codec: str = "eden",
    *,
    update: str = UPDATE_DELTA,
    feedback: bool = False,
    run_seed: int = 7,
    server_round: int = 1,
    buffer: bool = True,
    **params,
) -> ConfigRecord:
    """The train config a CompressedStrategy sends for ``make_arrays(_, buffer)``."""
    c = fedrot.get_codec(codec, **params)
    mask = select_compressed(
        make_arrays(0, buffer=buffer),
        exact_keys=DEFAULT_EXACT_KEYS,
        compress_keys=None,
        lossless=c.lossless,
    )
    return ConfigRecord(
        {
            "lr": 0.1,
            KEY_CODEC: codec,
            KEY_CODEC_PARAMS: json.dumps(c.params()),
            KEY_RUN_SEED: run_seed,
            KEY_SERVER_ROUND: server_round,
            KEY_UPDATE: update,
            KEY_ERROR_FEEDBACK: feedback,
            KEY_COMPRESS_MASK: mask_to_hex(mask),
        }
    )


def _run(
    config,
    global_arrays,
    local,
    *,
    ctxt=None,
    mod=compression_mod,
    message_type=MessageType.TRAIN,
):
    msg = instruction(NODE, global_arrays, config, message_type)
    calls = []

    def call_next(m, c):
        calls.append(m)
        return train_reply(m, local, 12.0, train_loss=0.5)

    out = mod(msg, ctxt or make_context(NODE), call_next)
    return out, calls


def _payload(out: Message) -> bytes:
    record = out.content["arrays"]
    return record[PAYLOAD_ARRAY_KEY].data


def test_train_reply_becomes_one_payload_array_plus_raw_buffers() -> None:
    global_arrays = make_arrays(0)
    local = perturb(global_arrays, 1)
    out, calls = _run(_config("eden", bits=2), global_arrays, local)
    assert len(calls) == 1 and not out.has_error()
    record = out.content["arrays"]
    assert list(record.keys()) == [PAYLOAD_ARRAY_KEY, "bn.num_batches_tracked"]
    payload = record[PAYLOAD_ARRAY_KEY]
    assert payload.stype == "fedrot/eden/v1" and payload.dtype == "uint8"
    assert payload.shape == (len(payload.data),) and isinstance(payload.data, bytes)
    assert payload.data[:2] == b"FR"  # fedrot's wire envelope, real bytes
    np.testing.assert_array_equal(
        record["bn.num_batches_tracked"].numpy(),
        local["bn.num_batches_tracked"].numpy(),
    )
    assert out.content["metrics"]["num-examples"] == 12.0  # metrics untouched
    # the server decodes with (round seed, node id) and recovers the delta
    d = fedrot.get_codec("eden", bits=2).decode(
        payload.data, seed=fedrot.round_seed(7, 1), client=NODE
    )
    keys = ("fc.weight", "fc.bias", "head.weight")
    delta = np.concatenate(
        [
            (
                local[k].numpy().astype(np.float32)
                - global_arrays[k].numpy().astype(np.float32)
            ).ravel()
            for k in keys
        ]
    )
    err = float(np.sum((d.numpy() - delta) ** 2) / np.sum(delta**2))
    assert err < 3 * fedrot.get_codec("eden", bits=2).info(delta.size).expected_vnmse


def test_fp32_weights_mode_sends_the_exact_local_floats() -> None:
    global_arrays = make_arrays(0)
    local = perturb(global_arrays, 1)
    out, _ = _run(_config("fp32", update=UPDATE_WEIGHTS), global_arrays, local)
    vec = (
        fedrot.get_codec("fp32")
        .decode(_payload(out), seed=fedrot.round_seed(7, 1), client=NODE)
        .numpy()
    )
    want = np.concatenate(
        [
            local[k].numpy().astype(np.float32).ravel()
            for k in ("fc.weight", "fc.bias", "head.weight")
        ]
    )
    np.testing.assert_array_equal(vec, want)


def test_seeds_depend_on_round_and_node() -> None:
    global_arrays = make_arrays(0)
    local = perturb(global_arrays, 1)
    blobs = {
        (rnd, seed): _payload(
            _run(
                _config("eden", bits=1, run_seed=seed, server_round=rnd),
                global_arrays,
                local,
            )[0]
        )
        for rnd, seed in ((1, 7), (2, 7), (1, 8))
    }
    assert len(set(blobs.values())) == 3
    # same settings -> same bytes (nothing random outside the seeds)
    again = _payload(
        _run(_config("eden", bits=1, run_seed=7, server_round=1), global_arrays, local)[
            0
        ]
    )
    assert again == blobs[(1, 7)]


@pytest.mark.parametrize(
    "message_type", [MessageType.EVALUATE, MessageType.QUERY, "evaluate.custom"]
)
def test_other_messages_pass_through_untouched(message_type) -> None:
    global_arrays = make_arrays(0)
    local = perturb(global_arrays, 1)
    out, calls = _run(
        ConfigRecord({"lr": 0.1}), global_arrays, local, message_type=message_type
    )
    assert len(calls) == 1
    assert list(out.content["arrays"].keys()) == list(local.keys())


def test_mod_without_wrapper_returns_an_error_with_the_fix() -> None:
    global_arrays = make_arrays(0)
    out, calls = _run(
        ConfigRecord({"lr": 0.1}), global_arrays, perturb(global_arrays, 1)
    )
    assert calls == [] and out.has_error()
    assert out.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "CompressedStrategy" in out.error.reason


def test_unknown_codec_returns_an_error_listing_the_codecs() -> None:
    global_arrays = make_arrays(0)
    config = _config("eden")
    config[KEY_CODEC] = "zstd-9000"
    out, calls = _run(config, global_arrays, perturb(global_arrays, 1))
    assert calls == [] and out.has_error()
    assert "zstd-9000" in out.error.reason and "eden" in out.error.reason


def test_missing_keys_and_bad_params_return_errors() -> None:
    global_arrays = make_arrays(0)
    config = _config("eden")
    del config[KEY_RUN_SEED]
    out, _ = _run(config, global_arrays, perturb(global_arrays, 1))
    assert out.has_error() and KEY_RUN_SEED in out.error.reason
    config = _config("eden")
    config[KEY_CODEC_PARAMS] = json.dumps({"bits": 99})
    out, _ = _run(config, global_arrays, perturb(global_arrays, 1))
    assert out.has_error() and "bits" in out.error.reason


def test_nan_update_is_rejected_not_encoded() -> None:
    global_arrays = make_arrays(0)
    local = perturb(global_arrays, 1)
    w = local["fc.weight"].numpy().copy()
    w[3, 4] = np.nan
    from flwr.app import Array

    local["fc.weight"] = Array(w)
    out, calls = _run(_config("eden"), global_arrays, local)
    assert len(calls) == 1 and out.has_error()
    assert "NaN" in out.error.reason and "learning rate" in out.error.reason


def test_client_app_errors_pass_through() -> None:
    global_arrays = make_arrays(0)
    msg = instruction(NODE, global_arrays, _config("eden"))
    failure = Message(
        Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="oom"), reply_to=msg
    )
    out = compression_mod(msg, make_context(NODE), lambda m, c: failure)
    assert out is failure


def test_reply_with_other_keys_returns_an_error() -> None:
    global_arrays = make_arrays(0)
    local = ArrayRecord(
        {k: a for k, a in perturb(global_arrays, 1).items() if k != "fc.bias"}
    )
    out, _ = _run(_config("eden"), global_arrays, local)
    assert out.has_error() and "fc.bias" in out.error.reason


def test_reply_with_two_array_records_returns_an_error() -> None:
    global_arrays = make_arrays(0)
    msg = instruction(NODE, global_arrays, _config("eden"))

    def two(m, c):
        return Message(RecordDict({"a": global_arrays, "b": global_arrays}), reply_to=m)

    out = compression_mod(msg, make_context(NODE), two)
    assert out.has_error() and "exactly one ArrayRecord" in out.error.reason


def test_error_feedback_keeps_the_residual_and_telescopes() -> None:
    """sum_t decoded_t + residual_T == sum_t delta_t (biased top-k)."""
    codec = fedrot.get_codec("topk", fraction=0.05)
    ctxt = make_context(NODE)
    global_arrays = make_arrays(0, buffer=False)
    decoded_sum = delta_sum = 0.0
    keys = ("fc.weight", "fc.bias", "head.weight")
    for rnd in (1, 2, 3):
        local = perturb(global_arrays, rnd)
        config = _config(
            "topk", feedback=True, server_round=rnd, fraction=0.05, buffer=False
        )
        out, _ = _run(config, global_arrays, local, ctxt=ctxt)
        assert not out.has_error()
        decoded_sum = decoded_sum + codec.decode(
            _payload(out), seed=fedrot.round_seed(7, rnd), client=NODE
        ).numpy().astype(np.float64)
        delta_sum = delta_sum + np.concatenate(
            [
                (
                    local[k].numpy().astype(np.float32)
                    - global_arrays[k].numpy().astype(np.float32)
                ).ravel()
                for k in keys
            ]
        ).astype(np.float64)
        residual = ctxt.state[STATE_RESIDUAL]["residual"].numpy()
        np.testing.assert_allclose(decoded_sum + residual, delta_sum, atol=1e-5)
    assert np.abs(residual).sum() > 0


def test_error_feedback_is_off_without_the_flag() -> None:
    ctxt = make_context(NODE)
    global_arrays = make_arrays(0)
    _run(
        _config("topk", fraction=0.05),
        global_arrays,
        perturb(global_arrays, 1),
        ctxt=ctxt,
    )
    assert STATE_RESIDUAL not in ctxt.state


def test_class_form_validates_device() -> None:
    with pytest.raises(ValueError, match="device"):
        CompressionMod(device="tpu-ish")
    with pytest.raises(TypeError, match="device"):
        CompressionMod(device=0)  # type: ignore[arg-type]
    global_arrays = make_arrays(0)
    out, _ = _run(
        _config("eden"),
        global_arrays,
        perturb(global_arrays, 1),
        mod=CompressionMod(device="cpu"),
    )
    assert not out.has_error()


def test_global_arrays_are_not_mutated() -> None:
    global_arrays = make_arrays(0)
    before = as_numpy(global_arrays)
    _run(_config("eden"), global_arrays, perturb(global_arrays, 1))
    for key, arr in before.items():
        np.testing.assert_array_equal(global_arrays[key].numpy(), arr)


def test_residual_made_for_other_settings_is_dropped_not_applied() -> None:
    """A node whose stored residual belongs to another codec setting (a changed run,
    a restart with stale state) starts from zero instead of applying it."""
    global_arrays = make_arrays(0, buffer=False)
    local = perturb(global_arrays, 2)
    stale = make_context(NODE)
    _run(
        _config("topk", feedback=True, fraction=0.05, buffer=False),
        global_arrays,
        perturb(global_arrays, 1),
        ctxt=stale,
    )
    assert np.abs(stale.state[STATE_RESIDUAL]["residual"].numpy()).sum() > 0
    config = _config("topk", feedback=True, fraction=0.1, buffer=False)
    with_stale, _ = _run(config, global_arrays, local, ctxt=stale)
    fresh, _ = _run(config, global_arrays, local, ctxt=make_context(NODE))
    assert _payload(with_stale) == _payload(fresh)


def test_mod_errors_start_with_the_fedrot_prefix() -> None:
    global_arrays = make_arrays(0)
    out, _ = _run(ConfigRecord({"lr": 0.1}), global_arrays, global_arrays)
    assert out.error.reason.startswith(MOD_ERROR_PREFIX)


def test_exact_arrays_travel_as_returned_and_only_flagged_ones_are_encoded() -> None:
    global_arrays = make_arrays(0)
    local = perturb(global_arrays, 1)
    config = _config("eden", bits=2)
    # flag only fc.weight for compression: fc.bias and head.weight travel exactly
    config[KEY_COMPRESS_MASK] = mask_to_hex([True, False, False, False])
    out, _ = _run(config, global_arrays, local)
    record = out.content["arrays"]
    assert list(record.keys()) == [
        PAYLOAD_ARRAY_KEY,
        "fc.bias",
        "head.weight",
        "bn.num_batches_tracked",
    ]
    for key in ("fc.bias", "head.weight"):
        assert record[key].data == local[key].data
    decoded = fedrot.get_codec("eden", bits=2).decode(
        _payload(out), seed=fedrot.round_seed(7, 1), client=NODE
    )
    assert decoded.numel() == local["fc.weight"].numpy().size


def test_a_mask_that_does_not_fit_the_model_is_refused() -> None:
    global_arrays = make_arrays(0)
    config = _config("eden")
    config[KEY_COMPRESS_MASK] = mask_to_hex([True] * 9)
    out, calls = _run(config, global_arrays, global_arrays)
    assert calls == [] and "compress mask" in out.error.reason


def test_importing_the_client_side_does_not_load_the_server_wrapper() -> None:
    code = (
        "import sys, fedrot.clients; "
        "assert 'fedrot.strategies' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
