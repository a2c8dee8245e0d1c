"""Huge, tiny and mixed-scale inputs: every codec round-trips them or refuses at encode.

The oracle is scale equivariance: multiplying an input by a power of two 2**e is exact,
so a codec's estimate of an extreme input must equal ``2**-e`` times its estimate of
the same input brought to magnitude ~1 (same seed and client). A codec may refuse an
input only at ``encode``, with a ValueError naming float32's range, and only when the
input is within a small factor of float32's largest value.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from factories import make_gaussian

import fedrot
from fedrot.codecs import CODECS

F32_MAX = torch.finfo(torch.float32).max

CODECS_UNDER_TEST: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {}),
    ("drive", {}),
    ("drive", {"scale": "biased", "rotations": "auto"}),
    ("eden", {"bits": 2}),
    ("eden", {"bits": 0.5}),
    ("eden", {"bits": 1.5}),
    ("quic-fl", {"bits": 2}),
    ("vq", {"bits": 2}),
    ("hadamard-sq", {"bits": 2}),
    ("qsgd", {"levels": 3}),
    ("terngrad", {}),
    ("terngrad", {"clip": 2.5}),
    ("topk", {}),
    ("randk", {}),
    ("signsgd", {}),
]


def _extreme_inputs() -> dict[str, torch.Tensor]:
    g = make_gaussian(5000, 0).float()
    spike = g.clone()
    spike[0] = 1e20
    mixed = torch.cat([make_gaussian(600, 1) * 1e-30, make_gaussian(600, 2) * 1e30])
    return {
        "spike 1e20": spike,
        "gaussian 1e19": g * 1e19,
        "gaussian 1e30": g * 1e30,
        "two of 3e38": torch.tensor([3e38, 3e38, 1.0]),
        "all ±3e38": torch.where(g[:100] < 0, -3e38, 3e38),
        "subnormal 1e-40": g[:1000] * 1e-40,
        "tiny 1e-20": g * 1e-20,
        "mixed 1e±30": mixed.float(),
    }


EXTREME = _extreme_inputs()
#: Inputs within a factor 2**4 of float32's largest value: the only ones a codec may
#: refuse (a scale or the estimate itself can exceed float32 there).
MAY_REFUSE = {"two of 3e38", "all ±3e38"}


def _exponent(x: torch.Tensor) -> int:
    """Even e with max|x| * 2**e in [0.5, 2)."""
    e = 1 - math.frexp(float(x.abs().max()))[1]
    return e - e % 2


@pytest.mark.parametrize("case", sorted(EXTREME))
@pytest.mark.parametrize(
    "name,params", CODECS_UNDER_TEST, ids=[f"{n}-{p}" for n, p in CODECS_UNDER_TEST]
)
def test_extreme_inputs_round_trip_or_are_refused_at_encode(
    name: str, params: dict[str, Any], case: str
) -> None:
    codec = fedrot.get_codec(name, **params)
    x = EXTREME[case]
    e = _exponent(x)
    ordinary = (x.double() * 2.0**e).float()
    for seed in range(3):
        try:
            blob = codec.encode(x, seed=seed, client=7)
        except ValueError as exc:
            assert case in MAY_REFUSE, (case, str(exc))
            assert "float32's range" in str(exc) and "Scale the update down" in str(exc)
            continue
        out = codec.decode(blob, seed=seed, client=7)  # never a PayloadError
        assert bool(torch.isfinite(out).all())
        ref = codec.decode(
            codec.encode(ordinary, seed=seed, client=7), seed=seed, client=7
        )
        ref = ref.double() * 2.0**-e
        # Equal but for roundings: of values that underflow in the ordinary copy, and
        # of subnormal scales and outputs (absolute spacing 2**-149 per value).
        norm = float(x.double().norm())
        tol = 1e-6 + 4 * 2.0**-149 * math.sqrt(x.numel()) / norm
        assert float((out.double() - ref).norm()) / norm < tol, (case, seed)
        if float(ref.norm()) > 0:
            assert float(out.double().norm()) > 0  # never silent zeros


@pytest.mark.parametrize("case", ["spike 1e20", "subnormal 1e-40", "gaussian 1e30"])
@pytest.mark.parametrize("name", ["eden", "quic-fl", "drive", "qsgd"])
def test_aggregate_of_extreme_inputs_equals_the_weighted_mean_of_decodes(
    name: str, case: str
) -> None:
    codec = fedrot.get_codec(name)
    x = EXTREME[case]
    blobs = [codec.encode(x * (1 + c), seed=4, client=c) for c in range(3)]
    decoded = [codec.decode(b, seed=4, client=c).double() for c, b in enumerate(blobs)]
    mean = codec.aggregate(blobs, seed=4, clients=[0, 1, 2], weights=[1.0, 1.0, 2.0])
    expected = (decoded[0] + decoded[1] + 2 * decoded[2]) / 4
    assert bool(torch.isfinite(mean).all())
    assert float((mean.double() - expected).norm() / expected.norm()) < 1e-5


def test_every_registered_codec_is_covered() -> None:
    assert {n for n, _ in CODECS_UNDER_TEST} | {"fp16"} == set(CODECS)


def test_fp16_refuses_its_overflow_and_flushes_below_its_resolution() -> None:
    codec = fedrot.get_codec("fp16")
    for big in (1e20, 65520.0):
        with pytest.raises(ValueError, match="float16's range.*65504"):
            codec.encode(torch.tensor([1.0, big]), seed=0, client=0)
    tiny = EXTREME["subnormal 1e-40"]
    out = codec.decode(codec.encode(tiny, seed=0, client=0), seed=0, client=0)
    assert float((out - tiny).abs().max()) <= 2.0**-25  # fp16's rounding, documented


def test_fp32_carries_extreme_values_bit_for_bit() -> None:
    codec = fedrot.get_codec("fp32")
    for x in EXTREME.values():
        out = codec.decode(codec.encode(x, seed=0, client=0), seed=0, client=0)
        assert torch.equal(out, x.float())
