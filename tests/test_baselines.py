"""Baseline codecs against closed forms and the reference numbers (section 8.E)."""

from __future__ import annotations

import math

import pytest
import torch
from factories import make_gaussian, make_lognormal, mean_vnmse, vnmse

import fedrot

D = 1 << 16


def _rotated(x: torch.Tensor, seed: int, client: int) -> torch.Tensor:
    from fedrot.codecs._rotation import Rotation

    return Rotation(1).forward(x.float(), seed=seed, client=client).y.double()


def test_exact_paths() -> None:
    x = make_gaussian(12345, 0).float()
    fp32 = fedrot.get_codec("fp32")
    assert torch.equal(
        fp32.decode(fp32.encode(x, seed=0, client=0), seed=0, client=0), x
    )
    fp16 = fedrot.get_codec("fp16")
    assert torch.equal(
        fp16.decode(fp16.encode(x, seed=0, client=0), seed=0, client=0),
        x.half().float(),
    )
    with pytest.raises(ValueError, match="float16"):
        fp16.encode(torch.tensor([1e6]), seed=0, client=0)


def test_hadamard_sq_matches_its_closed_form_and_reference() -> None:
    codec = fedrot.get_codec("hadamard-sq", bits=1)
    x = make_gaussian(D, 1)
    exact, measured = [], []
    for s in range(30):
        y = _rotated(x, s, 1)
        exact.append(float(((y - y.min()) * (y.max() - y)).sum() / y.square().sum()))
        measured.append(
            vnmse(codec.decode(codec.encode(x, seed=s, client=1), seed=s, client=1), x)
        )
    mean = sum(measured) / len(measured)
    assert abs(mean / (sum(exact) / len(exact)) - 1) < 0.01
    assert abs(mean / 17.85 - 1) < 0.05
    assert mean < (2 * math.log(D) + 2)


def test_hadamard_sq_four_bits() -> None:
    mean, _ = mean_vnmse(
        fedrot.get_codec("hadamard-sq", bits=4), make_gaussian(D, 2), range(20)
    )
    assert abs(mean / 0.0549 - 1) < 0.05


@pytest.mark.parametrize("levels,reference", [(1, 203.9), (3, 66.8), (15, 12.6)])
def test_qsgd(levels: int, reference: float) -> None:
    x = make_gaussian(D, 3)
    # the per-seed error is a sum of rare level jumps (s = 1: ~Poisson(204) of them,
    # 7% relative spread), so average many seeds
    seeds = range(200 if levels == 1 else 40)
    mean, _ = mean_vnmse(fedrot.get_codec("qsgd", levels=levels), x, seeds)
    assert abs(mean / reference - 1) < 0.05
    if levels == 1:
        closed = float(x.abs().sum() / x.norm()) - 1
        assert abs(mean / closed - 1) < 0.02


def test_terngrad_equals_closed_form() -> None:
    for x in (make_gaussian(D, 4), make_lognormal(D, 5)):
        closed = float(x.abs().max() * x.abs().sum() / x.square().sum()) - 1
        mean, _ = mean_vnmse(fedrot.get_codec("terngrad"), x, range(100))
        assert abs(mean / closed - 1) < 0.02


def test_terngrad_clipping_bounds_the_scale() -> None:
    x = make_gaussian(D, 6)
    x[0] = 100.0
    codec = fedrot.get_codec("terngrad", clip=2.5)
    out = codec.decode(codec.encode(x, seed=1, client=1), seed=1, client=1)
    assert float(out.abs().max()) <= 2.5 * float(x.std()) * 1.0001
    assert codec.info(D).unbiased is False


def test_topk_and_randk() -> None:
    x = make_gaussian(D, 7)
    topk = fedrot.get_codec("topk", fraction=1 / 32)
    mean, _ = mean_vnmse(topk, x, range(1))
    assert abs(mean - 0.800) < 0.01
    randk = fedrot.get_codec("randk", fraction=1 / 32)
    mean, _ = mean_vnmse(randk, x, range(40))
    assert abs(mean / 31 - 1) < 0.03


def test_signsgd() -> None:
    x = make_gaussian(D, 8)
    mean, _ = mean_vnmse(fedrot.get_codec("signsgd"), x, range(1))
    assert (
        abs(mean - (1 - float(x.abs().sum()) ** 2 / (D * float(x.square().sum()))))
        < 1e-5
    )


@pytest.mark.parametrize(
    "name,kw",
    [
        ("qsgd", {"levels": 1}),
        ("terngrad", {}),
        ("randk", {"fraction": 0.25}),
        ("hadamard-sq", {"bits": 2}),
    ],
)
def test_unbiased_baselines_average_to_x(name: str, kw: dict) -> None:
    codec = fedrot.get_codec(name, **kw)
    x = make_lognormal(1 << 10, 9)
    n = 400
    single, _ = mean_vnmse(codec, x, range(20))
    acc = torch.zeros_like(x)
    for s in range(n):
        acc += codec.decode(
            codec.encode(x, seed=s, client=2), seed=s, client=2
        ).double()
    assert vnmse(acc / n, x) < 2 * single / n
