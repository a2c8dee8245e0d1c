"""Ray-free factories for the Flower tests: messages, a fake and a local Grid.

Not a test module: ``tests/strategies`` and ``tests/clients`` import these helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

NODE_IDS = (11, 2**63 + 5, 7_000_000_123)


def set_task_identity() -> None:
    """Instruction Messages need a run id outside a running app (internal API)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


class FakeGrid(Grid):
    """A Grid that only knows its node ids (enough for ``configure_*``)."""

    def __init__(self, node_ids: Iterable[int] = NODE_IDS) -> None:
        self._nodes = list(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def set_run(self, run_id: int) -> None:  # pragma: no cover - unused
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover - unused
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def push_messages(self, messages):  # pragma: no cover - unused
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover - unused
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover
        raise NotImplementedError


class LocalGrid(FakeGrid):
    """An in-process Grid: every instruction runs through ``client_app`` at once.

    Each node keeps its own ``Context`` (so ``context.state`` persists across rounds),
    and an exception in the ClientApp becomes an error reply, as in Flower's runtime.
    """

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        n: int,
        run_config: dict | None = None,
    ) -> None:
        super().__init__(NODE_IDS[:n] if n <= len(NODE_IDS) else range(100, 100 + n))
        self.client_app = client_app
        self.contexts = {
            node: make_context(node, partition=i, partitions=n, run_config=run_config)
            for i, node in enumerate(self._nodes)
        }

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            ctxt = self.contexts[msg.metadata.dst_node_id]
            try:
                replies.append(self.client_app(msg, ctxt))
            except Exception as exc:  # noqa: BLE001 - mirrors Flower's runtime
                replies.append(
                    Message(
                        Error(
                            code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(exc)
                        ),
                        reply_to=msg,
                    )
                )
        return replies


def make_context(
    node_id: int,
    partition: int = 0,
    partitions: int = 1,
    run_config: dict | None = None,
) -> Context:
    """A fresh per-node Context."""
    return Context(
        run_id=1,
        node_id=node_id,
        node_config={"partition-id": partition, "num-partitions": partitions},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )


def make_arrays(seed: int, *, buffer: bool = True, scale: float = 1.0) -> ArrayRecord:
    """A small model: float32 weight/bias, a float16 array and an int64 counter."""
    rng = np.random.default_rng(seed)
    arrays = {
        "fc.weight": (scale * rng.standard_normal((40, 64))).astype(np.float32),
        "fc.bias": (scale * rng.standard_normal(40)).astype(np.float32),
        "head.weight": (scale * rng.standard_normal((3, 40))).astype(np.float16),
    }
    if buffer:
        arrays["bn.num_batches_tracked"] = np.array(seed, dtype=np.int64)
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def perturb(arrays: ArrayRecord, seed: int, step: float = 0.1) -> ArrayRecord:
    """``arrays`` moved by a random step (floats) and with counters incremented."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, arr in arrays.items():
        a = arr.numpy()
        if np.issubdtype(a.dtype, np.floating):
            out[key] = (a + step * rng.standard_normal(a.shape)).astype(a.dtype)
        else:
            out[key] = a + 1
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in out.items()})


def train_reply(
    msg: Message, local: ArrayRecord, num_examples: float, **metrics: float
) -> Message:
    """The reply a ClientApp returns: ``{"arrays": local, "metrics": {...}}``."""
    return Message(
        RecordDict(
            {
                "arrays": local,
                "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
            }
        ),
        reply_to=msg,
    )


def instruction(
    node_id: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    message_type: str = MessageType.TRAIN,
) -> Message:
    """A train (or other) instruction to ``node_id``."""
    return Message(
        RecordDict({"arrays": arrays, "config": config}),
        dst_node_id=node_id,
        message_type=message_type,
    )


def as_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The record's arrays as numpy, by key."""
    return {k: a.numpy() for k, a in record.items()}
