"""The simulations app: config parsing, partitions, CLI errors, and the smoke preset."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedrot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "simulations"))

from fedrot_sim.batch import plan_batches, read_batch, write_batch  # noqa: E402
from fedrot_sim.client_app import app as client_app  # noqa: E402
from fedrot_sim.config import (  # noqa: E402
    RunConfig,
    format_codec_params,
    parse_codec_params,
)
from fedrot_sim.data import dirichlet_partition  # noqa: E402
from fedrot_sim.launcher import toml_value  # noqa: E402
from fedrot_sim.linkmodel import (  # noqa: E402
    Link,
    RoundCost,
    break_even_mbps,
    cost_to,
    round_cost,
    rounds_to,
    simulated_times,
)
from fedrot_sim.models import make_model, num_params  # noqa: E402
from fedrot_sim.plots import pareto_front  # noqa: E402
from fedrot_sim.presets import (  # noqa: E402
    PRESETS,
    RANDK_FRACTION,
    TOPK_FRACTION,
    preset_configs,
)
from fedrot_sim.records import (  # noqa: E402
    RoundRecord,
    RunResult,
    lost_replies,
    read_run_record,
    run_record,
    write_run_record,
)
from fedrot_sim.report import (  # noqa: E402
    shared_training_times,
    summarize,
    write_reports,
)  # noqa: E402
from fedrot_sim.sampling import (  # noqa: E402
    PartitionSampledFedAvg,
    local_seed,
    sample_partitions,
)
from fedrot_sim.server_app import batch_configs, run  # noqa: E402
from fedrot_sim.stats import (  # noqa: E402
    mean_interval,
    paired_interval,
    t_quantile,
)
from fedrot_sim.sweep import main as sweep_main  # noqa: E402
from flower_factories import FakeGrid, make_context, set_task_identity  # noqa: E402
from flwr.app import Message  # noqa: E402
from flwr.common.config import parse_config_args  # noqa: E402


def _simulations(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run ``python -m simulations ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "simulations", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_config_parses_kebab_case_and_rejects_unknown_keys() -> None:
    cfg = RunConfig.from_run_config(
        {
            "task": "digits",
            "codec": "eden",
            "codec-params": "bits=2.0 rotations=auto",
            "num-clients": 10,
            "clients-per-round": 5,
            "rounds": 3,
        }
    )
    assert cfg.codec_params == {"bits": 2.0, "rotations": "auto"}
    assert cfg.make_codec().params()["bits"] == 2
    assert cfg.label == "eden bits=2 rotations=auto"
    assert cfg.model == "digits-mlp"
    assert RunConfig.from_run_config(cfg.to_run_config()) == cfg
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown run-config key.*num-client"):
        RunConfig.from_run_config({"num-client": 3})
    with pytest.raises(ValueError, match="codec-params"):
        RunConfig.from_run_config({"codec-params": "bits"})
    with pytest.raises(ValueError, match="codec"):
        RunConfig(codec="zip")
    with pytest.raises(ValueError, match="bits"):
        RunConfig(codec="eden", codec_params={"bits": 9})
    with pytest.raises(ValueError, match="levels"):  # fedrot names the parameter
        RunConfig(codec="eden", codec_params={"levels": 15})
    with pytest.raises(ValueError, match="clients_per_round"):
        RunConfig(num_clients=5, clients_per_round=6)
    with pytest.raises(ValueError, match="digits-bn-mlp.*digits"):
        RunConfig(task="fashion-mnist", model="digits-bn-mlp")


def test_codec_params_string_round_trips() -> None:
    params = {"bits": 0.5, "rotations": "auto", "chunk_size": 4096, "clip": None}
    assert parse_codec_params(format_codec_params(params)) == params
    assert parse_codec_params("chunk-size=1024, bits=1") == {
        "chunk_size": 1024,
        "bits": 1,
    }
    assert parse_codec_params("  ") == {}
    with pytest.raises(ValueError, match="twice"):
        parse_codec_params("bits=1 bits=2")


def test_labels_come_from_the_codec_parameters_the_setting_names() -> None:
    labels = {c.label for name in PRESETS for c in preset_configs(name) if c.seed == 0}
    assert {
        "fp32",
        "drive",
        "eden bits=1",
        "eden bits=0.1",
        "eden bits=1 rotations=auto",
        "qsgd levels=15",
        "topk fraction=0.0195 +EF",
        "randk fraction=0.003125",
        "signsgd +EF",
        "eden bits=1 | down eden bits=8 model",
        "eden bits=1 | down eden bits=2 delta",
    } <= labels
    for name in PRESETS:
        for c in preset_configs(name):
            # the codec reports back exactly the parameters the setting names
            assert c.make_codec().params().items() >= c.codec_params.items()
            spec = c.downlink_spec()
            if spec is not None:
                assert (
                    spec.codec.params().items()
                    >= {
                        k: v
                        for k, v in c.downlink.items()
                        if k not in ("codec", "mode")
                    }.items()
                )


def test_downlink_setting_parses_labels_and_reaches_flwr_run() -> None:
    cfg = RunConfig.from_run_config(
        {
            "codec": "eden",
            "codec-params": "bits=1",
            "downlink": "codec=eden bits=8 mode=model",
        }
    )
    assert cfg.downlink == {"codec": "eden", "bits": 8, "mode": "model"}
    assert cfg.label == "eden bits=1 | down eden bits=8 model"
    assert cfg.family == "eden | down eden model"
    assert "-down-eden-bits8-model-" in cfg.run_id
    spec = cfg.downlink_spec()
    assert spec is not None and spec.mode == "model" and spec.codec.name == "eden"
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in cfg.to_run_config().items())
    assert RunConfig.from_run_config(parse_config_args([overrides])) == cfg
    plain = RunConfig.from_run_config({"codec": "eden", "downlink": ""})
    assert plain.downlink == {} and plain.downlink_spec() is None
    assert " | down" not in plain.label and plain.run_id != cfg.run_id
    with pytest.raises(ValueError, match="mode"):
        RunConfig(downlink={"codec": "eden", "bits": 8, "mode": "sometimes"})
    with pytest.raises(ValueError, match="downlink"):
        RunConfig(downlink={"codec": "zip"})
    with pytest.raises(ValueError, match="downlink.*name=value"):
        RunConfig.from_run_config({"downlink": "eden"})
    with pytest.raises(TypeError, match="downlink"):
        RunConfig(downlink="codec=eden")  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", sorted(TOPK_FRACTION))
def test_baselines_match_eden_bytes_at_the_same_bits(bits: float) -> None:
    d = num_params(make_model("fashion-mnist"))
    eden = fedrot.get_codec("eden", bits=bits).info(d).payload_bytes
    for name, fraction in (
        ("topk", TOPK_FRACTION[bits]),
        ("randk", RANDK_FRACTION[bits]),
    ):
        payload = fedrot.get_codec(name, fraction=fraction).info(d).payload_bytes
        assert abs(payload - eden) <= 0.01 * eden, (name, bits, payload, eden)


def _result(failed: dict[int, dict[str, int]], rounds: int) -> RunResult:
    """A RunResult whose round r lost ``sum(failed[r].values())`` replies."""
    return RunResult(
        num_params=100,
        rounds=tuple(
            RoundRecord(
                round=r,
                accuracy=0.1 * r,
                loss=2.0 - 0.1 * r,
                train_loss=1.0,
                uplink_bytes=1000 * (r > 0),
                downlink_bytes=4000 * (r > 0),
                total_bytes=5000 * (r > 0),
                uplink_payload_bytes=900 * (r > 0),
                downlink_payload_bytes=3900 * (r > 0),
                failed_replies=sum(failed.get(r, {}).values()),
                failed_by_reason=failed.get(r, {}),
                trained=r > 0,
                clients=[0, 1] if r > 0 else [],
                wall_time_s=float(r),
                train_cpu_s=[0.5, 0.75] if r > 0 else [],
                codec_cpu_s=[0.25, 0.0] if r > 0 else [],
                server_cpu_s=0.5 * (r > 0),
            )
            for r in range(rounds + 1)
        ),
        total_wall_time_s=float(rounds),
    )


def test_run_records_round_trip_and_flag_lost_replies(tmp_path: Path) -> None:
    cfg = preset_configs("smoke")[1]
    path = write_run_record(tmp_path, cfg, _result({}, cfg.rounds), env={"x": 1})
    assert path.name == f"{cfg.run_id}.json" and not list(tmp_path.glob("*.tmp"))
    doc = read_run_record(path)
    assert RunConfig.from_dict(doc["config"]) == cfg and doc["label"] == cfg.label
    assert [r["round"] for r in doc["rounds"]] == list(range(cfg.rounds + 1))
    assert lost_replies(doc) == []
    lossy = run_record(cfg, _result({3: {"corrupt": 2}}, cfg.rounds), env={})
    (line,) = lost_replies(lossy)
    assert cfg.run_id in line and "round 3" in line and "corrupt: 2" in line
    untrained = run_record(cfg, _result({}, cfg.rounds), env={})
    untrained["rounds"][2]["trained"] = False
    (line,) = lost_replies(untrained)
    assert "round 2" in line and "no train metrics" in line
    doc["version"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="version"):
        read_run_record(path)


def test_sweep_exits_nonzero_naming_run_and_round_that_lost_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYTHONPATH", "")
    configs = preset_configs("smoke")
    runs = tmp_path / "runs"
    write_run_record(runs, configs[0], _result({}, configs[0].rounds), env={})
    write_run_record(
        runs, configs[1], _result({2: {"client-mod": 1}}, configs[1].rounds), env={}
    )
    assert (
        sweep_main(["--preset", "smoke", "--out", str(tmp_path), "--report-only"]) == 1
    )
    err = capsys.readouterr().err
    assert f"run {configs[1].run_id}" in err and "round 2" in err
    assert configs[0].run_id not in err
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == configs[1].label]
    assert [int(r["failed_replies"]) for r in rows] == [0, 0, 1, 0, 0, 0]
    assert rows[2]["failed_by_reason"] == "client-mod=1"
    assert "| 1 |" in (tmp_path / "summary.md").read_text()


class _InProcessGrid(FakeGrid):
    """Runs every instruction through the ClientApp at once, one Context per node."""

    def __init__(self, node_ids: list[int]) -> None:
        super().__init__(node_ids)
        self.contexts = {n: make_context(n) for n in node_ids}
        self.seen: list[tuple[int, int, int]] = []  # (round, node, partition)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for msg in messages:
            cfg = msg.content["config"]
            node = msg.metadata.dst_node_id
            self.seen.append((int(cfg["server-round"]), node, int(cfg["partition-id"])))
            replies.append(client_app(msg, self.contexts[node]))
        return replies


def _paired_run(
    codec: str, node_ids: list[int], *, node_block: int = 0, **changes: Any
) -> tuple[RunResult, _InProcessGrid]:
    set_task_identity()
    cfg = RunConfig(
        task="digits",
        codec=codec,
        rounds=3,
        num_clients=6,
        clients_per_round=3,
        lr=0.3,
        batch_size=16,
        seed=4,
    )
    grid = _InProcessGrid(node_ids)
    return run(grid, dataclasses.replace(cfg, **changes), node_block=node_block), grid


def _measured(result: RunResult) -> list[RoundRecord]:
    """The rounds without wall and CPU times and protobuf byte counts."""
    return [
        dataclasses.replace(
            r,
            wall_time_s=0.0,
            uplink_bytes=0,
            downlink_bytes=0,
            total_bytes=0,
            train_cpu_s=[],
            codec_cpu_s=[],
            server_cpu_s=0.0,
        )
        for r in result.rounds
    ]


def test_sample_partitions_depend_on_seed_and_round_only() -> None:
    a = [sample_partitions(7, r, 100, 10) for r in range(1, 6)]
    assert a == [sample_partitions(7, r, 100, 10) for r in range(1, 6)]
    assert all(p == sorted(set(p)) and len(p) == 10 for p in a)
    assert all(0 <= i < 100 for p in a for i in p)
    assert len({tuple(p) for p in a}) == 5  # a new sample every round
    assert sample_partitions(8, 1, 100, 10) != a[0]
    assert local_seed(7, 1, 3) == local_seed(7, 1, 3) != local_seed(7, 2, 3)
    assert local_seed(7, 1, 3) != local_seed(8, 1, 3)
    with pytest.raises(ValueError, match="per_round"):
        PartitionSampledFedAvg(num_partitions=3, per_round=4, seed=0)


def test_two_fp32_runs_of_one_seed_are_identical_whatever_the_node_ids() -> None:
    first, grid_a = _paired_run("fp32", list(range(100, 106)))
    # other node ids, registered in another order: the same partitions still train
    second, grid_b = _paired_run("fp32", [2**62 + 9, 5, 2**40, 77, 3, 1_000_003])
    # accuracy, losses, payload bytes, clients: all equal (the protobuf byte counts
    # differ by the varint length of the node ids, wall times by the clock)
    assert _measured(first) == _measured(second)
    assert [r.clients for r in first.rounds[1:]] == [
        sample_partitions(4, r, 6, 3) for r in (1, 2, 3)
    ]
    # partition p always trains on the p-th node by id (per-node state follows it)
    for grid in (grid_a, grid_b):
        ranked = sorted(grid.contexts)
        assert all(node == ranked[p] for _, node, p in grid.seen)
    fp16, _ = _paired_run("fp16", list(range(100, 106)))
    assert _measured(fp16)[0] == _measured(first)[0]  # same initial model
    assert [r.clients for r in fp16.rounds] == [r.clients for r in first.rounds]
    assert [r.train_loss for r in fp16.rounds[:2]] == [
        r.train_loss for r in first.rounds[:2]
    ]  # round 1 trains the same model on the same batches
    # ... and the codec acts from the first upload on
    assert fp16.rounds[1].loss != first.rounds[1].loss
    assert fp16.rounds[1].uplink_payload_bytes < first.rounds[1].uplink_payload_bytes


def test_runs_of_a_batch_use_disjoint_node_blocks_and_stay_paired() -> None:
    solo, _ = _paired_run("fp32", list(range(100, 106)))
    nodes = [2**50 + 3, 17, 9_999, 4, 2**33, 600, 71, 2**61, 5_000, 12, 808, 2**20]
    second, grid = _paired_run("fp32", nodes, node_block=1)
    # the second run of a batch trains partition p on node 6 + p by id ...
    ranked = sorted(nodes)
    assert grid.seen and all(node == ranked[6 + p] for _, node, p in grid.seen)
    # ... and is the same run as alone in its federation
    assert _measured(second) == _measured(solo)
    # measured CPU times: one per trained client, the server's per round
    for r in second.rounds[1:]:
        assert len(r.train_cpu_s) == len(r.codec_cpu_s) == len(r.clients) == 3
        assert all(t > 0 for t in r.train_cpu_s) and all(c >= 0 for c in r.codec_cpu_s)
        assert r.server_cpu_s > 0
    assert second.rounds[0].train_cpu_s == [] and second.rounds[0].server_cpu_s == 0
    with pytest.raises(RuntimeError, match="SuperNodes"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("fedrot_sim.sampling.NODE_WAIT_S", 0.0)
            _paired_run("fp32", list(range(100, 106)), node_block=1)


def test_compressed_broadcasts_cut_the_total_bytes_of_a_run() -> None:
    uplink_only, _ = _paired_run(
        "eden", list(range(100, 106)), codec_params={"bits": 1}
    )
    both, _ = _paired_run(
        "eden",
        list(range(100, 106)),
        codec_params={"bits": 1},
        downlink={"codec": "eden", "bits": 2, "mode": "model"},
    )
    for a, b in zip(uplink_only.rounds[1:], both.rounds[1:], strict=True):
        assert a.clients == b.clients
        assert a.total_bytes == a.uplink_bytes + a.downlink_bytes
        assert b.total_bytes == b.uplink_bytes + b.downlink_bytes
        # a 2-bit broadcast of the 8,906-value model: about 1/14 of float32
        assert b.downlink_payload_bytes < a.downlink_payload_bytes / 10
        assert abs(b.uplink_bytes - a.uplink_bytes) < 0.02 * a.uplink_bytes
    assert both.rounds[1].accuracy != uplink_only.rounds[1].accuracy


def test_diverged_local_training_sends_a_zero_update_and_is_counted() -> None:
    # a learning rate that blows every local model up to non-finite weights
    result, _ = _paired_run(
        "eden", list(range(100, 106)), codec_params={"bits": 1}, lr=1e30
    )
    assert [r.diverged_clients for r in result.rounds] == [0, 3, 3, 3]
    # the run completes; every reply counted; the model never changed
    assert all(r.failed_replies == 0 and r.trained for r in result.rounds[1:])
    assert {r.accuracy for r in result.rounds} == {result.rounds[0].accuracy}
    healthy, _ = _paired_run("eden", list(range(100, 106)), codec_params={"bits": 1})
    assert all(r.diverged_clients == 0 for r in healthy.rounds)


def test_batches_group_runs_by_federation_size(tmp_path: Path) -> None:
    default = preset_configs("default")
    silo = preset_configs("cross-silo")
    batches = plan_batches(default[:5] + silo[:2] + default[5:7], max_nodes=300)
    assert [[c.run_id for c in b] for b in batches] == [
        [c.run_id for c in default[0:3]],
        [c.run_id for c in default[3:6]],
        [default[6].run_id],
        [c.run_id for c in silo[:2]],
    ]
    path = write_batch(tmp_path / "b.json", default[:3])
    assert read_batch(path) == default[:3]
    assert batch_configs({"runs-file": str(path), "out": "x"}) == default[:3]
    assert batch_configs({"codec": "drive", "runs-file": ""})[0].codec == "drive"
    with pytest.raises(ValueError, match="num_clients"):
        write_batch(tmp_path / "c.json", [default[0], silo[0]])
    # 6 runs of 100 nodes per batch by default; all 9 cross-silo runs (10 nodes)
    assert [len(b) for b in plan_batches(default)] == [6] * 5 + [3]
    assert [len(b) for b in plan_batches(silo)] == [9]
    assert [len(b) for b in plan_batches(default[:2], max_nodes=50)] == [1, 1]
    with pytest.raises(ValueError, match="max_nodes"):
        plan_batches(default, max_nodes=0)


def test_link_model_times_rounds_and_finds_the_break_even_bandwidth() -> None:
    record = {
        "round": 1,
        "clients": [3, 5],
        "train_cpu_s": [1.0, 2.0],
        "codec_cpu_s": [0.5, 0.25],
        "server_cpu_s": 0.75,
        "uplink_bytes": 2_000_000,
        "downlink_bytes": 10_000_000,
    }
    cost = round_cost(record)
    # the slowest client (2.25 s) + the server, each client's share of the bytes
    assert cost == RoundCost(cpu_s=3.0, uplink_bytes=1e6, downlink_bytes=5e6)
    link = Link(uplink_mbps=4, downlink_mbps=20)
    assert cost.seconds(link) == pytest.approx(3.0 + 2.0 + 2.0)
    doc = {
        "rounds": [
            {"round": 0, "accuracy": 0.1},
            {**record, "accuracy": 0.5},
            {**record, "round": 2, "accuracy": 0.7},
        ]
    }
    assert simulated_times(doc, link) == pytest.approx([0.0, 7.0, 14.0])
    assert rounds_to(doc, 0.6) == 2 and rounds_to(doc, 0.9) is None
    total = cost_to(doc, 0.6)
    assert total is not None and total.seconds(link) == pytest.approx(14.0)
    # a codec that saves bytes but costs CPU is faster below one uplink bandwidth
    ref = RoundCost(cpu_s=10.0, uplink_bytes=1e6, downlink_bytes=1e6)
    small = RoundCost(cpu_s=12.0, uplink_bytes=1e4, downlink_bytes=1e6)
    even = break_even_mbps(small, ref, link)
    assert even.kind == "below" and even.mbps == pytest.approx(8 * 0.99 / 2)
    for factor, faster in ((0.9, True), (1.1, False)):
        u = even.mbps * factor
        probe = Link(uplink_mbps=u, downlink_mbps=5 * u)
        assert (small.seconds(probe) < ref.seconds(probe)) is faster
    cheap = RoundCost(cpu_s=9.0, uplink_bytes=1e4, downlink_bytes=1e6)
    assert break_even_mbps(cheap, ref, link).kind == "always"
    assert break_even_mbps(ref, ref, link).kind == "never"
    # the other way round: more bytes, less CPU, faster above the same bandwidth
    reverse = break_even_mbps(ref, small, link)
    assert reverse.kind == "above" and reverse.mbps == pytest.approx(even.mbps)
    heavy = RoundCost(cpu_s=11.0, uplink_bytes=2e6, downlink_bytes=1e6)
    assert break_even_mbps(heavy, ref, link).kind == "never"
    with pytest.raises(ValueError, match="uplink_mbps"):
        Link(uplink_mbps=0)


def test_pareto_front_keeps_the_points_nothing_beats() -> None:
    points = [
        (10.0, 0.80),
        (1.0, 0.70),
        (5.0, 0.75),
        (5.0, 0.74),
        (20.0, 0.79),
        (0.5, 0.2),
    ]
    assert pareto_front(points) == [5, 1, 2, 0]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0]
    # a baseline set to EDEN's bytes within 1% is compared at equal bytes
    assert pareto_front([(1.0, 0.78), (0.995, 0.72), (0.5, 0.1)]) == [2, 0]
    assert pareto_front([(1.0, 0.78), (0.995, 0.72)], tolerance=0.0) == [1, 0]


def test_t_quantiles_and_paired_intervals_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 9, 29, 200):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-9)
    values, reference = [0.81, 0.84, 0.78, 0.80], [0.80, 0.80, 0.79, 0.77]
    ci = stats.ttest_rel(values, reference).confidence_interval(0.95)
    paired = paired_interval(values, reference)
    assert (paired.low, paired.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert paired.n == 4 and not paired.excludes_zero()
    assert paired_interval([0.9, 0.91, 0.92], [0.8, 0.8, 0.81]).excludes_zero()
    one = mean_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.half_width) and not one.excludes_zero()
    with pytest.raises(ValueError, match="pair up"):
        paired_interval([1.0, 2.0], [1.0])


def _seeded_doc(
    cfg: RunConfig, final: float, *, up: int = 1000, down: int = 4000
) -> dict[str, Any]:
    """A run record whose rounds all have accuracy ``final`` and move ``up`` and
    ``down`` bytes."""
    result = _result({}, cfg.rounds)
    rounds = tuple(
        dataclasses.replace(
            r,
            accuracy=final if r.round > 0 else 0.1,
            uplink_bytes=up * (r.round > 0),
            downlink_bytes=down * (r.round > 0),
            total_bytes=(up + down) * (r.round > 0),
        )
        for r in result.rounds
    )
    return run_record(cfg, dataclasses.replace(result, rounds=rounds), env={})


def test_summary_reports_seed_means_and_paired_intervals(tmp_path: Path) -> None:
    base = RunConfig(task="digits", rounds=3, num_clients=4, clients_per_round=2)
    fp32 = {0: 0.80, 1: 0.70, 2: 0.75}
    eden = {0: 0.79, 1: 0.688, 2: 0.739}  # unpaired spread is large, pairs tight
    docs = [
        _seeded_doc(dataclasses.replace(base, seed=s), acc) for s, acc in fp32.items()
    ] + [
        _seeded_doc(
            dataclasses.replace(base, seed=s, codec="eden", codec_params={"bits": 1}),
            acc,
        )
        for s, acc in eden.items()
    ]
    summary = {s["label"]: s for s in summarize(docs)}
    delta = summary["eden bits=1"]["delta"]
    expected = paired_interval(list(eden.values()), list(fp32.values()))
    assert (delta.mean, delta.half_width) == pytest.approx(
        (expected.mean, expected.half_width), abs=1e-12
    )
    assert delta.excludes_zero() and delta.n == 3
    acc, unpaired = (
        summary["eden bits=1"]["accuracy"],
        mean_interval(list(eden.values())),
    )
    assert (acc.mean, acc.half_width) == pytest.approx(
        (unpaired.mean, unpaired.half_width), abs=1e-12
    )
    assert acc.low < 0.7 < acc.high  # without pairing the difference would vanish
    assert summary["fp32"]["delta"].mean == 0.0
    paths = write_reports(docs, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    line = next(x for x in text.splitlines() if "| eden bits=1 |" in x)
    assert f"{100 * expected.mean:+.2f} [{100 * expected.low:+.2f}, " in line
    assert "| 3 |" in line and "95%" in text
    png = tmp_path / "paired_difference.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_reports_bytes_per_round_both_ways_and_time_to_target(
    tmp_path: Path,
) -> None:
    base = RunConfig(task="digits", rounds=3, num_clients=4, clients_per_round=2)
    down = {"codec": "eden", "bits": 8, "mode": "model"}
    runs = [
        (base, 0.80, 1000, 4000),
        (
            dataclasses.replace(base, codec="eden", codec_params={"bits": 1}),
            0.79,
            40,
            4000,
        ),
        (
            dataclasses.replace(
                base, codec="eden", codec_params={"bits": 1}, downlink=down
            ),
            0.78,
            40,
            1000,
        ),
        (
            dataclasses.replace(base, codec="randk", codec_params={"fraction": 0.01}),
            0.3,
            40,
            4000,
        ),
    ]
    docs = [
        _seeded_doc(
            dataclasses.replace(cfg, seed=seed), acc + 0.01 * seed, up=up, down=dn
        )
        for seed in (0, 1, 2)
        for cfg, acc, up, dn in runs
    ]
    summary = {s["label"]: s for s in summarize(docs)}
    both = summary["eden bits=1 | down eden bits=8 model"]
    assert both["family"] == "eden | down eden model"
    assert both["uplink_mb_round"] == pytest.approx(40e-6)
    assert both["total_mb_round"] == pytest.approx(1040e-6)
    assert both["ratio_uplink"] == pytest.approx(1000 / 40)
    assert both["ratio_total"] == pytest.approx(5000 / 1040)
    assert summary["eden bits=1"]["ratio_total"] == pytest.approx(5000 / 4040)
    assert summary["fp32"]["ratio_total"] == 1.0
    # the broadcast's cost: paired against the same uplink codec with float32 ones
    assert both["uplink_only"] == "eden bits=1"
    assert both["delta_uplink_only"].mean == pytest.approx(-0.01)
    assert summary["eden bits=1"]["delta_uplink_only"] is None
    # target: 95% of fp32's mean final accuracy (0.81), reached in round 1 ...
    target = summary["fp32"]["to_target"]
    assert target.target == pytest.approx(0.95 * 0.81) and target.rounds == 1
    assert both["to_target"].reached == 3 and both[
        "to_target"
    ].total_mb == pytest.approx(1040e-6)
    # ... but never by rand-k at 1% of the coordinates
    assert summary["randk fraction=0.01"]["to_target"].reached == 0
    # same CPU (the fake records), fewer bytes: faster at every bandwidth
    assert both["to_target"].pays_off.kind == "always"
    paths = write_reports(docs, tmp_path, link=Link(uplink_mbps=2, downlink_mbps=10))
    text = (tmp_path / "summary.md").read_text()
    row = next(x for x in text.splitlines() if "down eden bits=8 model" in x)
    # the label's pipe is escaped, so the table keeps its columns
    assert "eden bits=1 \\| down eden bits=8 model" in row
    assert row.count(" | ") == text.splitlines()[0].count(" | ")
    assert "| 25.0x | 4.8x |" in row
    assert "2 Mbit/s up, 10 Mbit/s down" in text and "not reached" in text
    assert "| -1.00 [-1.00, -1.00] | 0.001 | 3.9x |" in text  # vs uplink-only
    names = {p.name for p in paths}
    assert {
        "results.csv",
        "summary.md",
        "accuracy_vs_uplink.png",
        "accuracy_vs_total.png",
        "accuracy_vs_round.png",
        "accuracy_vs_time.png",
        "paired_difference.png",
        "frontier.png",
        "bytes_to_target.png",
    } == names
    for path in paths:
        if path.suffix == ".png":
            _assert_png(path)
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == both["label"]]
    assert [int(r["cumulative_total_bytes"]) for r in rows[:4]] == [0, 1040, 2080, 3120]
    assert rows[1]["downlink"] == "bits=8 codec=eden mode=model"
    # round 1: slowest client 0.75 + 0.0 or 0.5 + 0.25 s, server 0.5 s, 20 + 500 B
    assert float(rows[1]["simulated_time_s"]) == pytest.approx(
        1.25 + 8 * 20 / 2e6 + 8 * 500 / 10e6
    )


def test_paired_runs_share_their_measured_training_times() -> None:
    base = RunConfig(task="digits", rounds=2, num_clients=4, clients_per_round=2)
    docs = [
        _seeded_doc(dataclasses.replace(base, codec=codec), 0.5)
        for codec in ("fp32", "fp16", "drive")
    ] + [_seeded_doc(dataclasses.replace(base, seed=1), 0.5)]
    for doc, slow in zip(docs, (1.0, 3.0, 2.0, 9.0), strict=True):
        for r in doc["rounds"][1:]:
            r["train_cpu_s"] = [slow, 0.25]
    shared = shared_training_times(docs)
    # the same seed, round and partition: the median of the three settings
    for doc in shared[:3]:
        assert [r["train_cpu_s"] for r in doc["rounds"]] == [
            [],
            [2.0, 0.25],
            [2.0, 0.25],
        ]
    assert shared[3]["rounds"][1]["train_cpu_s"] == [9.0, 0.25]  # another seed
    assert docs[0]["rounds"][1]["train_cpu_s"] == [1.0, 0.25]  # inputs unchanged
    assert shared[1]["rounds"][1]["codec_cpu_s"] == docs[1]["rounds"][1]["codec_cpu_s"]


def _assert_png(path: Path) -> None:
    """A PNG file that decodes to an image of a sensible size."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 200 and image.shape[1] >= 500, (path, image.shape)


