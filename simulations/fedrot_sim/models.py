"""The models of each task (small enough for 2-core CPU simulations)."""

from __future__ import annotations

import torch
from torch import nn

from .data import VOCAB


class FashionCNN(nn.Module):
    """Two 5x5 conv layers (8, 16 channels) + FC 512: 0.41M parameters.

    The wide dense layer holds most parameters (what compression acts on) while the
    narrow convolutions keep a CPU round cheap.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CharLSTM(nn.Module):
    """Embedding 8 -> 2-layer LSTM 128 -> next-character logits (LEAF-like, smaller)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), 8)
        self.lstm = nn.LSTM(8, 128, num_layers=2, batch_first=True)
        self.out = nn.Linear(128, len(VOCAB))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))
        return self.out(h[:, -1])


def make_model(task: str, *, seed: int = 0) -> nn.Module:
    """A freshly initialized model for ``task`` (deterministic given ``seed``)."""
    torch.manual_seed(seed)
    if task == "fashion-mnist":
        return FashionCNN()
    if task == "digits":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    if task == "shakespeare":
        return CharLSTM()
    raise ValueError(f"Unknown task {task!r}.")


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())
