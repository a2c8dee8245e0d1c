"""Determinism: one seed gives the same bytes whatever process, thread count or kernels.

Every codec's payloads, decodes and a weighted aggregate of four clients are hashed
(SHA-256) in child processes that differ only in torch's thread count (1, 2, 16;
also 3 in the slow matrix) and in the compiled kernels (on, or off through
``FEDROT_KERNELS=0``, which is read when fedrot is imported, hence the child
processes). Each process hashes the payload it encodes with its own thread count,
and a reference payload encoded with one thread, which it decodes and aggregates,
so that decoding is tested on its own. Sizes cover one short piece, a 65,536-value
piece next to a tail, and a vector above 2**20 whose kernels split the work across
threads (one thread per 2**18 values; compared with the torch path in the slow
matrix, where the torch path's time there is affordable).

``tests/test_golden.py`` pins the bytes with one thread, ``tests/test_kernels.py``
compares the kernels with the torch path inside one process, and
``tests/test_seeds.py`` repeats one small encode in two processes; this file adds
the thread counts, the environment switch and the large sizes.

torch splits a float32 sum over one row longer than 32,768 values (a one-piece group,
or signSGD's whole-vector mean) over its threads; :mod:`fedrot.reductions` pins those
sums to one thread, so payloads too are the same for every thread count (the sizes
65,536 <= d < 131,072 exercise it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

import fedrot

#: Child process: prints, as JSON, the SHA-256 of every payload, decode and aggregate
#: for the codec settings and sizes given in argv[1].
_WORKER = r"""
import hashlib, json, sys
import numpy as np
import torch

job = json.loads(sys.argv[1])
torch.set_num_threads(job["threads"])
import fedrot
from fedrot import _kernels

SEED, CLIENT = 2**63 + 11, 2**64 - 3
WEIGHTS = [1.0, 2.0, 3.5, 0.25]


