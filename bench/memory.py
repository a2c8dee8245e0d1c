"""Server memory under load: one round of many compressed replies of a large model.

For each codec (EDEN 1-bit, QUIC-FL 2-bit) the script builds ``replies`` train
replies of a ``params``-parameter float32 model the way a deployment does (each
local model through :data:`fedrot.clients.compression_mod`, so every reply holds one
payload, its few exact arrays and its metrics), then aggregates them twice:

* ``strategy``: ``CompressedStrategy(FedAvg()).aggregate_train`` (the fast path: one
  ``codec.aggregate`` call, then FedAvg over replies that all share the mean);
* ``codec.aggregate``: the codec's weighted mean of the payloads alone.

It reports the growth of the process's resident-set high-water mark during each
call (Linux ``/proc/self/clear_refs``, after a garbage collection and
``malloc_trim``, see ``bench.measure.peak_extra_bytes``) as a multiple of one fp32 model
plus the payloads (the target of issue 15 is at most 3) and of one fp32 model alone.
The payloads are already in memory before the call, so the growth counts only what
aggregation allocates. Each aggregate is checked (no failed reply; the strategy's
model equals the global model plus the codec's mean).

Run from the repository root::

    .venv/bin/python -m bench.memory                    # 200 replies, 10**7 params
    .venv/bin/python -m bench.memory --replies 20 --params 1000000
    .venv/bin/python -m bench --only memory --quick     # as a section of the suite
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: The codecs of the issue: (name, parameters).
CODECS: list[tuple[str, dict[str, Any]]] = [
    ("eden", {"bits": 1}),
    ("quic-fl", {"bits": 2}),
]

#: Exact (uncompressed) arrays of the model: a BatchNorm buffer and its counter.
_EXACT = 1024


def _model(d: int) -> Any:
    """An ArrayRecord of exactly ``d`` float32 parameters in three arrays, plus a
    BatchNorm running variance and counter that travel exactly."""
    from flwr.app import Array, ArrayRecord

    if d < 4:
        raise ValueError(f"`params` must be at least 4. Found {d}.")
    rng = np.random.default_rng(0)
    bias = min(1000, d // 4)
    sizes = {"encoder.weight": d // 2, "head.weight": d - d // 2 - bias}
    sizes["head.bias"] = bias
    arrays = {k: rng.standard_normal(n, dtype=np.float32) for k, n in sizes.items()}
    arrays["bn.running_var"] = np.ones(_EXACT, np.float32)
    arrays["bn.num_batches_tracked"] = np.array(7, dtype=np.int64)
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _local(global_arrays: Any, noise: np.ndarray, node: int) -> Any:
    """The model a client returns: the global float arrays moved by a client-specific
    shift of ``noise`` (``0.01 * roll(noise, 7919 * node)``), the counter plus one."""
    from flwr.app import Array, ArrayRecord

    out = {}
    start = 0
    step = np.roll(noise, 7919 * node)
    for key, arr in global_arrays.items():
        a = arr.numpy()
        if a.dtype == np.float32 and key != "bn.running_var":
            out[key] = a + 0.01 * step[start : start + a.size].reshape(a.shape)
            start += a.size
        else:
            out[key] = a + 1 if a.dtype == np.int64 else a
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in out.items()})


def _replies(strategy: Any, arrays: Any, n: int) -> tuple[list[Any], float]:
    """``n`` train replies through the client mod, and the seconds they took."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    from fedrot.clients import compression_mod

    sys.path.insert(0, str(ROOT / "tests"))
    from flower_factories import FakeGrid, make_context

    grid = FakeGrid(range(100, 100 + n))
    messages = list(
        strategy.configure_train(1, arrays, ConfigRecord({"lr": 0.1}), grid)
    )
    d = sum(a.numpy().size for a in arrays.values())
    noise = np.random.default_rng(1).standard_normal(d, dtype=np.float32)
    replies = []
    start = time.perf_counter()
    for i, msg in enumerate(messages):
        node = msg.metadata.dst_node_id
        local = _local(arrays, noise, node)
        metrics = MetricRecord({"num-examples": 10 + i % 7})

        def train(m: Any, _: Any, local: Any = local, metrics: Any = metrics) -> Any:
            return Message(
                RecordDict({"arrays": local, "metrics": metrics}), reply_to=m
            )

        replies.append(compression_mod(msg, make_context(node), train))
    return replies, time.perf_counter() - start


def _payloads(replies: list[Any]) -> tuple[list[bytes], list[int], list[float]]:
    """Payload bytes, node ids and num-examples of the replies."""
    from fedrot.records import split_reply

    blobs, nodes, weights = [], [], []
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"the client mod failed: {reply.error.reason}")
        record = next(iter(reply.content.array_records.values()))
        payload, _ = split_reply(record)
        if payload is None:
            raise RuntimeError("a reply carries no fedrot payload")
        blobs.append(payload.data)
        nodes.append(reply.metadata.src_node_id)
        metrics = next(iter(reply.content.metric_records.values()))
        weights.append(float(metrics["num-examples"]))
    return blobs, nodes, weights


