"""ClientApp: local SGD on the partition the server names, compressed by fedrot.

All settings arrive in the train ConfigRecord from the server (the single source of
truth), including the partition to train on (see :mod:`fedrot_sim.sampling`).

Mods, outermost first: :func:`timing_mod` (measures the client's CPU seconds for
the time-to-accuracy model; it only adds one metric to the reply) and fedrot's
``compression_mod`` (rebuilds compressed broadcasts, compresses the reply). The
ClientApp reports its own CPU seconds and those of the training loop, so the codec's
share on the client is ``client-cpu-s - app-cpu-s``. A client whose local training
ends with non-finite weights (it started from a model that a codec's noise blew up)
sends back the model it received, a zero update, with the metric ``diverged`` = 1.
"""

from __future__ import annotations

import copy
import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from fedrot.clients import compression_mod

from .data import client_data
from .models import make_model
from .sampling import (
    KEY_APP_CPU,
    KEY_CLIENT_CPU,
    KEY_DIVERGED,
    KEY_PARTITION,
    KEY_TRAIN_CPU,
    local_seed,
)
from .training import train

app = ClientApp()
#: Models this process has already trained once (see :func:`_warm_up`).
_WARM: set[str] = set()


def _warm_up(
    name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> None:
    """Train a copy of ``model`` for two small batches, once per process and model.

    torch's first convolution or LSTM step in a process costs about a second of
    one-time set-up; without this it would land in the measured training time of
    whichever run first trains on this process.
    """
    if name in _WARM:
        return
    train(copy.deepcopy(model), x[:64], y[:64], epochs=1, batch_size=32, lr=0.0, seed=0)
    _WARM.add(name)


def timing_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Add the CPU seconds of everything inside it to the reply's metrics.

    That is broadcast decoding, the ClientApp and update encoding when it wraps
    ``compression_mod``; ``time.process_time`` counts this process only, so other
    jobs on a shared machine do not inflate it.
    """
    start = time.process_time()
    out = call_next(msg, ctxt)
    if out.has_content():
        for metrics in out.content.metric_records.values():
            metrics[KEY_CLIENT_CPU] = time.process_time() - start
    return out


@app.train(mods=[timing_mod, compression_mod])
def train_fn(msg: Message, context: Context) -> Message:
    """Train the received global model for ``local-epochs`` on the named partition."""
    torch.set_num_threads(1)
    app_start = time.process_time()
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
    received = msg.content["arrays"].to_torch_state_dict()
    model.load_state_dict(received)
    _warm_up(str(cfg["model"]), model, x, y)
    train_start = time.process_time()
    loss = train(
        model,
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        batch_size=int(cfg["batch-size"]),
        lr=float(cfg["lr"]),
        seed=local_seed(seed, int(cfg["server-round"]), partition),
    )
    train_end = time.process_time()
    state = model.state_dict()
    # diverged local training (a broadcast model blown up by a codec's noise): send
    # back the received model, a zero update, and say so, instead of weights the
    # client mod would refuse to encode
    diverged = not all(
        bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()
    )
    metrics = MetricRecord(
        {
            "train-loss": loss,
            "num-examples": len(y),
            KEY_TRAIN_CPU: train_end - train_start,
            KEY_DIVERGED: int(diverged),
        }
    )
    metrics[KEY_APP_CPU] = time.process_time() - app_start
    arrays = ArrayRecord(received if diverged else state)
    return Message(
        RecordDict({"arrays": arrays, "metrics": metrics}),
        reply_to=msg,
    )
