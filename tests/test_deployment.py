"""End-to-end on loopback: flower-superlink + 2 flower-supernode processes (slow).

Runs ``tests/deployment_app`` through ``CompressedStrategy`` + ``compression_mod``
(the helpers are in ``tests/loopback.py``):

* insecure, SuperNodes behind a byte-counting proxy: an EDEN 1-bit run and an fp32
  run of a 151,556-parameter MLP. Checks the run status (``flwr ls``), that the
  recorded per-round byte metrics match the protobuf bodies that crossed the wire
  within 1%, and that EDEN-1 uplink is >= 25x below fp32;
* the same with compressed broadcasts: EDEN 1-bit uplink with an EDEN 8-bit
  downlink in model mode, then in delta mode (the first correction, which is the
  model itself, then corrections, nothing new); the downlink bytes must match the
  wire within 1% as well;
* delta mode, one SuperNode SIGKILLed (with its children) between two rounds and
  restarted: the run completes and the restarted node, which comes back with a new
  node id and no state, catches up from the zero model;
* TLS with a throwaway CA: one EDEN run to completion.

Every process is started in its own session and stopped by its PID (group).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from loopback import (
    Processes,
    activated_nodes,
    cli_home,
    kill_tree,
    make_ca,
    node_ids,
    restart,
    run_app,
    start_superlink,
    start_supernode,
    submit,
    wait_finished,
    wait_for,
)
from wire_proxy import CountingProxy, attribute

pytestmark = pytest.mark.slow

HIDDEN = 4096  # 151,556 parameters


def _start_supernodes(
    procs: Processes, root: Path, fleet_port: int, *, tls: dict[str, Path] | None
) -> None:
    for i in range(2):
        start_supernode(procs, root, fleet_port, i, 2, tls=tls)


def _recorded(results: dict) -> dict[tuple[str, int, str], int]:
    out = {}
    for phase, records in (
        ("train", results["train"]),
        ("evaluate", results["evaluate"]),
    ):
        for rnd, metrics in records.items():
            out[(phase, int(rnd), "uplink")] = metrics["fedrot.uplink-bytes"]
            out[(phase, int(rnd), "downlink")] = metrics["fedrot.downlink-bytes"]
    return out


def _runs_match_the_wire(
    tmp_path: Path, runs: list[tuple[str, str]]
) -> dict[str, dict]:
    """Run each (label, run config) on one proxied deployment; check that every
    recorded per-phase byte count matches the wire within 1%."""
    procs = Processes(tmp_path)
    proxy = None
    summary = {}
    try:
        port = start_superlink(procs, tmp_path)
        proxy = CountingProxy(port).start()
        _start_supernodes(procs, tmp_path, proxy.port, tls=None)
        home = cli_home(tmp_path, port)
        for label, run_config in runs:
            before = len(proxy.snapshot())
            out = tmp_path / f"{label}.json"
            run_app(home, procs, f"{run_config} results-path='{out}'")
            results = json.loads(out.read_text())
            assert results["num_params"] >= 100_000
            measured = attribute(proxy.snapshot()[before:])
            recorded = _recorded(results)
            assert set(recorded) == set(measured), (recorded, measured)
            print(
                json.dumps(
                    {
                        label: {
                            "|".join(map(str, k)): {
                                "recorded": v,
                                **measured[k],
                                "error-%": round(
                                    100
                                    * (v - measured[k]["bytes"])
                                    / measured[k]["bytes"],
                                    4,
                                ),
                            }
                            for k, v in recorded.items()
                        }
                    },
                    indent=1,
                )
            )
            for key, value in recorded.items():
                wire = measured[key]["bytes"]
                assert abs(value - wire) <= 0.01 * wire, (
                    label,
                    key,
                    value,
                    measured[key],
                )
            summary[label] = {
                "recorded": recorded,
                "measured": measured,
                "results": results,
            }
    finally:
        procs.stop_all()
        if proxy is not None:
            proxy.stop()
    return summary


def test_insecure_deployment_bytes_match_the_wire(tmp_path: Path) -> None:
    summary = _runs_match_the_wire(
        tmp_path,
        [
            ("eden", f"codec='eden' bits=1.0 hidden={HIDDEN} num-server-rounds=2"),
            ("fp32", f"codec='fp32' hidden={HIDDEN} num-server-rounds=1"),
        ],
    )
    eden_up = summary["eden"]["measured"][("train", 1, "uplink")]["bytes"]
    fp32_up = summary["fp32"]["measured"][("train", 1, "uplink")]["bytes"]
    print(
        f"uplink train bytes per round: fp32 {fp32_up}, eden-1bit {eden_up}, "
        f"ratio {fp32_up / eden_up:.1f}x"
    )
    assert fp32_up / eden_up >= 25
    acc = summary["eden"]["results"]["server"]
    assert acc["2"]["acc"] > acc["0"]["acc"]


def test_compressed_downlink_bytes_match_the_wire(tmp_path: Path) -> None:
    """EDEN 8-bit broadcasts, model and delta mode: recorded = wire within 1%."""
    uplink = f"codec='eden' bits=1.0 hidden={HIDDEN}"
    downlink = "downlink-codec='eden' downlink-bits=8.0"
    summary = _runs_match_the_wire(
        tmp_path,
        [
            ("model", f"{uplink} {downlink} downlink-mode='model' num-server-rounds=1"),
            ("delta", f"{uplink} {downlink} downlink-mode='delta' num-server-rounds=2"),
        ],
    )
    d = summary["model"]["results"]["num_params"]
    fp32_model = 4 * d
    for label in ("model", "delta"):
        results = summary[label]["results"]
        for metrics in results["train"].values():
            assert metrics["fedrot.failed-replies"] == 0, (label, metrics)
            assert metrics["fedrot.total-bytes"] == (
                metrics["fedrot.uplink-bytes"] + metrics["fedrot.downlink-bytes"]
            )
    wire = {
        label: {
            f"{phase}{rnd}": v["bytes"]
            for (phase, rnd, way), v in summary[label]["measured"].items()
            if way == "downlink"
        }
        for label in ("model", "delta")
    }
    print(f"downlink bytes on the wire, 2 nodes (fp32 model: {fp32_model} B): {wire}")
    # model mode: one 8-bit model per node and phase (~d bytes), about 4x below fp32
    for phase in ("train1", "evaluate1"):
        assert 2 * d < wire["model"][phase] < 2 * 1.3 * d, (phase, wire["model"])
    # delta mode: nodes start from the zero model, so round 1's train carries the
    # first 8-bit correction (version 0, the model itself) to both; the evaluate
    # instruction then carries one 8-bit correction; round 2 trains from the model
    # the nodes already hold
    delta = summary["delta"]["results"]["phases"]
    payloads = {
        (p["type"], p["round"]): sorted(tuple(s["payloads"]) for s in p["sent"])
        for p in delta
    }
    assert payloads[("train", 1)] == [("0",), ("0",)], payloads
    assert payloads[("evaluate", 1)] == [("1",), ("1",)], payloads
    assert payloads[("train", 2)] == [(), ()], payloads
    assert 2 * d < wire["delta"]["train1"] < 2 * 1.3 * d
    assert 2 * d < wire["delta"]["evaluate1"] < 2 * 1.3 * d
    assert wire["delta"]["train2"] < 0.01 * fp32_model
    acc = summary["delta"]["results"]["server"]
    assert acc["2"]["acc"] > acc["0"]["acc"]


def test_restarted_supernode_gets_the_full_model(tmp_path: Path) -> None:
    """Delta broadcasts; SuperNode 1 is SIGKILLed (with its flower-superexec and
    flwr-clientapp children) between rounds 1 and 2 and started again."""
    control = tmp_path / "control"
    control.mkdir()
    procs = Processes(tmp_path)
    try:
        port = start_superlink(procs, tmp_path)
        _start_supernodes(procs, tmp_path, port, tls=None)
        home = cli_home(tmp_path, port)
        wait_for(
            "2 SuperNodes active",
            lambda: len(activated_nodes(tmp_path)) >= 2,
            timeout=60,
            procs=procs,
        )
        out = tmp_path / "restart.json"
        run_id = submit(
            home,
            procs,
            "codec='eden' bits=1.0 downlink-codec='eden' downlink-bits=8.0 "
            "downlink-mode='delta' num-server-rounds=2 hidden=256 "
            f"control-dir='{control}' pause-after-round=1 results-path='{out}'",
        )
        paused = control / "paused-1"
        wait_for("the pause after round 1", paused.exists, timeout=180, procs=procs)
        victim = node_ids(tmp_path, "supernode1")[-1]
        killed = kill_tree(procs.latest("supernode1").proc)
        print(f"SIGKILLed between rounds: {killed}")
        restart(procs, "supernode1")
        wait_for(
            "the restarted SuperNode registered",
            lambda: len(node_ids(tmp_path, "supernode1")) == 2,
            timeout=60,
            procs=procs,
        )
        (control / "resume-1").write_text("")
        resumed = time.time()
        status = wait_finished(home, procs, run_id, timeout=240)
        print(f"round 2 and the end of the run: {time.time() - resumed:.1f} s")
        assert status == "finished:completed", status + procs.logs()
        restarted = node_ids(tmp_path, "supernode1")[-1]
        survivor = node_ids(tmp_path, "supernode0")[-1]
    finally:
        procs.stop_all()
    # between rounds no ClientApp runs; a finished one may linger as a zombie
    commands = " ".join(killed.values())
    assert "flower-supernode" in commands and "flower-superexec" in commands, killed
    assert restarted not in (victim, survivor), "Flower 1.41 gives a new node id"
    results = json.loads(out.read_text())
    print(json.dumps(results["phases"], indent=1))
    phases = {(p["type"], p["round"]): p for p in results["phases"]}
    sent = {key: {s["node"]: s for s in p["sent"]} for key, p in phases.items()}
    replies = {key: {r["node"]: r for r in p["replies"]} for key, p in phases.items()}
    payloads = {
        key: {n: s["payloads"] for n, s in v.items()} for key, v in sent.items()
    }
    # round 1: both nodes start from the zero model: version 0's correction
    assert payloads[("train", 1)] == {victim: ["0"], survivor: ["0"]}
    assert payloads[("evaluate", 1)] == {victim: ["1"], survivor: ["1"]}
    # round 2: the restarted node (new id, no state) catches up from the zero
    # model with versions 0 and 1 (2 x 8 bits per value, cheaper than float32);
    # the survivor already holds version 1 and gets nothing but the settings; the
    # SuperLink lists the killed node until its heartbeat expires, so it may be
    # sent an instruction, answered by the SuperLink as "node unavailable"
    train2 = sent[("train", 2)]
    assert payloads[("train", 2)][restarted] == ["0", "1"], payloads
    assert train2[restarted]["base"] == -1
    assert payloads[("train", 2)][survivor] == [], payloads
    assert train2[survivor]["base"] == train2[survivor]["version"] == 1
    for node in (restarted, survivor):
        assert "error-code" not in replies[("train", 2)][node], replies
    lost = int(victim in train2)
    metrics = results["train"]["2"]
    print(f"victim sent round 2: {bool(lost)}; round-2 train metrics: {metrics}")
    assert metrics["fedrot.failed-replies"] == lost, metrics
    assert metrics["fedrot.failed-replies.node-unavailable"] == lost, metrics
    # the restarted node's reply confirmed version 1: its evaluate instruction
    # carries only the next correction
    eval2 = sent[("evaluate", 2)][restarted]
    assert eval2["base"] == 1 and eval2["payloads"] == ["2"], eval2
    assert "error-code" not in replies[("evaluate", 2)][restarted], replies


def test_tls_deployment_completes(tmp_path: Path) -> None:
    tls = make_ca(tmp_path)
    procs = Processes(tmp_path)
    try:
        port = start_superlink(procs, tmp_path, tls=tls)
        _start_supernodes(procs, tmp_path, port, tls=tls)
        home = cli_home(tmp_path, port, tls)
        out = tmp_path / "tls.json"
        run_app(
            home,
            procs,
            f"codec='eden' bits=2.0 num-server-rounds=1 results-path='{out}'",
        )
        results = json.loads(out.read_text())
        assert results["train"]["1"]["fedrot.failed-replies"] == 0
        assert results["train"]["1"]["fedrot.uplink-bytes"] > 0
    finally:
        procs.stop_all()