def _rss_bytes() -> int | None:
    from .measure import _status_kb

    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def _peak(fn: Any) -> tuple[int | None, float, Any]:
    """(growth of the resident-set high-water mark, seconds, result) of ``fn()``.

    The result stays referenced until the high-water mark is read: the server holds
    its aggregate too.
    """

    from .measure import peak_extra_bytes

    out: list[Any] = []

    def call() -> None:
        t = time.perf_counter()
        out.append(fn())
        out.append(time.perf_counter() - t)

    grown = peak_extra_bytes(call)
    return grown, out[1], out[0]


def _round(strategy: Any, arrays: Any, n: int) -> dict[str, Any]:
    """Build one round's replies, aggregate them both ways, check, and measure."""
    import fedrot
    from fedrot.constants import METRIC_FAILED_REPLIES

    replies, build_s = _replies(strategy, arrays, n)
    blobs, nodes, weights = _payloads(replies)
    codec, seed = strategy.codec, fedrot.round_seed(0, 1)
    # warm-up on two replies: tables, thread pools, first allocations
    codec.aggregate(blobs[:2], seed=seed, clients=nodes[:2], weights=weights[:2])
    strategy.aggregate_train(1, replies[:2])
    rss_before = _rss_bytes()

    direct_grown, direct_s, mean = _peak(
        lambda: codec.aggregate(blobs, seed=seed, clients=nodes, weights=weights)
    )
    mean = mean.numpy()
    served_grown, served_s, (new_arrays, metrics) = _peak(
        lambda: strategy.aggregate_train(1, replies)
    )
    failed = int(metrics[METRIC_FAILED_REPLIES])
    if failed:
        raise RuntimeError(f"{failed} of {n} replies failed on the server")
    keys = [k for k in arrays if not k.startswith("bn.")]
    got = np.concatenate([new_arrays[k].numpy().ravel() for k in keys])
    want = np.concatenate([arrays[k].numpy().ravel() for k in keys]) + mean
    err = float(np.abs(got - want).max() / np.abs(want).max())
    if not err < 1e-5:
        raise RuntimeError(f"the strategy's model is not global + mean: {err:.3g}")
    return {
        "build_s": build_s,
        "payload_bytes": sum(len(b) for b in blobs),
        "strategy": (served_grown, served_s),
        "codec.aggregate": (direct_grown, direct_s),
        "rss_before": rss_before,
    }


def bench_memory(d: int, n: int) -> list[dict[str, Any]]:
    """Rows for each codec and path: peak growth during one round's aggregation."""
    from flwr.serverapp.strategy import FedAvg

    from fedrot.strategies import CompressedStrategy

    from .measure import _print_row, _ratio

    sys.path.insert(0, str(ROOT / "tests"))
    from flower_factories import set_task_identity

    set_task_identity()
    arrays = _model(d)
    model_bytes = sum(a.numpy().nbytes for a in arrays.values())
    rows: list[dict[str, Any]] = []
    for name, params in CODECS:
        strategy = CompressedStrategy(FedAvg(), codec=name, seed=0, **params)
        result = _round(strategy, arrays, n)
        payload_bytes = result["payload_bytes"]
        for path in ("strategy", "codec.aggregate"):
            grown, seconds = result[path]
            rows.append(
                {
                    "codec": repr(strategy.codec),
                    "path": path,
                    "replies": n,
                    "params": d,
                    "model_MB": model_bytes / 1e6,
                    "payloads_MB": payload_bytes / 1e6,
                    "build_s": result["build_s"],
                    "aggregate_s": seconds,
                    "rss_before_MB": (result["rss_before"] or 0) / 1e6,
                    "peak_growth_MB": None if grown is None else grown / 1e6,
                    "x_model_plus_payloads": _ratio(grown, model_bytes + payload_bytes),
                    "x_model": _ratio(grown, model_bytes),
                }
            )
            _print_row(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure and print one table; optionally write the rows as JSON."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.memory", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--params", type=int, default=10**7, help="model parameters")
    ap.add_argument("--replies", type=int, default=200, help="replies in the round")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--out", default=None, help="write the rows to this JSON file")
    args = ap.parse_args(argv)
    if args.replies < 2:
        ap.error(f"--replies must be at least 2. Found {args.replies}.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .measure import machine, markdown

    info = machine()
    start = time.perf_counter()
    rows = bench_memory(args.params, args.replies)
    print("\n" + markdown(rows))
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
