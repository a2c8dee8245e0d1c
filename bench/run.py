"""fedrot benchmark suite: FWHT, codecs, aggregation, threads, CUDA, Flower, memory.

Run from the repository root::

    .venv/bin/python -m bench                 # full suite (several minutes)
    .venv/bin/python -m bench --quick         # smaller sizes, a smoke run
    .venv/bin/python -m bench --threads 1     # pin torch (and the kernels) to 1 thread

It prints markdown tables and writes every measurement to JSON (``--out``, default
``bench/latest.json``). Every time is the median of repeated runs, and every time is
also given as a ratio to ONE elementwise pass over the same vector
(``torch.mul(x, 2.0, out=y)``) measured in the same process just before, so the
numbers stay comparable on a noisy shared machine. Peak extra memory is the growth of
the process's resident-set high-water mark during one call (Linux
``/proc/self/clear_refs``), as a multiple of the input's bytes. The run ends with
the targets of issue 14 (:mod:`bench.targets`): each measured figure, its bound and
whether it is met.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedrot.codecs import get_codec
from fedrot.hadamard import fwht, fwht_, fwht_reference

from .codecs import bench_codecs
from .flower import bench_flower
from .measure import (
    _kw,
    _print_row,
    cpu_snapshot,
    machine,
    markdown,
    median_time,
    others_cores,
    pass_time,
)
from .memory import bench_memory
from .targets import evaluate
from .threads import bench_threads

ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------- sections
def naive_fwht_(x: torch.Tensor) -> None:
    """The straightforward in-place torch butterfly (hadamard-transform 0.2.0 form)."""
    size = x.shape[-1]
    h = 1
    while h < size:
        v = x.view(-1, 2 * h)
        v[:, :h] += v[:, h:]
        v[:, h:] *= -2
        v[:, h:] += v[:, :h]
        h *= 2
    x.mul_(1 / math.sqrt(size))


def bench_fwht(log2s: list[int], reps: int) -> list[dict[str, Any]]:
    """FWHT float32 of one vector of D = 2**log2: in place and out of place, the
    torch paths, and a pass.

    The out-of-place ``fwht(x)`` is also given against its floor: a pass that
    allocates its output (``torch.mul(x, 2.0)``) plus the in-place ``fwht_``.
    """
    rows = []
    for lg in log2s:
        d = 1 << lg
        p = pass_time(d, reps)
        x = torch.randn(d)
        fresh = median_time(lambda x=x: torch.mul(x, 2.0), reps=max(reps, 11))
        fast = median_time(lambda x=x: fwht_(x), reps=reps)
        out = median_time(lambda x=x: fwht(x), reps=reps)
        ref = median_time(lambda x=x: fwht_reference(x), reps=max(3, reps // 3))
        naive = median_time(lambda x=x: naive_fwht_(x), reps=max(3, reps // 3))
        rows.append(
            {
                "D": f"2^{lg}",
                "pass_ms": p * 1e3,
                "fwht_ms": fast * 1e3,
                "fwht_x_pass": fast / p,
                "fresh_pass_x_pass": fresh / p,
                "fwht_out_x_pass": out / p,
                "fwht_out_x_fresh_plus_inplace": out / (fresh + fast),
                "naive_ms": naive * 1e3,
                "naive_x_pass": naive / p,
                "speedup_vs_naive": naive / fast,
                "torch_reference_ms": ref * 1e3,
            }
        )
        _print_row(rows[-1])
    return rows


def bench_aggregation(log2: int, ns: list[int], reps: int) -> list[dict[str, Any]]:
    """Server aggregation: per-client decode streamed into one sum (EDEN-1, DRIVE),
    QUIC-FL-2's shared rotation, and a plain fp32 weighted mean of as many vectors."""
    d = 1 << log2
    p = pass_time(d, reps)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in ns:
        xs = [torch.randn(d, generator=gen) for _ in range(n)]
        clients = list(range(1, n + 1))
        weights = [float(i % 7 + 1) for i in range(n)]
        wsum = sum(weights)

        def fp32_mean(
            xs: list[torch.Tensor] = xs, ws: list[float] = weights, total: float = wsum
        ) -> torch.Tensor:
            acc = xs[0] * (ws[0] / total)
            for x, w in zip(xs[1:], ws[1:], strict=True):
                acc.add_(x, alpha=w / total)
            return acc

        base = median_time(fp32_mean, reps=reps)
        row: dict[str, Any] = {
            "n": n,
            "d": f"2^{log2}",
            "fp32_mean_ms": base * 1e3,
            "fp32_mean_x_pass": base / p,
        }
        for label, name, kw in (
            ("eden1_per_client", "eden", {"bits": 1}),
            ("drive_per_client", "drive", {}),
            ("quicfl2_shared", "quic-fl", {"bits": 2}),
        ):
            codec = get_codec(name, **kw)
            blobs = [
                codec.encode(x, seed=3, client=c)
                for x, c in zip(xs, clients, strict=True)
            ]
            t = median_time(
                lambda c=codec, b=blobs, ids=clients, ws=weights: c.aggregate(
                    b, seed=3, clients=ids, weights=ws
                ),
                reps=max(3, reps // 2),
            )
            row[f"{label}_ms"] = t * 1e3
            row[f"{label}_x_fp32_mean"] = t / base
        rows.append(row)
        _print_row(row)
    return rows


#: Codec settings the CUDA section times (name, parameters, column label).
CUDA_CODECS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("eden", {"bits": 1, "rotations": 2}, "eden1"),
    ("eden", {"bits": 2, "rotations": 2}, "eden2"),
    ("eden", {"bits": 0.25, "rotations": 2}, "eden0.25"),
    ("drive", {}, "drive"),
    ("quic-fl", {"bits": 2}, "quicfl2"),
    ("hadamard-sq", {"bits": 1}, "hsq1"),
)


