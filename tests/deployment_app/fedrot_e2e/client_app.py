"""ClientApp: the only fedrot line is ``mods=[compression_mod]``."""

from __future__ import annotations

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


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    model = _model(msg, context)
    x, y = load_data(int(context.node_config["partition-id"]))
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
