"""Batches: several runs in one ``flwr run`` (one Ray start-up, one data load).

The sweep writes a batch file (a JSON list of run configs) and passes its path as
the run-config key ``runs-file``; the ServerApp runs the configs one after the other
in the same federation, run ``b`` on the ``b``-th block of ``num_clients`` SuperNodes
(see :mod:`fedrot_sim.sampling`), and writes each run's record as it ends. This
module imports neither Flower nor torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .config import RunConfig

#: Log lines of the ServerApp that the sweep follows (``fedrot_sim.launcher``).
LOG_STARTED = "fedrot-sim: started run"
LOG_FINISHED = "fedrot-sim: finished run"
LOG_FAILED = "fedrot-sim: failed run"
#: Most SuperNodes in one federation. Flower 1.41's simulation engine polls its
#: message store for every node every 0.1 s, which costs CPU in proportion to the
#: nodes: with 2,400 nodes (24 runs of 100) that polling thread took as much CPU as
#: the whole ServerApp, central evaluation included. A batch start costs about 30
#: CPU-seconds (Ray, imports, data); 600 nodes (6 runs of 100) balance the two.
MAX_BATCH_NODES = 600


def plan_batches(
    configs: Iterable[RunConfig], *, max_nodes: int = MAX_BATCH_NODES
) -> list[list[RunConfig]]:
    """Split runs into batches of one ``num_clients`` and at most ``max_nodes``
    SuperNodes (at least one run each).

    Runs keep their order within a batch, and batches follow the order in which
    each ``num_clients`` first appears.
    """
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"`max_nodes` must be an int >= 1. Found {max_nodes!r}.")
    by_size: dict[int, list[RunConfig]] = {}
    for cfg in configs:
        by_size.setdefault(cfg.num_clients, []).append(cfg)
    batches = []
    for size, runs in by_size.items():
        step = max(1, max_nodes // size)
        batches += [runs[i : i + step] for i in range(0, len(runs), step)]
    return batches


def write_batch(path: Path, configs: list[RunConfig]) -> Path:
    """Write a batch file (the configs as JSON) for ``runs-file``.

    Raises
    ------
    ValueError
        If ``configs`` is empty or mixes federation sizes.
    """
    if not configs:
        raise ValueError("`configs` must hold at least one run. Found none.")
    sizes = {c.num_clients for c in configs}
    if len(sizes) > 1:
        raise ValueError(
            "The runs of a batch share one federation, so they must have the same "
            f"`num_clients`. Found {sorted(sizes)}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([c.to_dict() for c in configs]), encoding="utf-8")
    return path


def read_batch(path: Path) -> list[RunConfig]:
    """The configs of a batch file written by :func:`write_batch`.

    Raises
    ------
    ValueError
        If the file does not hold a non-empty list of configs of one size.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path} must hold a non-empty JSON list of run configs.")
    configs = [RunConfig.from_dict(d) for d in data]
    if len({c.num_clients for c in configs}) > 1:
        raise ValueError(
            f"The runs in {path} have different `num_clients`; a batch shares one "
            "federation."
        )
    return configs