def bench_cuda(log2s: list[int], reps: int) -> list[dict[str, Any]]:
    """FWHT and every :data:`CUDA_CODECS` encode (tensor on the device to payload
    bytes on the host) and decode (bytes to a tensor on the device), each against a
    device-to-device copy of the same vector."""
    if not torch.cuda.is_available():
        print("CUDA: no device, section skipped")
        return []
    rows = []
    codecs = [
        (label, get_codec(name, device="cuda", **params))
        for name, params, label in CUDA_CODECS
    ]

    def cuda_time(fn: Callable[[], Any]) -> float:
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        return statistics.median(times)

    for lg in log2s:
        d = 1 << lg
        x = torch.randn(d, device="cuda")
        y = torch.empty_like(x)
        copy = cuda_time(lambda x=x, y=y: y.copy_(x))
        f = cuda_time(lambda x=x: fwht_(x))
        row: dict[str, Any] = {
            "D": f"2^{lg}",
            "copy_ms": copy * 1e3,
            "fwht_x_copy": f / copy,
        }
        for label, codec in codecs:
            blob = codec.encode(x, seed=1, client=2)
            e = cuda_time(lambda c=codec, x=x: c.encode(x, seed=1, client=2))
            t = cuda_time(lambda c=codec, b=blob: c.decode(b, seed=1, client=2))
            row[f"{label}_encode_x_copy"] = e / copy
            row[f"{label}_decode_x_copy"] = t / copy
        rows.append(row)
        _print_row(row)
    return rows


def bench_simulation(reps: int) -> list[dict[str, Any]]:
    """Client overhead in the default simulation (Fashion-MNIST CNN, 100 clients,
    1 local epoch of batch 32 on ~600 samples): encode time / local training time."""
    sys.path.insert(0, str(ROOT / "simulations"))
    try:
        from fedrot_sim.models import make_model, num_params
        from fedrot_sim.training import train
    except ImportError as exc:
        print(f"simulation: cannot import fedrot_sim ({exc}); section skipped")
        return []
    model = make_model("fashion-mnist", seed=0)
    d = num_params(model)
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(600, 1, 28, 28, generator=gen)
    ys = torch.randint(0, 10, (600,), generator=gen)

    def local_train() -> float:
        return train(model, xs, ys, epochs=1, batch_size=32, lr=0.05, seed=0)

    t_train = median_time(local_train, reps=3)
    update = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    rows = []
    for name, kw in (("eden", {"bits": 1}), ("quic-fl", {"bits": 2})):
        codec = get_codec(name, rotations=2, **kw)
        t_enc = median_time(
            lambda c=codec: c.encode(update, seed=1, client=2), reps=reps
        )
        rows.append(
            {
                "codec": f"{name} {_kw(kw)}",
                "params": d,
                "local_epoch_ms": t_train * 1e3,
                "encode_ms": t_enc * 1e3,
                "encode_pct_of_training": 100 * t_enc / t_train,
            }
        )
        _print_row(rows[-1])
    return rows


