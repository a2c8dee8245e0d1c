"""The registry and the pinned public API: names, parameters, inputs, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedrot
from fedrot.codecs import CODEC_IDS, CODECS

CORE = [
    "drive",
    "eden",
    "fp16",
    "fp32",
    "hadamard-sq",
    "qsgd",
    "randk",
    "signsgd",
    "terngrad",
    "topk",
]


def test_registry_lists_codecs_with_unique_ids() -> None:
    names = fedrot.available_codecs()
    assert set(CORE) <= set(names) and names == sorted(names)
    assert len(set(CODEC_IDS.values())) == len(CODEC_IDS)
    assert all(CODECS[n].name == n for n in names)


def test_unknown_names_and_parameters_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Valid codecs: .*eden"):
        fedrot.get_codec("edenn")
    with pytest.raises(ValueError, match="Valid parameters: bits, rotations"):
        fedrot.get_codec("eden", bitz=2)
    with pytest.raises(ValueError, match="rotations"):
        fedrot.get_codec("eden", rotations=4)
    with pytest.raises(ValueError, match="bits"):
        fedrot.get_codec("eden", bits=9)
    with pytest.raises(ValueError, match="chunk_size"):
        fedrot.get_codec("drive", chunk_size=1000)
    with pytest.raises(ValueError, match="scale"):
        fedrot.get_codec("drive", scale="median")
    with pytest.raises(ValueError, match="device"):
        fedrot.get_codec("eden", device="tpu:0")
    with pytest.raises(TypeError):
        fedrot.get_codec("eden", 2)  # type: ignore[misc]


@pytest.mark.parametrize("name", CORE)
def test_every_codec_round_trips_numpy_and_torch_inputs(name: str) -> None:
    codec = fedrot.get_codec(name)
    x64 = np.linspace(-3, 3, 3001)
    for x in (x64, torch.from_numpy(x64).float(), x64.astype(np.float16)):
        blob = codec.encode(x, seed=5, client=2**64 - 1)
        assert isinstance(blob, bytes)
        out = codec.decode(blob, seed=5, client=2**64 - 1)
        assert out.dtype == torch.float32 and out.shape == (3001,)
    assert isinstance(codec.info(3001), fedrot.CodecInfo)
    assert eval("fedrot." + repr(codec)).params() == codec.params()  # repr recreates it
    one = codec.decode(
        codec.encode(torch.tensor([2.5]), seed=0, client=0), seed=0, client=0
    )
    assert one.shape == (1,)


@pytest.mark.parametrize("name", CORE)
def test_bad_inputs_get_clear_errors(name: str) -> None:
    codec = fedrot.get_codec(name)
    with pytest.raises(ValueError, match="NaN/Inf"):
        codec.encode(torch.tensor([1.0, float("nan")]), seed=0, client=0)
    with pytest.raises(ValueError, match="NaN/Inf"):
        codec.encode(np.array([1.0, np.inf]), seed=0, client=0)
    with pytest.raises(ValueError, match="1-D"):
        codec.encode(torch.zeros(2, 3), seed=0, client=0)
    with pytest.raises(TypeError, match="float"):
        codec.encode(torch.arange(4), seed=0, client=0)
    with pytest.raises(TypeError, match="1-D torch.Tensor or numpy"):
        codec.encode([1.0, 2.0], seed=0, client=0)
    with pytest.raises(ValueError, match="empty"):
        codec.encode(torch.zeros(0), seed=0, client=0)
    with pytest.raises(ValueError, match="client"):
        codec.encode(torch.zeros(4), seed=0, client=-1)
    with pytest.raises(ValueError, match="seed"):
        codec.encode(torch.zeros(4), seed=2**64, client=0)


@pytest.mark.parametrize("name", CORE)
def test_zero_vector_and_input_not_mutated(name: str) -> None:
    codec = fedrot.get_codec(name)
    out = codec.decode(
        codec.encode(torch.zeros(100), seed=1, client=1), seed=1, client=1
    )
    assert torch.equal(out, torch.zeros(100))
    x = torch.randn(100)
    before = x.clone()
    codec.encode(x, seed=1, client=1)
    assert torch.equal(x, before)


def test_wrong_seed_or_client_gives_garbage_not_the_vector() -> None:
    codec = fedrot.get_codec("eden", bits=2)
    x = torch.randn(1 << 14)
    blob = codec.encode(x, seed=1, client=1)
    wrong = codec.decode(blob, seed=1, client=2)
    err = float((wrong - x).square().sum() / x.square().sum())
    assert 1.8 < err < 2.5  # ~ 2 + vNMSE: an independent vector of the same norm


def test_info_reports_facts() -> None:
    eden = fedrot.get_codec("eden", bits=2).info(1 << 20)
    assert (
        eden.unbiased
        and not eden.shared_rotation
        and eden.expected_vnmse == pytest.approx(0.1331, rel=1e-3)
    )
    assert 2.0 < eden.bits_per_coordinate < 2.01
    assert not fedrot.get_codec("drive", scale="biased").info(10).unbiased
    assert not fedrot.get_codec("topk").info(10).unbiased
    with pytest.raises(ValueError, match="d"):
        fedrot.get_codec("drive").info(0)


def test_public_api_is_small_and_resolves() -> None:
    assert len(fedrot.__all__) <= 12
    for name in fedrot.__all__:
        assert getattr(fedrot, name) is not None
    assert issubclass(fedrot.PayloadError, ValueError)
    from fedrot.hadamard import fwht  # noqa: F401  (pinned import path)


@pytest.mark.gpu
@pytest.mark.parametrize("name", CORE)
def test_cuda_and_cpu_payloads_are_interchangeable(name: str) -> None:
    x = torch.randn(70000)
    cpu = fedrot.get_codec(name)
    gpu = fedrot.get_codec(name, device="cuda")
    from_gpu = gpu.encode(x.cuda(), seed=3, client=4)
    from_cpu = cpu.encode(x, seed=3, client=4)
    assert len(from_gpu) == len(from_cpu)
    for blob in (from_gpu, from_cpu):
        a = gpu.decode(blob, seed=3, client=4).cpu()
        b = cpu.decode(blob, seed=3, client=4)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_flower_subpackages_export_what_they_declare() -> None:
    import fedrot.clients
    import fedrot.strategies

    for module in (fedrot.strategies, fedrot.clients):
        names = module.__all__
        assert names and all(getattr(module, n) is not None for n in names)
    assert "CompressedStrategy" in fedrot.strategies.__all__
    assert "compression_mod" in fedrot.clients.__all__


def test_lossless_is_a_declared_fact_true_only_for_fp32() -> None:
    lossless = {name for name, cls in CODECS.items() if cls.lossless}
    assert lossless == {"fp32"}
    x = torch.tensor([1e-40, -3e38, 1.0 + 2**-23, 0.1], dtype=torch.float32)
    for name in CODECS:
        codec = fedrot.get_codec(name)
        assert codec.lossless is CODECS[name].lossless
        out = codec.decode(codec.encode(x[2:], seed=1, client=1), seed=1, client=1)
        assert torch.equal(out, x[2:]) or not codec.lossless
    fp32 = fedrot.get_codec("fp32")
    out = fp32.decode(fp32.encode(x, seed=1, client=1), seed=1, client=1)
    assert torch.equal(out.view(torch.int32), x.view(torch.int32))


def test_protocol_facts_are_plain_attributes() -> None:
    import inspect

    for cls in CODECS.values():
        for fact in ("lossless", "unbiased", "exact_size", "shared_rotation"):
            assert isinstance(inspect.getattr_static(cls, fact), bool), (cls, fact)
    assert fedrot.get_codec("drive").unbiased
    assert not fedrot.get_codec("drive", scale="biased").unbiased
    assert not fedrot.get_codec("terngrad", clip=2.5).unbiased
    assert fedrot.get_codec("terngrad").unbiased
    assert not fedrot.get_codec("eden", bits=2.5).exact_size
    assert fedrot.get_codec("eden", bits=3).exact_size
