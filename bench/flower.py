"""Per-round costs of the Flower integration (no Ray, no network).

* client mod: one train reply end to end (flatten, delta, encode, payload record);
* server wrapper: ``configure_train`` + ``aggregate_train`` for ``n`` replies, with
  and without ``count_bytes`` (the serialization that byte counting costs);
* broadcasts: ``configure_train`` with ``downlink=`` for ``n`` nodes: the encode
  happens once per round (model mode) or once per round plus a catch-up plan per
  node (delta mode), not once per node.

Every time is also given as a ratio to one elementwise pass over ``d`` float32
values in the same process (see ``bench.run``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _model(d: int, seed: int = 0) -> Any:
    """An ArrayRecord of ~d float32 parameters in 4 arrays plus a BatchNorm buffer."""
    from flwr.app import Array, ArrayRecord

    rng = np.random.default_rng(seed)
    rows = d // 1024
    arrays = {
        "conv.weight": rng.standard_normal((rows // 2, 1024)).astype(np.float32),
        "fc.weight": rng.standard_normal((rows - rows // 2, 1024)).astype(np.float32),
        "fc.bias": rng.standard_normal(1024).astype(np.float32),
        "bn.running_var": np.ones(1024, np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _client(msg: Any, local: Any) -> Any:
    """The client mod around a ClientApp that returns ``local``."""
    from flwr.app import Message, MetricRecord, RecordDict

    from fedrot.clients import compression_mod

    sys.path.insert(0, str(ROOT / "tests"))
    from flower_factories import make_context

    def call_next(m: Any, c: Any) -> Any:
        metrics = MetricRecord({"num-examples": 10})
        return Message(RecordDict({"arrays": local, "metrics": metrics}), reply_to=m)

    return compression_mod(msg, make_context(msg.metadata.dst_node_id), call_next)


def _replies(strategy: Any, arrays: Any, grid: Any) -> list[Any]:
    from flwr.app import ConfigRecord

    sys.path.insert(0, str(ROOT / "tests"))
    from flower_factories import perturb

    msgs = strategy.configure_train(1, arrays, ConfigRecord({"lr": 0.1}), grid)
    return [
        _client(msg, perturb(arrays, seed=i + 1, step=0.01))
        for i, msg in enumerate(msgs)
    ]


def bench_flower(d: int, n: int, reps: int) -> list[dict[str, Any]]:
    """Rows for the client mod, the server wrapper and compressed broadcasts."""
    from flwr.app import ConfigRecord
    from flwr.serverapp.strategy import FedAvg

    sys.path.insert(0, str(ROOT / "tests"))
    from flower_factories import FakeGrid, set_task_identity

    from fedrot.strategies import CompressedStrategy

    from .measure import _print_row, median_time, pass_time

    set_task_identity()
    arrays = _model(d)
    d_real = sum(a.numpy().size for a in arrays.values())
    t_pass = pass_time(d_real, reps)
    grid = FakeGrid(range(100, 100 + n))
    rows: list[dict[str, Any]] = []

    def row(what: str, seconds: float, **extra: Any) -> None:
        rows.append(
            {
                "what": what,
                "params": d_real,
                "nodes": n,
                "ms": seconds * 1e3,
                "x_pass": seconds / t_pass,
                **extra,
            }
        )
        _print_row(rows[-1])

    # client mod, one reply: flatten, delta, encode, payload record
    from flower_factories import perturb

    strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1, count_bytes=False)
    msg = next(iter(strategy.configure_train(1, arrays, ConfigRecord(), grid)))
    local = perturb(arrays, seed=1, step=0.01)
    row(
        "client mod: one train reply (eden 1b)",
        median_time(lambda: _client(msg, local), reps=reps),
    )

    # server wrapper, per round, with and without byte counting
    for count in (False, True):
        strategy = CompressedStrategy(FedAvg(), codec="eden", bits=1, count_bytes=count)
        replies = _replies(strategy, arrays, grid)

        def server_round(s: Any = strategy, r: Any = replies) -> None:
            s.configure_train(1, arrays, ConfigRecord({"lr": 0.1}), grid)
            s.aggregate_train(1, r)

        row(
            f"server round (eden 1b), count_bytes={count}",
            median_time(server_round, reps=reps),
        )

    # broadcasts: the downlink encode happens once per round, not once per node
    for mode, bits in (("model", 8), ("delta", 2)):
        strategy = CompressedStrategy(
            FedAvg(),
            codec="eden",
            bits=1,
            count_bytes=False,
            downlink={"codec": "eden", "bits": bits, "mode": mode},
        )

        def broadcast(s: Any = strategy, step: list[int] = [0]) -> None:  # noqa: B006
            step[0] += 1  # a new global model every call: one encode each
            moved = _model(d, seed=step[0])
            s.configure_train(step[0], moved, ConfigRecord({"lr": 0.1}), grid)

        t = median_time(broadcast, reps=reps)
        t_model = median_time(lambda: _model(d, seed=0), reps=reps)
        row(f"broadcast {mode} mode (eden {bits}b), per round", t - t_model)

    for bits in (1, 8):
        row(
            f"one eden {bits}b encode of the model (reference)",
            _encode_time(d_real, bits, reps),
        )
    return rows


def _encode_time(d: int, bits: int, reps: int) -> float:
    """Median time of one EDEN ``bits``-bit encode of ``d`` float32 values."""
    import torch

    from fedrot import get_codec

    from .measure import median_time

    x = torch.randn(d)
    codec = get_codec("eden", bits=bits)
    return median_time(lambda: codec.encode(x, seed=1, client=2), reps=reps)


if __name__ == "__main__":  # pragma: no cover - manual run
    t0 = time.time()
    bench_flower(1 << 20, 10, 5)
    print(f"{time.time() - t0:.1f} s")
