"""QUIC-FL receiver tables: the offline solver that makes them and the loader.

QUIC-FL (Ben-Basat et al., "Accelerating Federated Learning with Quick Distributed
Mean Estimation", ICML 2024, https://arxiv.org/abs/2205.13341) quantizes each
normalized rotated coordinate ``z in [-T, T]`` to a b-bit message ``X`` using
``l`` bits of randomness ``h`` shared by client and server. The server's estimate is
a table look-up ``R[X, h]``; it must be unbiased for every ``z`` in [-T, T].

The design problem
------------------
Minimize over the receiver table ``R`` (shape ``(2**b, 2**l)``) and the sender
``S(X | z, h)`` the expected variance for ``z ~ N(0, 1)`` restricted to [-T, T]::

    J(R) = int_{-T}^{T} phi(z) [ g_R(z) - z^2 ] dz,
    g_R(z) = min_S  mean_h sum_X S(X|z,h) R[X,h]^2
             s.t.   mean_h sum_X S(X|z,h) R[X,h] = z,

(coordinates with ``|z| > T`` are sent exactly and add no error, so ``J`` is the
codec's vNMSE). For a fixed ``R`` the inner problem is a small LP per ``z``. Its
Lagrangian ``sum (R^2 - 2 t R) = sum ((R - t)^2 - t^2)`` shows that for a multiplier
``t`` every ``h`` sends the level of column ``h`` nearest to ``t``. Sweeping ``t``
upwards visits ``(2**b - 1) * 2**l + 1`` *states*; in state ``j`` the mean and second
moment over ``h`` are ``m_j`` and ``s_j``. Between two states exactly one column
``h*_j`` moves up one level (at threshold ``t_j``, the midpoint of its two levels),
so ``g_R`` is the piecewise-linear interpolation of ``(m_j, s_j)`` with slopes
``2 t_j``: the LP optimum, with at most one ``h`` randomized per ``z``.

Solver (``solve_table``), deterministic
---------------------------------------
1. Parametrize ``R`` antisymmetrically, ``R[X, h] = -R[2**b-1-X, 2**l-1-h]``, sort
   every column, and push the lowest row down until ``m_0 <= -T`` (so every
   ``z in [-T, T]`` has an unbiased sender; by symmetry ``m_last >= T``).
2. Evaluate ``J(R)`` in closed form: sort the transitions by ``t_j``, cumulate
   ``m_j``, ``s_j`` and integrate each linear piece against ``phi`` with ``Phi``/
   ``phi`` differences (float64, torch autograd).
3. Minimize with L-BFGS (strong Wolfe) from ``RESTARTS`` starting tables: a
   dithered uniform quantizer and tables perturbed with SplitMix64 noise from
   :mod:`fedrot.seeds`; keep the best.

``python -m fedrot.quic_fl_tables`` solves every configuration in ``CONFIGS`` and
writes ``fedrot/data/quic_fl_tables.json`` (plain JSON with the table, ``T``, ``p``,
the table-exact vNMSE, the solver settings and a CRC-32 of the table). The package
only reads that JSON.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import torch

from .seeds import derive_seed, words_numpy

__all__ = [
    "CONFIGS",
    "QuicFLTable",
    "quic_fl_table",
    "shipped_outlier_log2",
    "solve_table",
    "table_vnmse",
    "threshold_for",
]

_FILE = "quic_fl_tables.json"
FORMAT = 1
#: (bits, log2 of the number of shared-randomness values h) solved and shipped.
CONFIGS: tuple[tuple[int, int], ...] = ((1, 7), (2, 6), (3, 6), (4, 6))
#: Outlier fractions p = 2**-m shipped, as m.
OUTLIER_LOG2: tuple[int, ...] = (7, 9, 11)
RESTARTS = 3
_SOLVER_SEED = 0x51C_F1


def threshold_for(p: float) -> float:
    """``T`` with ``P(|Z| > T) = p`` for ``Z ~ N(0, 1)``.

    Examples
    --------
    >>> round(threshold_for(1 / 512), 10)
    3.0972690782
    """
    if not 0 < p < 1:
        raise ValueError(f"`p` must be in (0, 1). Found {p}.")
    return float(torch.special.ndtri(torch.tensor(1 - p / 2, dtype=torch.float64)))


# --------------------------------------------------------------------- objective
def _normal_pdf(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


def _normal_cdf(t: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(t)


def _canonical(u: torch.Tensor, T: float) -> torch.Tensor:
    """Step 1: antisymmetrize, sort columns, make the lowest state mean <= -T."""
    r = 0.5 * (u - torch.flip(u, dims=(0, 1)))
    r = torch.sort(r, dim=0).values
    shift = torch.clamp(-T - r[0].mean(), max=0.0)
    k = r.shape[0]
    rows = (
        [r[0] + shift, *r[1 : k - 1], r[k - 1] - shift]
        if k > 2
        else [r[0] + shift, r[1] - shift]
    )
    return torch.stack(rows)


def _states(
    r: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """State means m, second moments s, thresholds t and moving columns h*."""
    k, h = r.shape
    t = 0.5 * (r[1:] + r[:-1])
    dm = (r[1:] - r[:-1]) / h
    ds = (r[1:] ** 2 - r[:-1] ** 2) / h
    order = torch.argsort(t.reshape(-1), stable=True)
    t, dm, ds = t.reshape(-1)[order], dm.reshape(-1)[order], ds.reshape(-1)[order]
    cols = torch.arange(h).repeat(k - 1)[order]
    zero = r.new_zeros(1)
    m = r[0].mean() + torch.cat([zero, torch.cumsum(dm, 0)])
    s = (r[0] ** 2).mean() + torch.cat([zero, torch.cumsum(ds, 0)])
    return m, s, t, cols


def _objective(r: torch.Tensor, T: float) -> torch.Tensor:
    """Step 2: ``J(R)``, the table's vNMSE for Gaussian input (closed form)."""
    m, s, t, _ = _states(r)
    a = torch.clamp(m[:-1], -T, T)
    b = torch.clamp(m[1:], -T, T)
    mass = _normal_cdf(b) - _normal_cdf(a)
    first = _normal_pdf(a) - _normal_pdf(b)
    second = (s[:-1] - 2 * t * m[:-1]) * mass + 2 * t * first
    tt = torch.tensor(T, dtype=r.dtype)
    ez2 = (2 * _normal_cdf(tt) - 1) - 2 * tt * _normal_pdf(tt)
    return second.sum() - ez2