def test_run_configs_reach_flwr_run_as_toml_values() -> None:
    cfg = dataclasses.replace(
        preset_configs("paper")[-1],
        codec="eden",
        codec_params={"bits": 0.5, "rotations": "auto"},
        error_feedback=True,
    )
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in cfg.to_run_config().items())
    # the parser `flwr run --run-config` uses
    assert RunConfig.from_run_config(parse_config_args([overrides])) == cfg
    assert toml_value(True) == "true" and toml_value(0.05) == "0.05"
    with pytest.raises(ValueError, match="quote"):
        toml_value("it's")


def test_task_and_seed_filters_select_runs_of_a_preset() -> None:
    shakespeare = preset_configs("shakespeare", task="shakespeare", rounds=3)
    assert shakespeare and {c.task for c in shakespeare} == {"shakespeare"}
    assert {c.rounds for c in shakespeare} == {3}
    assert preset_configs("smoke", task="shakespeare") == []
    assert preset_configs("paper", task="shakespeare") == []
    sub_bit = preset_configs("frontier", settings=["eden bits=0.0*"])
    assert {c.label for c in sub_bit} == {"eden bits=0.02", "eden bits=0.05"}
    assert {c.seed for c in sub_bit} == {0, 1, 2}
    both = preset_configs("frontier", settings=["fp32", "eden bits=0.05"], seeds=[1])
    assert [c.label for c in both] == ["fp32", "eden bits=0.05"]
    assert preset_configs("default", settings=["nothing*"]) == []
    first = preset_configs("default", seeds=[0])
    assert first == [c for c in preset_configs("default") if c.seed == 0]
    assert len(first) == len(preset_configs("default")) // 3


