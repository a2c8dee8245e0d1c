"""ClientApp: the only fedrot line is ``mods=[compression_mod]``.

For the fault tests, with a ``control-dir`` in the run config each train call
writes ``train-p<partition>-r<round>.json`` (node id, time) there when it starts,
and the ClientApp of partition ``hold-partition`` sleeps ``hold-seconds`` in round
``hold-round`` before training, so a test can stop its SuperNode mid-round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrot.clients import compression_mod

from .task import evaluate, load_data, make_model, train

torch.set_num_threads(1)
app = ClientApp(mods=[compression_mod])


def _model(msg: Message, context: Context) -> torch.nn.Module:
    model = make_model(int(context.run_config.get("hidden", 32)))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


def _fault_hooks(msg: Message, context: Context, partition: int) -> None:
    control_dir = str(context.run_config.get("control-dir", ""))
    if not control_dir:
        return
    server_round = int(msg.content["config"]["server-round"])
    marker = Path(control_dir) / f"train-p{partition}-r{server_round}.json"
    marker.write_text(json.dumps({"node": context.node_id, "time": time.time()}))
    hold = (
        int(context.run_config.get("hold-partition", -1)),
        int(context.run_config.get("hold-round", 0)),
    )
    if hold == (partition, server_round):
        time.sleep(float(context.run_config.get("hold-seconds", 0.0)))


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    _fault_hooks(msg, context, partition)
    model = _model(msg, context)
    x, y = load_data(partition)
    loss = train(model, x, y, float(msg.content["config"]["lr"]))
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"train-loss": loss, "num-examples": len(x)}),
            }
        ),
        reply_to=msg,
    )


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    model = _model(msg, context)
    x, y = load_data(int(context.node_config["partition-id"]))
    loss, acc = evaluate(model, x, y)
    metrics = MetricRecord({"eval-loss": loss, "eval-acc": acc, "num-examples": len(x)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
