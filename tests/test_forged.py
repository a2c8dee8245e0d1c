"""Forged headers: every codec refuses absurd lengths and counts before allocating.

A payload's header declares d (up to 2**48) and its body may declare counts (kept
coordinates for sub-bit EDEN, ceil-bit coordinates for fractional EDEN, QUIC-FL
outliers). Every codec checks them against the payload's length for its own
parameters first, so a forged reply costs no more memory or time than its own bytes:
measured here in a child process (peak RSS, an address-space cap, wall time).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from factories import make_gaussian

import fedrot
from fedrot.codecs import CODECS

CONFIGS: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in sorted(CODECS)] + [
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 0.05}),
    ("eden", {"bits": 2.5}),
    ("quic-fl", {"bits": 1}),
    ("topk", {"fraction": 1e-6}),
    ("randk", {"fraction": 1e-6}),
]
HUGE = [2**40, 2**48 - 1, 2**31 + 1]


def _recrc(blob: bytes | bytearray) -> bytes:
    body = bytes(blob[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def _with_d(blob: bytes, d: int) -> bytes:
    return _recrc(blob[:8] + struct.pack("<Q", d) + blob[16:])


def _with_count(blob: bytes, count: int, d: int | None = None) -> bytes:
    """Rewrite the u64 count at the start of the body (and optionally d)."""
    (plen,) = struct.unpack_from("<H", blob, 6)
    at = 16 + plen
    b = bytearray(_with_d(blob, d) if d is not None else blob)
    b[at : at + 8] = struct.pack("<Q", count)
    return _recrc(b)


def _has_count(name: str, params: dict[str, Any]) -> bool:
    bits = params.get("bits", 2)
    return name == "quic-fl" or (name == "eden" and not float(bits).is_integer())


def forged_payloads(name: str, params: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(label, payload) pairs with absurd headers or counts for one codec."""
    codec = fedrot.get_codec(name, **params)
    blob = codec.encode(make_gaussian(5000, 1).float(), seed=1, client=2)
    out = [(f"d={d}", _with_d(blob, d)) for d in HUGE]
    if _has_count(name, params):
        p = params.get("bits", 2) if name == "eden" else 1.0
        keep = p if p < 1 else 1.0
        for d in HUGE:
            # a count that is plausible for the forged d, with the genuine body
            out.append((f"count~{keep}*d, d={d}", _with_count(blob, int(keep * d), d)))
        for count in (2**64 - 1, 2**40, 5000, 5001):
            out.append((f"count={count}", _with_count(blob, count)))
    return out


@pytest.mark.parametrize("name,params", CONFIGS, ids=[f"{n}-{p}" for n, p in CONFIGS])
def test_every_codec_refuses_forged_headers_with_a_payload_error(
    name: str, params: dict[str, Any]
) -> None:
    codec = fedrot.get_codec(name, **params)
    good = codec.encode(make_gaussian(5000, 1).float(), seed=1, client=2)
    assert codec.check(good, d=5000).d == 5000
    for label, bad in forged_payloads(name, params):
        with pytest.raises(fedrot.PayloadError):
            codec.check(bad)
            pytest.fail(f"check accepted {label}")
        with pytest.raises(fedrot.PayloadError):
            codec.decode(bad, seed=1, client=2)
            pytest.fail(f"decode accepted {label}")
        with pytest.raises(fedrot.PayloadError, match="Payload 1 \\(client 2\\)"):
            codec.aggregate([good, bad], seed=1, clients=[2, 2])


def test_check_with_the_model_length_names_both_lengths() -> None:
    codec = fedrot.get_codec("eden", bits=0.5)
    blob = codec.encode(make_gaussian(5000, 1).float(), seed=1, client=2)
    with pytest.raises(
        fedrot.PayloadError, match="holds d = 5000 values but the model has 4999"
    ):
        codec.check(blob, d=4999)
    with pytest.raises(ValueError, match="`d` must be an int >= 1"):
        codec.check(blob, d=0)
    assert codec.check(blob).d == 5000


def _child() -> None:
    """Decode every forged payload under an address-space cap; print measurements."""
    torch.set_num_threads(1)
    cases = []
    for name, params in CONFIGS:
        codec = fedrot.get_codec(name, **params)
        good = codec.encode(make_gaussian(5000, 1).float(), seed=1, client=2)
        codec.decode(good, seed=1, client=2)  # warm up tables, kernels, allocator
        cases += [(codec, label, bad) for label, bad in forged_payloads(name, params)]
    with open("/proc/self/status") as f:
        vm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmSize:")) * 1024
    cap = vm + (512 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = []
    for codec, label, bad in cases:
        start = time.perf_counter()
        try:
            codec.decode(bad, seed=1, client=2)
            outcome = "accepted"
        except fedrot.PayloadError:
            outcome = "PayloadError"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            outcome = f"{type(exc).__name__}: {exc}"[:200]
        results.append(
            {
                "case": f"{codec!r} {label}",
                "outcome": outcome,
                "seconds": time.perf_counter() - start,
                "rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                - base,
            }
        )
    print(json.dumps(results))


def test_forged_headers_cost_little_memory_and_time() -> None:
    tests = Path(__file__).parent
    code = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); "
        "import test_forged; test_forged._child()"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) >= 60
    for r in results:
        assert r["outcome"] == "PayloadError", r
        assert r["seconds"] < 1.0, r
        assert r["rss_growth_kib"] < 50 * 1024, r