def test_run_ids_are_stable_and_distinct() -> None:
    for name in PRESETS:
        configs = preset_configs(name)
        assert len({c.run_id for c in configs}) == len(configs), name
    assert preset_configs("default")[0].run_id == preset_configs("default")[0].run_id
    # the frontier holds the default's runs, so one --out directory serves both
    default = {c.run_id for c in preset_configs("default")}
    assert default < {c.run_id for c in preset_configs("frontier")}
    assert len({c.seed for c in preset_configs("default")}) >= 3


def test_dirichlet_partition_covers_every_example_once() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 20, 0.5, seed=3)
    merged = np.sort(np.concatenate(parts))
    assert np.array_equal(merged, np.arange(1000)) and min(len(p) for p in parts) >= 10
    again = dirichlet_partition(labels, 20, 0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_cli_fails_fast_on_bad_options(tmp_path: Path) -> None:
    for args in (
        ["--preset", "nope", "--out", str(tmp_path)],
        ["--preset", "smoke"],
        ["--preset", "smoke", "--out", str(tmp_path), "--rounds", "0"],
        ["--preset", "smoke", "--out", str(tmp_path), "--bogus"],
        ["--preset", "smoke", "--out", str(tmp_path), "--task", "mnist"],
        ["--preset", "smoke", "--out", str(tmp_path), "--seeds", "zero"],
        ["--preset", "smoke", "--out", str(tmp_path), "--seeds", "7"],
        ["--preset", "smoke", "--out", str(tmp_path), "--uplink-mbps", "0"],
        ["--preset", "smoke", "--out", str(tmp_path), "--target-accuracy", "80"],
        ["--preset", "smoke", "--out", str(tmp_path), "--task", "shakespeare"],
        ["--preset", "smoke", "--out", str(ROOT / "simulations" / "results")],
    ):
        out = _simulations(*args, timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert "error:" in out.stderr


def _processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds ``entry`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_after_first_run(out: Path) -> dict[str, bytes]:
    """Start the smoke sweep, SIGTERM it once a run finished; the records left."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "simulations", "--preset", "smoke", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = out / "runs"
    deadline = time.monotonic() + 600
    while not list(runs.glob("*.json")) and time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before finishing a run"
        time.sleep(1)
    sweep.terminate()
    assert sweep.wait(timeout=120) != 0
    # the SuperLink the sweep started (and everything under it) went with it
    home = f"FLWR_HOME={(out / '.flwr').resolve()}"
    # Ray's ClientApp actors exit on their own once the raylet is gone: 12 s on this
    # 2-core machine at load 9, over 30 s at times, so allow two minutes
    deadline = time.monotonic() + 120
    while _processes_with_env(home) and time.monotonic() < deadline:
        time.sleep(1)
    assert _processes_with_env(home) == []
    # records are complete files only; a batch's ServerApp may finish a run of its
    # batch while it winds down, so the finished set is read once everything exited
    finished = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert finished and not list(runs.glob("*.tmp"))
    return finished


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path: Path) -> None:
    finished = _kill_after_first_run(tmp_path)
    out = _simulations("--preset", "smoke", "--out", str(tmp_path), timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # the killed sweep's finished run was kept, not re-run
    assert f"{len(finished)} already finished" in out.stdout
    kept = {p.name: p.read_bytes() for p in (tmp_path / "runs").glob("*.json")}
    assert kept.items() >= finished.items()
    runs = sorted((tmp_path / "runs").glob("*.json"))
    configs = preset_configs("smoke")
    assert len(runs) == len(configs)
    for path in runs:
        doc = json.loads(path.read_text())
        assert (
            doc["config"]["task"] == "digits" and doc["environment"]["flwr"] == "1.41.0"
        )
        assert len(doc["rounds"]) == doc["config"]["rounds"] + 1
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(c.rounds + 1 for c in configs)
    series_of: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        series_of.setdefault((row["model"], row["label"]), []).append(row)
    assert set(series_of) == {(c.model, c.label) for c in configs}
    for key, series in series_of.items():
        cum = [int(r["cumulative_uplink_bytes"]) for r in series]
        assert all(b > a for a, b in zip(cum[1:], cum[2:], strict=False)), key
        assert all(int(r["failed_replies"]) == 0 for r in series), key
        assert all(r["failed_by_reason"] == "" for r in series), key
        losses = [float(r["loss"]) for r in series]
        assert all(np.isfinite(losses)) and len(set(losses)) == len(losses), key
        assert float(series[-1]["accuracy"]) > float(series[0]["accuracy"]), key
    for model in ("digits-mlp", "digits-bn-mlp"):
        total = {
            label: int(s[-1]["cumulative_uplink_bytes"])
            for (m, label), s in series_of.items()
            if m == model
        }
        assert total["fp32"] > 5 * total["eden bits=1"], model
    for name in ("accuracy_vs_uplink.png", "accuracy_vs_round.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    summary = (tmp_path / "summary.md").read_text()
    assert "| digits | fp32 |" in summary
    assert "| digits (digits-bn-mlp) | eden bits=1 |" in summary
    # a third invocation finds every run finished and only rebuilds the reports
    again = _simulations("--preset", "smoke", "--out", str(tmp_path), timeout=300)
    assert again.returncode == 0 and "0 to run" in again.stdout