def table_vnmse(table: np.ndarray, T: float) -> float:
    """Exact vNMSE of a receiver table for Gaussian input with outlier threshold T."""
    r = torch.sort(
        torch.as_tensor(np.asarray(table), dtype=torch.float64), dim=0
    ).values
    if float(r[0].mean()) > -T + 1e-12 or float(r[-1].mean()) < T - 1e-12:
        raise ValueError(
            f"The table does not cover [-T, T] = [{-T}, {T}]: an unbiased sender "
            "needs mean_h min_X R <= -T and mean_h max_X R >= T."
        )
    return float(_objective(r, T))


# ------------------------------------------------------------------------ solver
def _noise(key: int, shape: tuple[int, int]) -> torch.Tensor:
    """Deterministic N(0, 1) noise from the SplitMix64 stream (Box-Muller)."""
    n = shape[0] * shape[1]
    w = words_numpy(key, 2 * n)
    u = ((w >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    g = np.sqrt(-2 * np.log(u[:n])) * np.cos(2 * np.pi * u[n:])
    return torch.from_numpy(g.reshape(shape))


def _dithered(bits: int, sr_log2: int, T: float) -> torch.Tensor:
    """A dithered uniform quantizer on [-T, T]: level X shifted by h's offset."""
    k, h = 1 << bits, 1 << sr_log2
    step = 2 * T / k
    x = torch.arange(k, dtype=torch.float64)[:, None]
    off = (torch.arange(h, dtype=torch.float64)[None, :] + 0.5) / h
    return -T + step * (x + off) - step / 2 + 0.0 * x


def _minimize(u0: torch.Tensor, T: float, iters: int) -> tuple[torch.Tensor, float]:
    u = u0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1,
        max_iter=iters,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _objective(_canonical(u, T), T)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        r = _canonical(u, T)
        return r, float(_objective(r, T))


def solve_table(
    bits: int, sr_log2: int, T: float, *, restarts: int = RESTARTS, iters: int = 3000
) -> tuple[np.ndarray, float]:
    """Solve the QUIC-FL design problem; returns (table (2**b, 2**l), vNMSE).

    Steps 1-3 of the module docstring. Deterministic for fixed arguments.
    """
    best: tuple[torch.Tensor, float] | None = None
    base = _dithered(bits, sr_log2, T)
    shape = tuple(base.shape)
    for attempt in range(restarts):
        u0 = base.clone()
        if attempt:
            u0 = u0 + (0.3 * T / (1 << bits)) * attempt * _noise(
                derive_seed(_SOLVER_SEED, bits, sr_log2, attempt),
                shape,  # type: ignore[arg-type]
            )
        r, val = _minimize(u0, T, iters)
        if best is None or val < best[1]:
            best = (r, val)
    assert best is not None
    r, _ = best
    table = r.numpy().copy()
    # re-evaluate with the loader's path so the stored number is what users get
    return table, table_vnmse(table, T)


# ------------------------------------------------------------------------ loader
@dataclass(frozen=True)
class QuicFLTable:
    """A shipped receiver table with the sender's precomputed state sweep.

    Attributes
    ----------
    bits, sr_log2
        Message bits b and log2 of the number of shared-randomness values h.
    outlier_log2
        The table is for outlier fraction ``p = 2**-outlier_log2``.
    threshold
        ``T_eff = min(T, -m_0, m_last)``: coordinates with ``|z| > T_eff`` are sent
        exactly; every ``|z| <= T_eff`` has an exactly unbiased sender.
    table
        ``R[X, h]``, float64, each column ascending.
    vnmse
        Table-exact vNMSE for Gaussian input (outliers contribute 0).
    means
        State means ``m_j`` (ascending), length ``J + 1``.
    levels
        ``levels[j, h]``: the level column ``h`` sends in state ``j``, ``(J+1, H)``.
    movers
        ``movers[j]``: the column that moves up between states j and j+1.
    crc
        CRC-32 of the table's float64 little-endian bytes (sent in the codec's
        parameter block so both sides provably use the same table).
    """

    bits: int
    sr_log2: int
    outlier_log2: int
    threshold: float
    table: np.ndarray
    vnmse: float
    means: np.ndarray
    levels: np.ndarray
    movers: np.ndarray
    crc: int


def _sweep(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = torch.from_numpy(table)
    m, _, _, cols = _states(r)
    k, h = table.shape
    levels = np.zeros((len(m), h), dtype=np.int64)
    for j, c in enumerate(cols.tolist()):
        levels[j + 1] = levels[j]
        levels[j + 1, c] += 1
    if not (levels[-1] == k - 1).all():  # pragma: no cover - structural invariant
        raise RuntimeError("state sweep did not end at the top level of every column")
    return m.numpy(), levels, cols.numpy()


def _crc(table: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(table, dtype="<f8").tobytes())


def shipped_outlier_log2() -> tuple[int, ...]:
    """The values m of the shipped outlier fractions ``p = 2**-m``."""
    return OUTLIER_LOG2


@cache
def quic_fl_table(bits: int, outlier_log2: int = 9) -> QuicFLTable:
    """Load the shipped table for ``bits`` and outlier fraction ``2**-outlier_log2``.

    Examples
    --------
    >>> t = quic_fl_table(2)
    >>> t.table.shape, round(t.vnmse, 4) < 0.2149
    ((4, 64), True)
    """
    doc = json.loads(resources.files("fedrot.data").joinpath(_FILE).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{_FILE} has format {doc.get('format')}; expected {FORMAT}.")
    key = f"b{bits}_p{outlier_log2}"
    if key not in doc["tables"]:
        raise ValueError(
            f"No QUIC-FL table for bits={bits}, outlier fraction 2**-{outlier_log2}. "
            f"Shipped: bits in {[b for b, _ in CONFIGS]}, outlier fraction 2**-m "
            f"for m in {list(OUTLIER_LOG2)}; solve others with `python -m "
            "fedrot.quic_fl_tables`."
        )
    e = doc["tables"][key]
    table = np.asarray(e["table"], dtype=np.float64)
    if table.shape != (1 << bits, 1 << e["sr_log2"]) or _crc(table) != e["crc32"]:
        raise ValueError(f"{_FILE} entry {key} is corrupt (shape or CRC mismatch).")
    means, levels, movers = _sweep(table)
    thr = min(float(e["T"]), -float(means[0]), float(means[-1]))
    return QuicFLTable(
        bits=bits,
        sr_log2=int(e["sr_log2"]),
        outlier_log2=outlier_log2,
        threshold=thr,
        table=table,
        vnmse=float(e["vnmse"]),
        means=means,
        levels=levels,
        movers=movers,
        crc=int(e["crc32"]),
    )


def _write(path: str) -> None:
    tables = {}
    for m in OUTLIER_LOG2:
        T = threshold_for(2.0**-m)
        for bits, sr_log2 in CONFIGS:
            table, vnmse = solve_table(bits, sr_log2, T)
            tables[f"b{bits}_p{m}"] = {
                "bits": bits,
                "sr_log2": sr_log2,
                "p": 2.0**-m,
                "T": T,
                "vnmse": vnmse,
                "crc32": _crc(table),
                "table": [[float(v) for v in row] for row in table],
            }
            print(f"b={bits} l={sr_log2} p=2**-{m}: vNMSE {vnmse:.6f}", flush=True)
    doc = {
        "format": FORMAT,
        "generator": "python -m fedrot.quic_fl_tables (quic_fl_tables.py:solve_table)",
        "method": (
            "L-BFGS (strong Wolfe, float64, torch autograd) on the closed-form "
            f"objective J(R); {RESTARTS} starts: dithered uniform quantizer, then "
            f"SplitMix64-noise perturbations (seed {_SOLVER_SEED:#x}); "
            f"torch {torch.__version__}"
        ),
        "tables": tables,
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    out = str(resources.files("fedrot.data").joinpath(_FILE))
    _write(out)
    print(f"wrote {out}")