def vector(d, k):
    # Gaussian with heavy tails and a zero stretch (float32; numpy's PCG64 stream)
    rng = np.random.default_rng([d, k])
    u = rng.random(d)
    x = rng.standard_normal(d) * (1.0 + 8.0 * u * u * u)
    x[d // 3 : d // 3 + d // 10] = 0.0
    return x.astype(np.float32)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def one_thread(fn):
    # a reference payload, encoded with one thread whatever this process uses
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


out = {}
for name, params in job["configs"]:
    codec = fedrot.get_codec(name, **params)
    for d in job["sizes"]:
        x = vector(d, 0)
        key = f"{name} {params} d={d}"
        out[key + " payload"] = sha(codec.encode(x, seed=SEED, client=CLIENT))
        ref = one_thread(lambda: codec.encode(x, seed=SEED, client=CLIENT))
        out[key + " payload@1"] = sha(ref)
        decoded = codec.decode(ref, seed=SEED, client=CLIENT)
        out[key + " decode"] = sha(decoded.numpy().tobytes())
        if d in job["aggregate_sizes"]:
            blobs = one_thread(
                lambda: [codec.encode(vector(d, c), seed=7, client=c) for c in range(4)]
            )
            agg = codec.aggregate(blobs, seed=7, clients=range(4), weights=WEIGHTS)
            out[key + " aggregate"] = sha(agg.numpy().tobytes())
print(json.dumps({
    "threads": torch.get_num_threads(),
    "kernels": _kernels.available(),
    "digests": out,
}))
"""

#: Representative settings of every registered codec (checked below).
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {}),
    ("fp16", {}),
    ("drive", {}),
    ("drive", {"scale": "biased", "rotations": "auto"}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 1}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 4, "rotations": "auto", "chunk_size": 4096}),
    ("quic-fl", {"bits": 2}),
    ("quic-fl", {"bits": 4, "rotations": 1}),
    ("vq", {"bits": 2}),
    ("hadamard-sq", {"bits": 2}),
    ("qsgd", {"levels": 15}),
    ("terngrad", {}),
    ("topk", {"fraction": 0.05}),
    ("randk", {"fraction": 0.1}),
    ("signsgd", {}),
]

#: More settings for the slow matrix.
SLOW_CONFIGS: list[tuple[str, dict[str, Any]]] = CONFIGS + [
    ("drive", {"rotations": 1, "chunk_size": 1024}),
    ("eden", {"bits": 0.1}),
    ("eden", {"bits": 2.5, "rotations": 3}),
    ("eden", {"bits": 3}),
    ("eden", {"bits": 8}),
    ("quic-fl", {"bits": 1}),
    ("quic-fl", {"bits": 3, "outlier_fraction": 1 / 128, "rotations": "auto"}),
    ("vq", {"bits": 1}),
    ("vq", {"bits": 2, "block": 4, "rotations": 3}),
    ("hadamard-sq", {"bits": 4, "rotations": 1}),
    ("qsgd", {"levels": 1}),
    ("terngrad", {"clip": 2.5}),
    ("topk", {"fraction": 0.3}),
    ("randk", {"fraction": 0.01}),
]

#: 33: one short piece; 70,001: a 65,536-value piece and a tail; 2**20 + 7: sixteen
#: pieces, and the kernels' threaded path.
SIZES = [33, 70_001, (1 << 20) + 7]
SWITCH_SIZES = SIZES[:2]
SLOW_SIZES = [1, 1000, 65_537, 3 * 65_536 + 1, (1 << 20) + 7]


def _run(
    configs: Sequence[tuple[str, dict[str, Any]]],
    runs: dict[tuple[int, bool], Sequence[int]],
    aggregate_sizes: Sequence[int],
) -> dict[tuple[int, bool], dict[str, Any]]:
    """Digests from one child process per (threads, kernels) and its sizes, run
    concurrently."""
    procs = {}
    for (threads, kernels), sizes in runs.items():
        env = {k: v for k, v in os.environ.items() if k != "FEDROT_KERNELS"}
        if not kernels:
            env["FEDROT_KERNELS"] = "0"
        job = {"configs": list(configs), "sizes": list(sizes), "threads": threads}
        job["aggregate_sizes"] = [d for d in aggregate_sizes if d in sizes]
        argv = [sys.executable, "-c", _WORKER, json.dumps(job)]
        procs[threads, kernels] = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    try:
        for run, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=1200)
            assert proc.returncode == 0, f"child {run} failed:\n{stderr}"
            results[run] = json.loads(stdout)
            assert results[run]["threads"] == run[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


#: Digest kinds: "payload" is encoded with the run's thread count; "payload@1" is the
#: reference payload encoded with one thread, which "decode" and "aggregate" (four
#: reference payloads) use, so those two test decoding alone.
PAYLOAD = ("payload",)
DECODING = ("payload@1", "decode", "aggregate")
ALL = PAYLOAD + DECODING


def _mismatches(
    results: dict[tuple[int, bool], dict[str, Any]],
    runs: Sequence[tuple[int, bool]],
    case: str,
    kinds: Sequence[str],
) -> list[str]:
    """The digests of ``case`` and ``kinds`` that differ between ``runs``."""
    first = results[runs[0]]["digests"]
    keys = [f"{case} {kind}" for kind in kinds if f"{case} {kind}" in first]
    assert keys, f"no digests for {case!r}"
    bad = []
    for key in keys:
        values = {run: results[run]["digests"][key] for run in runs}
        if len(set(values.values())) > 1:
            bad.append(
                f"{key}: " + ", ".join(f"{r}={v[:12]}" for r, v in values.items())
            )
    return bad


def _require_kernels(results: dict[tuple[int, bool], dict[str, Any]]) -> None:
    """Skip when the compiled kernels could not be built here (no C compiler)."""
    for (_, kernels), result in results.items():
        if not kernels:
            assert not result["kernels"], "FEDROT_KERNELS=0 left the kernels on"
        elif not result["kernels"]:
            pytest.skip("compiled kernels unavailable: the comparison would be vacuous")


def _cases(
    configs: Sequence[tuple[str, dict[str, Any]]], sizes: Sequence[int]
) -> list[Any]:
    """(name, params, d) parameters with readable ids."""
    return [
        pytest.param(name, params, d, id=f"{name}-{params}-{d}")
        for name, params in configs
        for d in sizes
    ]


_THREADS = [(1, True), (2, True), (16, True)]
_SWITCH = [(2, True), (2, False)]
_SLOW_RUNS = [(1, True), (2, True), (3, True), (16, True), (1, False), (16, False)]


@pytest.fixture(scope="module")
def default_matrix() -> dict[tuple[int, bool], dict[str, Any]]:
    # the torch path is slow at 2**20 (the slow matrix compares it there)
    runs = {run: SIZES for run in _THREADS} | {(2, False): SWITCH_SIZES}
    return _run(CONFIGS, runs, [70_001])


@pytest.fixture(scope="module")
def slow_matrix() -> dict[tuple[int, bool], dict[str, Any]]:
    runs = {run: SLOW_SIZES for run in _SLOW_RUNS}
    return _run(SLOW_CONFIGS, runs, [65_537, 3 * 65_536 + 1])


def test_every_codec_is_covered() -> None:
    assert {name for name, _ in CONFIGS} == set(fedrot.available_codecs())


def test_mismatches_are_detected() -> None:
    digests = {"eden {} d=5 payload": "aa", "eden {} d=5 decode": "b"}
    fake = {
        (1, True): {"digests": digests},
        (2, True): {"digests": {**digests, "eden {} d=5 payload": "ab"}},
    }
    runs = [(1, True), (2, True)]
    assert _mismatches(fake, runs, "eden {} d=5", ALL) == [
        "eden {} d=5 payload: (1, True)=aa, (2, True)=ab"
    ]
    assert _mismatches(fake, runs, "eden {} d=5", DECODING) == []


def _case(name: str, params: dict[str, Any], d: int) -> str:
    return f"{name} {params} d={d}"


@pytest.mark.parametrize("name,params,d", _cases(CONFIGS, SWITCH_SIZES))
def test_kernels_switched_off_in_another_process_give_the_same_bytes(
    default_matrix: dict[tuple[int, bool], dict[str, Any]],
    name: str,
    params: dict[str, Any],
    d: int,
) -> None:
    _require_kernels(default_matrix)
    case = _case(name, params, d)
    assert _mismatches(default_matrix, _SWITCH, case, ALL) == []


@pytest.mark.parametrize("name,params,d", _cases(CONFIGS, SIZES))
def test_decodes_and_aggregates_are_the_same_for_any_thread_count(
    default_matrix: dict[tuple[int, bool], dict[str, Any]],
    name: str,
    params: dict[str, Any],
    d: int,
) -> None:
    _require_kernels(default_matrix)
    case = _case(name, params, d)
    assert _mismatches(default_matrix, _THREADS, case, DECODING) == []


@pytest.mark.parametrize("name,params,d", _cases(CONFIGS, SIZES))
def test_payloads_are_the_same_for_any_thread_count(
    default_matrix: dict[tuple[int, bool], dict[str, Any]],
    name: str,
    params: dict[str, Any],
    d: int,
) -> None:
    _require_kernels(default_matrix)
    case = _case(name, params, d)
    assert _mismatches(default_matrix, _THREADS, case, PAYLOAD) == []


@pytest.mark.slow
@pytest.mark.parametrize("name,params,d", _cases(SLOW_CONFIGS, SLOW_SIZES))
def test_slow_kernels_switch_and_decoding_threads(
    slow_matrix: dict[tuple[int, bool], dict[str, Any]],
    name: str,
    params: dict[str, Any],
    d: int,
) -> None:
    _require_kernels(slow_matrix)
    case = _case(name, params, d)
    for t in (1, 16):
        assert _mismatches(slow_matrix, [(t, True), (t, False)], case, ALL) == []
    assert _mismatches(slow_matrix, _SLOW_RUNS, case, DECODING) == []


@pytest.mark.slow
@pytest.mark.parametrize("name,params,d", _cases(SLOW_CONFIGS, SLOW_SIZES))
def test_slow_payload_threads_with_and_without_kernels(
    slow_matrix: dict[tuple[int, bool], dict[str, Any]],
    name: str,
    params: dict[str, Any],
    d: int,
) -> None:
    _require_kernels(slow_matrix)
    case = _case(name, params, d)
    for kernels in (True, False):
        runs = [run for run in _SLOW_RUNS if run[1] == kernels]
        assert _mismatches(slow_matrix, runs, case, PAYLOAD) == []
