"""Solve QUIC-FL receiver tables and write ``quic_fl_tables.json``.

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
``2 t_j``: the LP optimum, with at most one ``h`` randomized per ``z``
(:func:`fedrot.tables.quic_fl.state_sweep`).

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

``python -m fedrot.tables.solvers.quic_fl`` solves every configuration in
``CONFIGS`` for every outlier fraction in ``OUTLIER_LOG2`` and writes the table, ``T``,
``p``, the table-exact vNMSE, the solver settings and a CRC-32 of each table. The
runtime loader is :func:`fedrot.tables.quic_fl.quic_fl_table`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...seeds import derive_seed, words_numpy
from .._shipped import crc32_f64, regenerate
from ..quic_fl import CONFIGS, OUTLIER_LOG2, SHIPPED, state_sweep

__all__ = ["solve_table", "table_vnmse", "threshold_for", "write_tables"]

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
    cdf: torch.Tensor = torch.special.ndtr(t)
    return cdf


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


def _objective(r: torch.Tensor, T: float) -> torch.Tensor:
    """Step 2: ``J(R)``, the table's vNMSE for Gaussian input (closed form)."""
    m, s, t, _ = state_sweep(r)
    a = torch.clamp(m[:-1], -T, T)
    b = torch.clamp(m[1:], -T, T)
    mass = _normal_cdf(b) - _normal_cdf(a)
    first = _normal_pdf(a) - _normal_pdf(b)
    second = (s[:-1] - 2 * t * m[:-1]) * mass + 2 * t * first
    tt = torch.tensor(T, dtype=r.dtype)
    ez2 = (2 * _normal_cdf(tt) - 1) - 2 * tt * _normal_pdf(tt)
    return second.sum() - ez2


def table_vnmse(table: np.ndarray, T: float) -> float:
    """Exact vNMSE of a receiver table for Gaussian input with outlier threshold T.

    Raises
    ------
    ValueError
        If the table cannot send every ``z`` in [-T, T] unbiasedly.
    """
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
        torch.autograd.backward(loss)
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]  # torch leaves LBFGS.step untyped
    with torch.no_grad():
        r = _canonical(u, T)
        return r, float(_objective(r, T))


def solve_table(
    bits: int, sr_log2: int, T: float, *, restarts: int = RESTARTS, iters: int = 3000
) -> tuple[np.ndarray, float]:
    """Solve the QUIC-FL design problem; returns (table (2**b, 2**l), vNMSE).

    Steps 1-3 of the module docstring. Deterministic for fixed arguments.
    """
    base = _dithered(bits, sr_log2, T)
    k, h = base.shape
    best_r, best_val = _minimize(base.clone(), T, iters)
    for attempt in range(1, restarts):
        noise = _noise(derive_seed(_SOLVER_SEED, bits, sr_log2, attempt), (k, h))
        u0 = base + (0.3 * T / (1 << bits)) * attempt * noise
        r, val = _minimize(u0, T, iters)
        if val < best_val:
            best_r, best_val = r, val
    table = best_r.numpy().copy()
    # re-evaluate with the loader's path so the stored number is what users get
    return table, table_vnmse(table, T)


def write_tables(path: str) -> None:
    """Solve every shipped configuration and write the table file to ``path``."""
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
                "crc32": crc32_f64(table),
                "table": [[float(v) for v in row] for row in table],
            }
            print(f"b={bits} l={sr_log2} p=2**-{m}: vNMSE {vnmse:.6f}", flush=True)
    SHIPPED.write(
        path,
        tables,
        source="fedrot/tables/solvers/quic_fl.py:solve_table",
        method=(
            "L-BFGS (strong Wolfe, float64, torch autograd) on the closed-form "
            f"objective J(R); {RESTARTS} starts: dithered uniform quantizer, then "
            f"SplitMix64-noise perturbations (seed {_SOLVER_SEED:#x}); "
            f"torch {torch.__version__}"
        ),
    )


if __name__ == "__main__":
    regenerate(SHIPPED, write_tables)
