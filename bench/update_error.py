"""Codec error on real model updates: ``python -m bench.update_error``.

Trains the default simulation's CNN for one local epoch (the first FedAvg round) on
10 Fashion-MNIST clients of the default Dirichlet(0.5) split, then reports for each
codec of the default preset the mean per-client vNMSE of the update and the error of
the 10-client aggregate relative to the true mean update,
``||aggregate - mean||^2 / ||mean||^2``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulations"))

from fedrot_sim import data, models, training  # noqa: E402

import fedrot  # noqa: E402

CODECS = [
    ("eden", {"bits": 1}),
    ("drive", {}),
    ("eden", {"bits": 2}),
    ("quic-fl", {"bits": 2}),
    ("hadamard-sq", {"bits": 1}),
    ("qsgd", {"levels": 15}),
]


def main() -> None:
    """Print a markdown table of update errors."""
    deltas = []
    for part in range(10):
        model = models.make_model("fashion-mnist", seed=0)
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        x, y = data.client_data("fashion-mnist", part, 100, 0.5, 0)
        training.train(model, x, y, epochs=1, batch_size=32, lr=0.05, seed=part)
        end = torch.cat([p.detach().flatten() for p in model.parameters()])
        deltas.append(end - start)
    mean = torch.stack(deltas).mean(0)
    energy = torch.stack([d.square().sum() for d in deltas]).mean()
    print(
        f"d = {mean.numel()}, ||mean||^2 / mean_i ||delta_i||^2 = "
        f"{float(mean.square().sum() / energy):.3f}\n"
    )
    print("| codec | mean client vNMSE | 10-client aggregate error / ||mean||^2 |")
    print("|---|---|---|")
    for name, params in CODECS:
        codec = fedrot.get_codec(name, **params)
        blobs = [codec.encode(d, seed=1, client=i) for i, d in enumerate(deltas)]
        vn = [
            float(
                (codec.decode(b, seed=1, client=i) - d).square().sum()
                / d.square().sum()
            )
            for i, (b, d) in enumerate(zip(blobs, deltas, strict=True))
        ]
        agg = codec.aggregate(blobs, seed=1, clients=list(range(10)))
        err = float((agg - mean).square().sum() / mean.square().sum())
        label = name + "".join(f" {k}={v}" for k, v in params.items())
        print(f"| {label} | {sum(vn) / len(vn):.3f} | {err:.3f} |")


if __name__ == "__main__":
    main()
