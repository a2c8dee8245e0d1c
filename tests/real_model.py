"""A model that looks like users' models, and a ClientApp that trains it (no Ray).

Not a test module: the end-to-end tests import these factories. The model has a
BatchNorm layer (float running statistics and an int64 ``num_batches_tracked``)
and one float64 parameter; the data is a fixed synthetic 10-class problem, split
over the nodes, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from flower_factories import LocalGrid
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrot.clients import compression_mod

FEATURES, CLASSES = 24, 6


class BNNet(torch.nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear, plus a float64 logit offset."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(FEATURES, hidden)
        self.bn = torch.nn.BatchNorm1d(hidden)
        self.head = torch.nn.Linear(hidden, CLASSES)
        self.offset = torch.nn.Parameter(torch.zeros(CLASSES, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.fc(x)))
        return self.head(h) + self.offset.float()


def make_model(seed: int = 0) -> BNNet:
    torch.manual_seed(seed)
    return BNNet()


def load_data(partition: int, partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A node's share of a fixed Gaussian-mixture problem (partition -1: test set)."""
    centers = np.random.default_rng(0).standard_normal((CLASSES, FEATURES)) * 1.5
    rng = np.random.default_rng(1000 + partition)
    n = 200 if partition < 0 else 120
    y = rng.integers(0, CLASSES, n)
    # each node sees a skewed but complete label mix, and its own feature offset
    x = centers[y] + rng.standard_normal((n, FEATURES)) + 0.3 * (partition % 3)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def train(model: BNNet, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.5)
    model.train()
    total = 0.0
    gen = torch.Generator().manual_seed(int(y.sum()))
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), 20):
        idx = order[i : i + 20]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(x)


def evaluate(model: BNNet, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = float(torch.nn.functional.cross_entropy(out, y))
        acc = float((out.argmax(1) == y).float().mean())
    return loss, acc


def make_client_app(*, mod: bool = True, after: list | None = None) -> ClientApp:
    """The ClientApp a user writes; ``mod`` adds fedrot's compression_mod first,
    ``after`` more mods behind it (they see what the ClientApp sees)."""
    app = ClientApp(mods=([compression_mod] if mod else []) + list(after or []))

    def _model(msg: Message) -> BNNet:
        model = make_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return model

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        model = _model(msg)
        x, y = load_data(
            int(context.node_config["partition-id"]),
            int(context.node_config["num-partitions"]),
        )
        loss = train(model, x, y, float(msg.content["config"]["lr"]))
        metrics = MetricRecord({"train-loss": loss, "num-examples": len(x)})
        return Message(
            RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
            reply_to=msg,
        )

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        model = _model(msg)
        x, y = load_data(
            int(context.node_config["partition-id"]),
            int(context.node_config["num-partitions"]),
        )
        loss, acc = evaluate(model, x, y)
        metrics = MetricRecord({"eval-loss": loss, "eval-acc": acc, "num-examples": 1})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


class RecordingGrid(LocalGrid):
    """A LocalGrid that keeps every instruction and reply, by message type."""

    def __init__(self, client_app: ClientApp, n: int) -> None:
        super().__init__(client_app, n)
        self.sent: list[Message] = []
        self.replies: list[Message] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        self.sent.extend(messages)
        self.replies.extend(replies)
        return replies

    def by_type(self, kind: str) -> tuple[list[Message], list[Message]]:
        """(instructions, replies) of one message type, in order."""
        sent = [m for m in self.sent if m.metadata.message_type.startswith(kind)]
        got = [m for m in self.replies if m.metadata.message_type.startswith(kind)]
        return sent, got


def is_finite(value: float) -> bool:
    return math.isfinite(float(value))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train like a simulated node (one thread each); restores the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
