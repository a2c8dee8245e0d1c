"""Block vector-quantization codebooks for i.i.d. N(0, 1) blocks: trainer and loader.

Used by the ``"vq"`` codec (:mod:`fedrot.codecs.vq`). After three RHTs the blocks of
the normalized rotated vector behave like i.i.d. Gaussian blocks (Ben-Basat et al.,
https://arxiv.org/abs/2605.06014), so one fixed codebook per (block size m, bits per
coordinate b) serves every input. A codebook has ``K = 2**(m b)`` codewords in R^m.

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

``python -m fedrot.vq_codebooks`` trains every entry of ``CONFIGS`` (a few minutes
on 2 CPU cores) and writes ``fedrot/data/vq_codebooks.json``; the package only reads
that JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import torch

from .seeds import derive_seed, words_numpy

__all__ = ["CONFIGS", "Codebook", "codebook", "nearest", "train_codebook"]

_FILE = "vq_codebooks.json"
FORMAT = 1
#: (block size m, bits per coordinate b) trained and shipped.
CONFIGS: tuple[tuple[int, int], ...] = ((2, 1), (2, 2), (2, 3), (4, 1), (4, 2))
SEED = 0x76_71
TRAIN = 1 << 20
TEST = 1 << 21
ITERS = 100
RESTARTS = 1
#: Codebooks with at least this many codewords train on TRAIN/2 samples for
#: ITERS/2 iterations (still >= 2048 samples per cell) to keep the run in minutes.
LARGE = 256
_BATCH = 1 << 16


@dataclass(frozen=True)
class Codebook:
    """A shipped codebook: ``codewords`` (K, m) float64, and its Gaussian statistics."""

    block: int
    bits: int
    codewords: np.ndarray
    mse: float
    e_zq: float
    q2: float

    @property
    def vnmse(self) -> float:
        """vNMSE with EDEN's unbiasing scale for Gaussian blocks (large d)."""
        return self.q2 / self.e_zq**2 - 1.0


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


def nearest(z: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword for each row of ``z`` (batched, int64)."""
    c2 = codewords.square().sum(dim=1)
    out = torch.empty(z.shape[0], dtype=torch.int64, device=z.device)
    for s in range(0, z.shape[0], _BATCH):
        zb = z[s : s + _BATCH]
        out[s : s + _BATCH] = torch.argmin(c2[None, :] - 2 * zb @ codewords.T, dim=1)
    return out


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
    for r in range(restarts):
        z = gaussian_blocks(derive_seed(SEED, block, bits, r), n_train, block)
        c = _lloyd(z, z[:k].clone(), iters)
        st = _stats(test, c)
        if best is None or st[0] < best[1][0]:
            best = (c, st)
    assert best is not None
    c, st = best
    order = torch.argsort(c[:, 0] * 1e3 + c[:, 1:].sum(dim=1))  # canonical order
    return c[order].double().numpy(), st


@cache
def codebook(block: int, bits: int) -> Codebook:
    """Load the shipped codebook for block size ``block`` and ``bits`` per coordinate.

    Examples
    --------
    >>> cb = codebook(2, 2)
    >>> cb.codewords.shape, cb.vnmse < 0.1331  # beats scalar 2-bit EDEN
    ((16, 2), True)
    """
    doc = json.loads(resources.files("fedrot.data").joinpath(_FILE).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{_FILE} has format {doc.get('format')}; expected {FORMAT}.")
    key = f"m{block}_b{bits}"
    if key not in doc["codebooks"]:
        raise ValueError(
            f"No VQ codebook for block={block}, bits={bits}. Shipped (block, bits): "
            f"{list(CONFIGS)}."
        )
    e = doc["codebooks"][key]
    cw = np.asarray(e["codewords"], dtype=np.float64)
    if cw.shape != (1 << (block * bits), block) or not np.isfinite(cw).all():
        raise ValueError(f"{_FILE} entry {key} is corrupt (shape or values).")
    return Codebook(block, bits, cw, float(e["mse"]), float(e["e_zq"]), float(e["q2"]))


def _write(path: str) -> None:
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
    doc = {
        "format": FORMAT,
        "generator": "python -m fedrot.vq_codebooks (vq_codebooks.py:train_codebook)",
        "method": (
            f"Lloyd/k-means, {ITERS} iterations, {RESTARTS} restart(s), {TRAIN} "
            f"training and {TEST} held-out SplitMix64/Box-Muller Gaussian blocks "
            f"(seed {SEED:#x}); "
            f"torch {torch.__version__}"
        ),
        "codebooks": books,
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    out = str(resources.files("fedrot.data").joinpath(_FILE))
    _write(out)
    print(f"wrote {out}")