@dataclass(frozen=True)
class Section:
    """One benchmark section: its ``--only`` key, its title and how to run it."""

    key: str
    title: str
    run: Callable[[], list[dict[str, Any]]]


SECTION_KEYS = (
    "fwht",
    "codecs",
    "aggregation",
    "threads",
    "cuda",
    "simulation",
    "flower",
    "memory",
)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--reps", type=int, default=None, help="repeats per measurement")
    ap.add_argument(
        "--only", default=",".join(SECTION_KEYS), help="comma-separated sections"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "latest.json"))
    args = ap.parse_args(argv)
    unknown = sorted(set(args.only.split(",")) - set(SECTION_KEYS))
    if unknown:
        ap.error(f"--only: unknown section(s) {unknown}. Valid: {list(SECTION_KEYS)}.")
    return args


def sections(*, quick: bool, reps: int) -> list[Section]:
    """Every section, with the sizes of a quick or a full run."""
    return [
        Section(
            "fwht",
            "FWHT float32, one vector of D",
            lambda: bench_fwht(
                [16, 18, 20] if quick else [16, 18, 20, 22, 24, 26], reps
            ),
        ),
        Section(
            "codecs",
            "Encode / decode",
            lambda: bench_codecs([16] if quick else [20, 24], max(3, reps // 2)),
        ),
        Section(
            "aggregation",
            "Server aggregation",
            lambda: bench_aggregation(
                16 if quick else 20, [10] if quick else [10, 100], reps
            ),
        ),
        Section(
            "threads",
            "1 vs 2 threads: FWHT, encoders and decoders (2 RHTs)",
            lambda: bench_threads([16] if quick else [20, 24], max(3, reps // 2)),
        ),
        Section(
            "cuda",
            "CUDA",
            lambda: bench_cuda([20] if quick else [20, 22, 24, 26], reps),
        ),
        Section(
            "simulation",
            "Default simulation: client encode vs local training",
            lambda: bench_simulation(reps),
        ),
        Section(
            "flower",
            "Flower integration per round: client mod, server wrapper, broadcasts",
            lambda: bench_flower(1 << (16 if quick else 20), 10, reps),
        ),
        Section(
            "memory",
            "Server memory: one round of compressed replies (bench.memory)",
            lambda: bench_memory(10**6 if quick else 10**7, 20 if quick else 200),
        ),
    ]


def run_sections(chosen: list[Section], results: dict[str, Any]) -> list[str]:
    """Run each section, store its rows in ``results``; returns markdown tables.

    ``results["contention"]`` gets, per section, the wall time and the average
    number of cores other processes kept busy meanwhile (see
    :func:`bench.measure.others_cores`): a section measured while another job ran
    shows it there.
    """
    tables = []
    contention = results.setdefault("contention", [])
    for section in chosen:
        print(f"## {section.title}", flush=True)
        start = cpu_snapshot()
        rows = section.run()
        end = cpu_snapshot()
        results[section.key] = rows
        contention.append(
            {
                "section": section.key,
                "wall_s": None
                if start is None or end is None
                else end.wall - start.wall,
                "other_processes_cores": others_cores(start, end),
            }
        )
        _print_row(contention[-1])
        tables.append(f"### {section.title}\n\n{markdown(rows)}")
    return tables


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print markdown, write JSON.

    Steps: parse the options, record the machine, run the chosen sections (printing
    each row as it is measured), print the tables, write the JSON.
    """
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (5 if args.quick else 11)
    only = set(args.only.split(","))
    info = machine()
    print("# fedrot benchmark\n")
    print("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n")
    results: dict[str, Any] = {"machine": info, "reps": reps}
    chosen = [s for s in sections(quick=args.quick, reps=reps) if s.key in only]
    tables = run_sections(chosen, results)
    tables.append(
        "### Other processes during each section (cores kept busy, average)\n\n"
        + markdown(results["contention"])
    )
    results["loadavg_at_end"] = machine()["loadavg_at_start"]
    results["targets"] = evaluate(results)
    tables.append(f"### Targets of issue 14\n\n{markdown(results['targets'])}")
    print("\n" + "\n".join(tables))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"JSON written to {out}")
    return 0
