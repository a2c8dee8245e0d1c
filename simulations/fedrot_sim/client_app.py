"""ClientApp: local SGD on the partition the server names, compressed by fedrot.

All settings arrive in the train ConfigRecord from the server (the single source of
truth), including the partition to train on (see :mod:`fedrot_sim.sampling`).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrot.clients import compression_mod

from .data import client_data
from .models import make_model
from .sampling import KEY_PARTITION, local_seed
from .training import train

app = ClientApp()


@app.train(mods=[compression_mod])
def train_fn(msg: Message, context: Context) -> Message:
    """Train the received global model for ``local-epochs`` on the named partition."""
    torch.set_num_threads(1)
    cfg = msg.content["config"]
    task = str(cfg["task"])
    num_clients = int(cfg["num-clients"])
    partition = int(cfg[KEY_PARTITION])
    if not 0 <= partition < num_clients:
        raise ValueError(
            f"Partition {partition} does not exist: `num-clients` is {num_clients}."
        )
    seed = int(cfg["seed"])
    x, y = client_data(task, partition, num_clients, float(cfg["alpha"]), seed)
    model = make_model(task, model=str(cfg["model"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train(
        model,
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        batch_size=int(cfg["batch-size"]),
        lr=float(cfg["lr"]),
        seed=local_seed(seed, int(cfg["server-round"]), partition),
    )
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
    return Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
        reply_to=msg,
    )
