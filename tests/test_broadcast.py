"""fedrot.broadcast: versions, mirror with error feedback, cheaper-of-two catch-up."""

from __future__ import annotations

import numpy as np
import pytest

import fedrot
from fedrot.broadcast import (
    Broadcaster,
    DownlinkSpec,
    apply_corrections,
    checksum,
    decode_model,
)


def _walk(d: int, steps: int, seed: int = 0, step: float = 0.05) -> list[np.ndarray]:
    """A model trajectory: x_0 and small random moves."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d).astype(np.float32)
    out = [x]
    for _ in range(steps):
        x = (x + step * rng.standard_normal(d)).astype(np.float32)
        out.append(x)
    return out


def _spec(mode: str, **params) -> DownlinkSpec:
    return DownlinkSpec.parse({"codec": "eden", "bits": 2, "mode": mode, **params})


def test_same_model_is_the_same_version() -> None:
    b = Broadcaster(_spec("model"), run_seed=1)
    x = _walk(1000, 0)[0]
    assert b.update(x) == 0 and b.update(x.copy()) == 0
    assert b.update(x + 1) == 1


def test_model_mode_payload_decodes_to_the_mirror_bit_for_bit() -> None:
    spec = _spec("model", bits=8)
    b = Broadcaster(spec, run_seed=3)
    for v, x in enumerate(_walk(5000, 3)):
        assert b.update(x) == v
        got = decode_model(spec.codec, b.model_payload(), run_seed=3, version=v)
        np.testing.assert_array_equal(got, b.model)
        assert checksum(got) == b.checksums[v]
        err = np.sum((b.model - x) ** 2) / np.sum(x**2)
        assert err < 1e-3  # EDEN 8-bit


def test_delta_mode_mirror_tracks_the_model_without_drift() -> None:
    """Error feedback: the nodes start from the zero model, the gap x_v - m_v
    shrinks geometrically to about one step's compression error and stays there."""
    spec = _spec("delta", bits=1)
    b = Broadcaster(spec, run_seed=5)
    xs = _walk(20_000, 40, step=0.02)
    gaps = []
    for x in xs:
        b.update(x)
        gaps.append(float(np.sum((x - b.model) ** 2)))
    energy = float(np.sum(xs[0] ** 2))
    # version 0 is c_0 = encode(x_0): EDEN 1-bit's error (vNMSE ~0.57)
    assert 0.3 * energy < gaps[0] < 0.8 * energy
    assert all(gaps[i + 1] < gaps[i] for i in range(8))
    step2 = 0.02**2 * xs[0].size
    # from round 20 on the gap is one step's error and does not grow with the
    # number of rounds (it would, linearly, if each step's error were dropped)
    assert max(gaps[20:]) < 3 * step2
    assert max(gaps[30:]) < 2 * np.mean(gaps[20:25]) + step2


def test_catch_up_reproduces_the_mirror_exactly() -> None:
    spec = _spec("delta", bits=2)
    b = Broadcaster(spec, run_seed=7)
    xs = _walk(4096, 6)
    held = {}
    for x in xs:
        v = b.update(x)
        held[v] = b.model.copy()
    held[-1] = np.zeros_like(xs[0])  # no state: the zero model
    for start in range(-1, 6):
        steps = b.plan(None if start == -1 else start)
        assert steps is not None and [u for u, _ in steps] == list(range(start + 1, 7))
        got = apply_corrections(held[start], steps, spec.codec, run_seed=7)
        np.testing.assert_array_equal(got, b.model)


def test_plan_falls_back_to_the_full_model_when_cheaper_or_unknown() -> None:
    spec = _spec("delta", bits=8)  # corrections of ~1/4 of the full model each
    b = Broadcaster(spec, run_seed=9)
    for x in _walk(4096, 8):
        b.update(x)
    assert b.plan(None) is None  # no state: 9 corrections cost more than the model
    assert b.plan(b.version + 3) is None  # a version from the future
    assert b.plan(b.version) == []  # up to date: nothing to send
    assert b.plan(b.version - 2) is not None
    assert b.plan(0) is None  # 8 corrections cost more than the model
    full = fedrot.get_codec("fp32").decode(
        b.full_payload(),
        seed=fedrot.seeds.downlink_seed(9, b.version),
        client=2**64 - 1,
    )
    np.testing.assert_array_equal(full.numpy(), b.model)


def test_a_node_without_state_gets_the_first_correction_when_cheaper() -> None:
    b = Broadcaster(_spec("delta", bits=2), run_seed=4)
    x = _walk(4096, 0)[0]
    b.update(x)
    steps = b.plan(None)
    assert steps is not None and [u for u, _ in steps] == [0]
    assert len(steps[0][1]) < len(b.full_payload()) / 10
    rebuilt = apply_corrections(np.zeros_like(x), steps, b.spec.codec, run_seed=4)
    np.testing.assert_array_equal(rebuilt, b.model)


def test_old_corrections_are_pruned() -> None:
    b = Broadcaster(_spec("delta", bits=8), run_seed=9)
    for x in _walk(4096, 12):
        b.update(x)
    kept = sorted(b._corrections)
    total = sum(len(b._corrections[u]) for u in kept)
    assert total < len(b.full_payload()) and kept[-1] == b.version


def test_spec_validation() -> None:
    with pytest.raises(TypeError, match="downlink"):
        DownlinkSpec.parse("eden")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'codec'"):
        DownlinkSpec.parse({"bits": 8})
    with pytest.raises(ValueError, match="mode"):
        DownlinkSpec.parse({"codec": "eden", "mode": "both"})
    with pytest.raises(ValueError, match="Valid parameters"):
        DownlinkSpec.parse({"codec": "eden", "bitz": 8})
    assert DownlinkSpec.parse({"codec": "eden"}).mode == "model"


def test_model_size_change_within_a_run_is_refused() -> None:
    b = Broadcaster(_spec("delta"), run_seed=1)
    b.update(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="changed size"):
        b.update(np.zeros(11, np.float32))
