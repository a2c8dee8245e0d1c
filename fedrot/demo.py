"""Codec table: measured vNMSE and bits/coordinate for every registered codec.

``python -m fedrot.demo`` encodes Gaussian vectors of length d with each codec over
several seeds, decodes them, and prints a markdown table of the payload size in
bits per coordinate, the measured vNMSE (mean ± standard error over seeds), the
theoretical value where one exists. (Speed is measured by the benchmarks.)
"""

from __future__ import annotations

import argparse
import math
import platform
from typing import Any

import torch

from . import available_codecs, get_codec

#: (codec, parameters) rows of the default table, in display order.
DEFAULT_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {}),
    ("fp16", {}),
    ("drive", {"scale": "unbiased"}),
    ("drive", {"scale": "biased"}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 1}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 3}),
    ("eden", {"bits": 4}),
    ("quic-fl", {"bits": 1}),
    ("quic-fl", {"bits": 2}),
    ("quic-fl", {"bits": 3}),
    ("quic-fl", {"bits": 4}),
    ("vq", {"bits": 1}),
    ("vq", {"bits": 2}),
    ("vq", {"bits": 2, "block": 4}),
    ("hadamard-sq", {"bits": 1}),
    ("hadamard-sq", {"bits": 4}),
    ("qsgd", {"levels": 1}),
    ("qsgd", {"levels": 15}),
    ("terngrad", {}),
    ("topk", {"fraction": 1 / 32}),
    ("randk", {"fraction": 1 / 32}),
    ("signsgd", {}),
]


def measure(name: str, params: dict[str, Any], *, d: int, seeds: int) -> dict[str, Any]:
    """Encode/decode Gaussian vectors with one codec; returns the table row."""
    codec = get_codec(name, **params)
    errors, sizes = [], []
    for s in range(seeds):
        x = torch.randn(d, generator=torch.Generator().manual_seed(10_000 + s))
        blob = codec.encode(x, seed=s, client=1)
        x_hat = codec.decode(blob, seed=s, client=1)
        errors.append(
            float(
                (x_hat.double() - x.double()).square().sum() / x.double().square().sum()
            )
        )
        sizes.append(len(blob))
    mean = sum(errors) / seeds
    var = sum((e - mean) ** 2 for e in errors) / max(seeds - 1, 1)
    info = codec.info(d)
    return {
        "codec": f"{name} "
        + ", ".join(f"{k}={v}" for k, v in codec.params().items() if k != "chunk_size"),
        "bits": 8 * sum(sizes) / seeds / d,
        "vnmse": mean,
        "se": math.sqrt(var / seeds),
        "theory": info.expected_vnmse,
        "unbiased": info.unbiased,
    }


def main(argv: list[str] | None = None) -> None:
    """Print the codec table."""
    parser = argparse.ArgumentParser(prog="python -m fedrot.demo", description=__doc__)
    parser.add_argument(
        "--d", type=int, default=1 << 16, help="vector length (default 65536)"
    )
    parser.add_argument(
        "--seeds", type=int, default=20, help="seeds per codec (default 20)"
    )
    args = parser.parse_args(argv)
    if args.d < 1 or args.seeds < 1:
        parser.error("--d and --seeds must be >= 1")
    known = set(available_codecs())
    print(
        f"Gaussian input, d = {args.d}, {args.seeds} seeds, torch {torch.__version__}, "
        f"{platform.machine()} with {torch.get_num_threads()} threads\n"
    )
    print("| codec | bits/coord | vNMSE (mean ± s.e.) | theory | unbiased |")
    print("|---|---|---|---|---|")
    for name, params in DEFAULT_ROWS:
        if name not in known:
            continue
        r = measure(name, params, d=args.d, seeds=args.seeds)
        theory = "-" if r["theory"] is None else f"{r['theory']:.4g}"
        print(
            f"| {r['codec']} | {r['bits']:.4f} | {r['vnmse']:.4g} ± {r['se']:.2g} "
            f"| {theory} "
            f"| {'yes' if r['unbiased'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
