"""Train the VQ codebooks for i.i.d. N(0, 1) blocks and write ``vq_codebooks.json``.

Training (``train_codebook``), deterministic
--------------------------------------------
1. Draw ``TRAIN`` Gaussian blocks with Box-Muller from the SplitMix64 stream of
   ``derive_seed(SEED, m, b, restart)`` (:mod:`fedrot.seeds`; no library generator).
2. Initialize with ``K`` of those samples (a product Lloyd-Max grid would be a Lloyd
   fixed point that never beats scalar EDEN).
3. Run ``ITERS`` Lloyd (k-means) iterations (``ITERS/2`` on ``TRAIN/2`` samples
   when ``K >= LARGE``): assign each sample to its nearest codeword, move each
   codeword to the mean of its cell (an empty cell takes the sample with the largest
   error).
4. Keep the best of ``RESTARTS`` runs, judged on ``TEST`` held-out samples, where
   we also measure ``e = E<z, Q(z)>/m`` and ``q = E|Q(z)|^2/m``; EDEN's unbiasing
   scale then gives ``vNMSE = q / e^2 - 1`` at large d.

``python -m fedrot.tables.solvers.vq`` trains every entry of ``CONFIGS`` (a few
minutes on 2 CPU cores). The runtime loader is :func:`fedrot.tables.vq.codebook`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...seeds import derive_seed, words_numpy
from .._shipped import regenerate
from ..vq import CONFIGS, SHIPPED, nearest

__all__ = ["gaussian_blocks", "train_codebook", "write_codebooks"]

SEED = 0x76_71
TRAIN = 1 << 20
TEST = 1 << 21
ITERS = 100
RESTARTS = 1
#: Codebooks with at least this many codewords train on TRAIN/2 samples for
#: ITERS/2 iterations (still >= 2048 samples per cell) to keep the run in minutes.
LARGE = 256


def gaussian_blocks(key: int, n: int, m: int) -> torch.Tensor:
    """n i.i.d. N(0, I_m) blocks (float32) by Box-Muller from a SplitMix64 stream."""
    half = (n * m + 1) // 2
    w = words_numpy(key, 2 * half)
    u = ((w >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u[:half]))
    g = np.concatenate(
        [r * np.cos(2 * np.pi * u[half:]), r * np.sin(2 * np.pi * u[half:])]
    )
    return torch.from_numpy(g[: n * m].astype(np.float32).reshape(n, m))


def _stats(z: torch.Tensor, c: torch.Tensor) -> tuple[float, float, float]:
    q = c[nearest(z, c)].double()
    zd = z.double()
    mse = float((zd - q).square().sum()) / z.numel()
    return mse, float((zd * q).sum()) / z.numel(), float(q.square().sum()) / z.numel()


def _lloyd(z: torch.Tensor, c: torch.Tensor, iters: int) -> torch.Tensor:
    k = c.shape[0]
    for _ in range(iters):
        idx = nearest(z, c)
        sums = torch.zeros(k, z.shape[1], dtype=torch.float64).index_add_(
            0, idx, z.double()
        )
        cnt = torch.bincount(idx, minlength=k)
        new = (sums / cnt.clamp(min=1)[:, None]).float()
        empty = torch.nonzero(cnt == 0).reshape(-1)
        if empty.numel():
            err = (z - c[idx]).square().sum(dim=1)
            new[empty] = z[torch.topk(err, empty.numel()).indices]
        c = new
    return c


def train_codebook(
    block: int, bits: int, *, restarts: int = RESTARTS, iters: int = ITERS
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Train a codebook (steps 1-4 above); returns (codewords, (mse, e_zq, q2))."""
    k = 1 << (block * bits)
    n_train = TRAIN // 2 if k >= LARGE else TRAIN
    iters = iters // 2 if k >= LARGE else iters
    test = gaussian_blocks(derive_seed(SEED, block, bits, 1 << 32), TEST, block)
    best: tuple[torch.Tensor, tuple[float, float, float]] | None = None
    for r in range(max(1, restarts)):
        z = gaussian_blocks(derive_seed(SEED, block, bits, r), n_train, block)
        c = _lloyd(z, z[:k].clone(), iters)
        st = _stats(test, c)
        if best is None or st[0] < best[1][0]:
            best = (c, st)
    if best is None:  # pragma: no cover - the loop runs at least once
        raise RuntimeError("no training run")
    c, st = best
    order = torch.argsort(c[:, 0] * 1e3 + c[:, 1:].sum(dim=1))  # canonical order
    return c[order].double().numpy(), st


def write_codebooks(path: str) -> None:
    """Train every shipped configuration and write the codebook file to ``path``."""
    books = {}
    for block, bits in CONFIGS:
        t0 = time.time()
        cw, (mse, e_zq, q2) = train_codebook(block, bits)
        books[f"m{block}_b{bits}"] = {
            "block": block,
            "bits": bits,
            "mse": mse,
            "e_zq": e_zq,
            "q2": q2,
            "vnmse": q2 / e_zq**2 - 1,
            "codewords": [[float(v) for v in row] for row in cw],
        }
        print(
            f"m={block} b={bits}: mse {mse:.5f} vNMSE {q2 / e_zq**2 - 1:.5f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
    SHIPPED.write(
        path,
        books,
        source="fedrot/tables/solvers/vq.py:train_codebook",
        method=(
            f"Lloyd/k-means, {ITERS} iterations, {RESTARTS} restart(s), {TRAIN} "
            f"training and {TEST} held-out SplitMix64/Box-Muller Gaussian blocks "
            f"(seed {SEED:#x}); "
            f"torch {torch.__version__}"
        ),
    )


if __name__ == "__main__":
    regenerate(SHIPPED, write_codebooks)
