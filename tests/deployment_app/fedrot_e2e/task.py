"""Model, synthetic data and training loops of the end-to-end app (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IN, OUT, SAMPLES = 32, 4, 256


def make_model(hidden: int) -> nn.Module:
    """MLP 32 -> hidden -> 4 (``hidden=4096``: 151,556 parameters)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, hidden), nn.ReLU(), nn.Linear(hidden, OUT))


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_data(partition: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Partition ``partition`` (or the test set for -1): labels from a fixed teacher."""
    teacher = np.random.default_rng(0).standard_normal((IN, OUT))
    rng = np.random.default_rng(1000 + partition)
    x = rng.standard_normal((SAMPLES, IN)).astype(np.float32)
    y = (x @ teacher).argmax(axis=1)
    return torch.from_numpy(x), torch.from_numpy(y)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """One epoch of SGD with batches of 32; returns the mean loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for i in range(0, len(x), 32):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return float(np.mean(losses))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy)."""
    model.eval()
    logits = model(x)
    return float(nn.functional.cross_entropy(logits, y)), float(
        (logits.argmax(1) == y).float().mean()
    )
