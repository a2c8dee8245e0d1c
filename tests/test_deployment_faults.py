"""Node faults on a loopback deployment: SuperLink + 3 SuperNodes (slow).

A SuperNode is SIGKILLed mid-round, together with its ``flower-superexec`` and the
``flwr-clientapp`` that is training (stopped by PID, see ``tests/loopback.py``),
then started again. The run uses EDEN 1-bit updates with error feedback and EDEN
8-bit delta broadcasts, so every node keeps state (a residual and the model it
holds) in ``context.state``.

What Flower 1.41 does, and what is checked:

* the killed node's instruction is answered by the SuperLink (source node 1, not
  the dead node's id) with a ``NODE_UNAVAILABLE`` error once the node misses its
  heartbeat: SuperNodes announce a 30 s interval (``HEARTBEAT_DEFAULT_INTERVAL``,
  not configurable) and send one every 17.5-22.5 s; the SuperLink waits
  ``HEARTBEAT_PATIENCE`` (2) intervals, so the round ends 37.5-60 s after the kill;
* fedrot counts that reply as ``fedrot.failed-replies.node-unavailable`` and the
  round aggregates the two others;
* the restarted SuperNode registers with a new node id, gets the model it must
  hold (it has no state: the float32 model, or the corrections from the zero
  model when cheaper) and trains correctly in the next round; the run completes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from loopback import (
    Processes,
    activated_nodes,
    cli_home,
    kill_tree,
    node_ids,
    restart,
    start_superlink,
    start_supernode,
    submit,
    wait_finished,
    wait_for,
)

from fedrot.constants import FAILURE_REASONS, METRIC_FAILED_PREFIX

pytestmark = pytest.mark.slow

NODES = 3
VICTIM = 2  # partition whose SuperNode is killed
KILL_ROUND = 2


def test_supernode_killed_mid_round(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    procs = Processes(tmp_path)
    try:
        port = start_superlink(procs, tmp_path)
        for i in range(NODES):
            start_supernode(procs, tmp_path, port, i, NODES)
        home = cli_home(tmp_path, port)
        wait_for(
            f"{NODES} SuperNodes active",
            lambda: len(activated_nodes(tmp_path)) >= NODES,
            timeout=60,
            procs=procs,
        )
        out = tmp_path / "faults.json"
        run_id = submit(
            home,
            procs,
            "codec='eden' bits=1.0 error-feedback=true downlink-codec='eden' "
            "downlink-bits=8.0 downlink-mode='delta' num-server-rounds=3 hidden=256 "
            f"min-nodes={NODES} fraction-evaluate=0.0 control-dir='{control}' "
            f"hold-partition={VICTIM} hold-round={KILL_ROUND} hold-seconds=300.0 "
            f"results-path='{out}'",
        )
        # the victim's ClientApp writes this marker, then sleeps: mid-round
        marker = control / f"train-p{VICTIM}-r{KILL_ROUND}.json"
        wait_for("the victim training", marker.exists, timeout=240, procs=procs)
        victim = node_ids(tmp_path, f"supernode{VICTIM}")[-1]
        killed = kill_tree(procs.latest(f"supernode{VICTIM}").proc)
        killed_at = time.time()
        print(f"SIGKILLed mid-round {KILL_ROUND}: {killed}")
        restart(procs, f"supernode{VICTIM}")
        wait_for(
            "the restarted SuperNode registered",
            lambda: len(node_ids(tmp_path, f"supernode{VICTIM}")) == 2,
            timeout=60,
            procs=procs,
        )
        status = wait_finished(home, procs, run_id, timeout=300)
        assert status == "finished:completed", status + procs.logs()
        restarted = node_ids(tmp_path, f"supernode{VICTIM}")[-1]
        survivors = {node_ids(tmp_path, f"supernode{i}")[-1] for i in range(VICTIM)}
    finally:
        procs.stop_all()

    assert json.loads(marker.read_text())["node"] == victim
    commands = " ".join(killed.values())
    for name in ("flower-supernode", "flower-superexec", "flwr-clientapp"):
        assert name in commands, (name, killed)
    assert restarted not in survivors | {victim}, "Flower 1.41 gives a new node id"

    results = json.loads(out.read_text())
    phases = {p["round"]: p for p in results["phases"] if p["type"] == "train"}
    sent = {r: {s["node"]: s for s in p["sent"]} for r, p in phases.items()}
    replies = {r: p["replies"] for r, p in phases.items()}
    ended = {r: p["start"] + p["seconds"] for r, p in phases.items()}
    timing = {
        "train-phase-seconds": {r: round(p["seconds"], 1) for r, p in phases.items()},
        "kill-to-round-end": round(ended[KILL_ROUND] - killed_at, 1),
    }
    print(json.dumps({"timing": timing, "phases": results["phases"]}, indent=1))

    # the killed round: three instructions, two replies from the survivors and the
    # SuperLink's "node unavailable" on behalf of the dead node
    assert set(sent[KILL_ROUND]) == survivors | {victim}
    ok = {r["node"] for r in replies[KILL_ROUND] if "error-code" not in r}
    errors = [r for r in replies[KILL_ROUND] if "error-code" in r]
    assert ok == survivors, replies[KILL_ROUND]
    assert len(errors) == 1, replies[KILL_ROUND]
    assert errors[0]["node"] == SUPERLINK_NODE_ID, errors
    assert errors[0]["error-code"] == ErrorCode.NODE_UNAVAILABLE, errors
    metrics = results["train"][str(KILL_ROUND)]
    assert metrics["fedrot.failed-replies"] == 1, metrics
    for reason in FAILURE_REASONS:
        expected = int(reason == "node-unavailable")
        assert metrics[METRIC_FAILED_PREFIX + reason] == expected, (reason, metrics)
    # the round waited for the heartbeat, not for the 300 s sleep of the victim
    assert timing["kill-to-round-end"] < 90, timing

    # the next round: the restarted node (new id, no state) gets the model it
    # must hold, by the cheaper route (the float32 model, or every correction from
    # the zero model), and trains; the survivors get only the correction since the
    # model they hold
    last = KILL_ROUND + 1
    assert set(sent[last]) == survivors | {restarted}
    version = sent[last][restarted]["version"]
    chain = [str(u) for u in range(version + 1)]
    assert sent[last][restarted]["payloads"] in (["full"], chain), sent[last]
    assert sent[last][restarted]["base"] == -1
    for node in survivors:
        assert sent[last][node]["base"] == sent[last][node]["version"] - 1
    good = {r["node"]: r for r in replies[last] if "error-code" not in r}
    assert set(good) == survivors | {restarted}, replies[last]
    assert math.isfinite(good[restarted]["metrics"]["train-loss"])
    assert results["train"][str(last)]["fedrot.failed-replies"] == 0
    assert results["train"]["1"]["fedrot.failed-replies"] == 0
    # the model kept learning through the fault
    acc = results["server"]
    assert acc[str(last)]["acc"] > acc["0"]["acc"]
