"""The models of each task (small enough for 2-core CPU simulations)."""

from __future__ import annotations

from collections.abc import Callable

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


class BatchNormMLP(nn.Module):
    """64 -> 128 -> BatchNorm -> ReLU -> 10: the digits MLP with a BatchNorm layer.

    Its state holds what users' models hold next to the weights: running statistics
    (float buffers) and ``num_batches_tracked`` (an int64 counter).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or 1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class FashionResNet(nn.Module):
    """A ResNet-8 for 28x28 images: stem 16, blocks of 16, 32, 64 channels.

    77,754 parameters and 9 BatchNorm layers, whose running statistics and
    ``num_batches_tracked`` counters travel exactly next to the compressed weights.
    About 5x the CNN's training time per example on one CPU thread.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            _BasicBlock(width, width, 1),
            _BasicBlock(width, 2 * width, 2),
            _BasicBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _digits_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


#: Model name -> (task it fits, constructor).
MODELS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "fashion-cnn": ("fashion-mnist", FashionCNN),
    "fashion-resnet": ("fashion-mnist", FashionResNet),
    "digits-mlp": ("digits", _digits_mlp),
    "digits-bn-mlp": ("digits", BatchNormMLP),
    "char-lstm": ("shakespeare", CharLSTM),
}
#: The model a task uses when a run names none.
DEFAULT_MODELS = {
    "fashion-mnist": "fashion-cnn",
    "digits": "digits-mlp",
    "shakespeare": "char-lstm",
}


def check_model(task: str, model: str) -> None:
    """Raise ``ValueError`` unless ``model`` is a model of ``task``."""
    if model not in MODELS:
        raise ValueError(f"`model` must be one of {sorted(MODELS)}. Found {model!r}.")
    if MODELS[model][0] != task:
        fitting = sorted(m for m, (t, _) in MODELS.items() if t == task)
        raise ValueError(
            f"Model {model!r} is for task {MODELS[model][0]!r}, not {task!r}. "
            f"Models of {task!r}: {fitting}."
        )


def make_model(task: str, *, model: str | None = None, seed: int = 0) -> nn.Module:
    """A freshly initialized model for ``task`` (deterministic given ``seed``).

    ``model`` names one of :data:`MODELS` for that task; None means the task's
    default (:data:`DEFAULT_MODELS`).
    """
    if task not in DEFAULT_MODELS:
        raise ValueError(
            f"`task` must be one of {sorted(DEFAULT_MODELS)}. Found {task!r}."
        )
    name = DEFAULT_MODELS[task] if model is None else model
    check_model(task, name)
    torch.manual_seed(seed)
    return MODELS[name][1]()


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())
