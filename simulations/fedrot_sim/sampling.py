"""Paired runs: each round's clients are partitions sampled with the run seed.

Flower's FedAvg samples *node ids*, and a simulation gives its SuperNodes new random
ids every run, so two runs of one seed (say fp32 and EDEN 1-bit) would train
different clients and their accuracy difference would be mostly sampling noise.
Here the server samples partition ids from ``(seed, round)`` alone, sends partition
``p`` to the ``p``-th SuperNode by id (naming the partition in the train message),
and aggregates the replies in partition order. For one seed every codec setting then
sees the same initial model, the same clients each round, the same batches (the
client derives its shuffling seed from run seed, round and partition) and the same
summation order; only the codec differs.

Several runs can share one federation (one ``flwr run``, see
:mod:`fedrot_sim.server_app`): run ``b`` of a batch uses the block of nodes ranked
``b * num_partitions`` to ``(b + 1) * num_partitions - 1``, so no node (and no
per-node state such as an error-feedback residual or a held model) is shared
between runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

#: Train-config key: the partition the receiving node trains on.
KEY_PARTITION = "partition-id"
#: How long to wait for enough SuperNodes to register before giving up.
NODE_WAIT_S = 600.0
#: Reply metrics: CPU seconds of the whole client step (set by
#: :func:`fedrot_sim.client_app.timing_mod`), of the ClientApp and of its training
#: loop alone.
KEY_CLIENT_CPU = "client-cpu-s"
KEY_APP_CPU = "app-cpu-s"
KEY_TRAIN_CPU = "train-cpu-s"
#: Reply metric: 1 when the client's local training diverged (non-finite weights)
#: and it sent back the model it received.
KEY_DIVERGED = "diverged"


def sample_partitions(seed: int, server_round: int, num: int, k: int) -> list[int]:
    """``k`` distinct partitions of ``0..num-1`` for a round, sorted.

    A function of ``(seed, server_round)`` only (numpy ``SeedSequence``), so every
    run of one seed trains the same clients in the same round.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, server_round]))
    return sorted(int(p) for p in rng.choice(num, size=k, replace=False))


def local_seed(seed: int, server_round: int, partition: int) -> int:
    """The seed of a client's local randomness (batch order) in a round."""
    state = np.random.SeedSequence([seed, server_round, partition]).generate_state(1)
    return int(state[0])


class PartitionSampledFedAvg(FedAvg):
    """FedAvg that trains ``per_round`` partitions sampled with the run seed.

    Only ``configure_train`` (which nodes, and the partition each trains) and the
    order of the replies in ``aggregate_train`` differ from FedAvg; ``partitions``
    records each round's sample, ``client_times`` each round's measured CPU seconds
    per partition, ``(training, codec)``: the training loop, and the client step
    outside the ClientApp (broadcast decoding and update encoding), from the reply
    metrics; ``diverged`` the number of clients per round whose local training
    diverged.
    ``node_block`` picks the block of nodes of a run that shares its federation
    with others (block ``b``: nodes ranked ``b * num_partitions`` onwards).
    """

    def __init__(
        self, *, num_partitions: int, per_round: int, seed: int, node_block: int = 0
    ) -> None:
        if not 1 <= per_round <= num_partitions:
            raise ValueError(
                f"`per_round` must be in 1..num_partitions ({num_partitions}). "
                f"Found {per_round}."
            )
        if isinstance(node_block, bool) or not isinstance(node_block, int):
            raise TypeError(f"`node_block` must be an int. Found {node_block!r}.")
        if node_block < 0:
            raise ValueError(f"`node_block` must be >= 0. Found {node_block}.")
        super().__init__(
            fraction_train=per_round / num_partitions,
            fraction_evaluate=0.0,
            min_train_nodes=per_round,
            min_available_nodes=num_partitions,
        )
        self.num_partitions = num_partitions
        self.per_round = per_round
        self.seed = seed
        self.node_block = node_block
        self.partitions: dict[int, list[int]] = {}
        self.client_times: dict[int, dict[int, tuple[float, float]]] = {}
        self.diverged: dict[int, int] = {}
        self._partition_of: dict[int, int] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled partition ``p``, to the ``p``-th node by id.

        A partition always goes to the same node within a run, so per-client state
        kept on the node (fedrot's error-feedback residual) stays with its client.
        """
        parts = sample_partitions(
            self.seed, server_round, self.num_partitions, self.per_round
        )
        first = self.node_block * self.num_partitions
        ranked = _wait_for_nodes(grid, first + self.num_partitions)
        nodes = [ranked[first + p] for p in parts]
        log(INFO, "configure_train: partitions %s", parts)
        self.partitions[server_round] = parts
        self._partition_of = dict(zip(nodes, parts, strict=True))
        messages = []
        for node, part in zip(nodes, parts, strict=True):
            cfg = ConfigRecord(dict(config.items()))
            cfg["server-round"] = server_round
            cfg[KEY_PARTITION] = part
            content = RecordDict(
                {self.arrayrecord_key: arrays, self.configrecord_key: cfg}
            )
            messages.append(
                Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg over the replies sorted by partition (a fixed summation order).

        Also records each reply's measured CPU times in ``client_times``.
        """
        ordered = sorted(
            replies,
            key=lambda m: self._partition_of.get(
                m.metadata.src_node_id, self.num_partitions
            ),
        )
        times = self.client_times.setdefault(server_round, {})
        self.diverged[server_round] = 0
        for msg in ordered:
            part = self._partition_of.get(msg.metadata.src_node_id)
            if part is None or not msg.has_content():
                continue
            for metrics in msg.content.metric_records.values():
                if all(
                    k in metrics for k in (KEY_CLIENT_CPU, KEY_APP_CPU, KEY_TRAIN_CPU)
                ):
                    client, app, train = (
                        float(metrics[k])
                        for k in (KEY_CLIENT_CPU, KEY_APP_CPU, KEY_TRAIN_CPU)
                    )
                    times[part] = (train, max(0.0, client - app))
                self.diverged[server_round] += int(metrics.get(KEY_DIVERGED, 0))
        return super().aggregate_train(server_round, ordered)


def _wait_for_nodes(grid: Grid, count: int) -> list[int]:
    """Sorted node ids once at least ``count`` SuperNodes are registered."""
    deadline = time.monotonic() + NODE_WAIT_S
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Only {len(nodes)} SuperNodes registered within {NODE_WAIT_S:.0f} s; "
                f"{count} are needed, one per partition of each run of the batch. "
                "Start `num-clients` SuperNodes per run."
            )
        time.sleep(0.5)
    return nodes
