"""ClientApp: local SGD on this node's partition; ``compression_mod`` compresses it.

All training settings arrive in the train ConfigRecord from the server (the single
source of truth); the partition id comes from the node config.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrot.clients import compression_mod

from .data import client_data
from .models import make_model
from .training import train

app = ClientApp()


@app.train(mods=[compression_mod])
def train_fn(msg: Message, context: Context) -> Message:
    """Train the received global model for ``local-epochs`` on the local data."""
    torch.set_num_threads(1)
    cfg = msg.content["config"]
    task = str(cfg["task"])
    partition = int(context.node_config["partition-id"])
    if partition >= int(cfg["num-clients"]):
        raise ValueError(
            f"SuperNode partition {partition} does not exist: `num-clients` is "
            f"{cfg['num-clients']}. Set num-supernodes equal to num-clients."
        )
    x, y = client_data(
        task,
        partition,
        int(cfg["num-clients"]),
        float(cfg["alpha"]),
        int(cfg["partition-seed"]),
    )
    model = make_model(task, model=str(cfg["model"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train(
        model,
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        batch_size=int(cfg["batch-size"]),
        lr=float(cfg["lr"]),
        seed=int(cfg["server-round"]) * 100_003 + partition,
    )
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
    return Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
        reply_to=msg,
    )
