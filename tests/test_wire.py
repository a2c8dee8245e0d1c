"""Wire format: exact sizes, the chunking bound, validation and decoder fuzzing."""

from __future__ import annotations

import math
import random
import struct
import zlib

import pytest
import torch
from factories import make_gaussian
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedrot
from fedrot import wire
from fedrot.chunking import plan_chunks

FIXED_SIZE = [
    "fp32",
    "fp16",
    "drive",
    "hadamard-sq",
    "qsgd",
    "terngrad",
    "topk",
    "randk",
    "signsgd",
]


def _refresh_crc(blob: bytes | bytearray) -> bytes:
    body = bytes(blob[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    d=st.integers(1, 300_000),
    bits=st.integers(1, 8),
    k=st.sampled_from([1, 2, 3]),
    chunk_log2=st.sampled_from([10, 14, 16]),
)
def test_eden_payload_size_formula(d: int, bits: int, k: int, chunk_log2: int) -> None:
    codec = fedrot.get_codec("eden", bits=bits, rotations=k, chunk_size=1 << chunk_log2)
    blob = codec.encode(torch.ones(d), seed=d, client=k)
    plan = plan_chunks(d, chunk_log2)
    # envelope 20 + params (float64 bits, rotation mode) 9 + scales + packed codes
    expected = 20 + 9 + 4 * plan.num_pieces + math.ceil(plan.padded * bits / 8)
    assert len(blob) == expected == codec.info(d).payload_bytes
    assert wire.parse(blob)[0].rotations == k


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 100_000), name=st.sampled_from(FIXED_SIZE))
def test_every_fixed_size_codec_matches_info(d: int, name: str) -> None:
    codec = fedrot.get_codec(name)
    blob = codec.encode(torch.linspace(-1, 2, d), seed=1, client=2)
    info = codec.info(d)
    assert len(blob) == info.payload_bytes
    assert info.bits_per_coordinate == pytest.approx(8 * len(blob) / d)


@pytest.mark.parametrize("d", [4096, 4097, 5000, 65537, 1_000_003, 3_000_000])
@pytest.mark.parametrize(
    "name,kw,b",
    [("drive", {}, 1), ("eden", {"bits": 3}, 3), ("hadamard-sq", {"bits": 2}, 2)],
)
def test_chunking_bound_on_the_wire(d: int, name: str, kw: dict, b: int) -> None:
    codec = fedrot.get_codec(name, **kw)
    blob = codec.encode(torch.randn(d), seed=0, client=0)
    header = codec.info(d).header_bytes
    assert 8 * len(blob) <= b * d * 1.01 + 8 * header
    assert header <= 40 + 8 * plan_chunks(d, 16).num_pieces  # O(number of pieces)


def test_errors_say_what_is_wrong() -> None:
    codec = fedrot.get_codec("eden", bits=2)
    blob = codec.encode(make_gaussian(5000, 0), seed=1, client=1)
    cases = {
        "truncated": blob[:10],
        "magic": b"XX" + blob[2:],
        "version": _refresh_crc(blob[:2] + bytes([9]) + blob[3:]),
        "CRC": blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:],
        "codec id": _refresh_crc(blob[:3] + bytes([2]) + blob[4:]),
        "parameters": _refresh_crc(blob[:16] + struct.pack("<d", 3.0) + blob[24:]),
        "length": _refresh_crc(blob[:-5] + b"\0" + blob[-5:]),
    }
    for what, bad in cases.items():
        with pytest.raises(fedrot.PayloadError) as err:
            codec.decode(bad, seed=1, client=1)
        assert what.split()[0].lower() in str(err.value).lower(), (what, str(err.value))
    with pytest.raises(fedrot.PayloadError, match="bytes"):
        codec.decode("not bytes", seed=1, client=1)  # type: ignore[arg-type]


def test_declared_size_inconsistent_with_length_is_rejected_without_allocating() -> (
    None
):
    codec = fedrot.get_codec("eden", bits=2)
    blob = codec.encode(make_gaussian(5000, 0), seed=1, client=1)
    huge = _refresh_crc(blob[:8] + struct.pack("<Q", (1 << 47) - 1) + blob[16:])
    with pytest.raises(fedrot.PayloadError, match="inconsistent"):
        codec.decode(huge, seed=1, client=1)
    sub = fedrot.get_codec("eden", bits=0.5)
    blob = sub.encode(make_gaussian(5000, 0), seed=1, client=1)
    huge = _refresh_crc(blob[:8] + struct.pack("<Q", (1 << 47) - 1) + blob[16:])
    with pytest.raises(fedrot.PayloadError, match="impossible"):
        sub.decode(huge, seed=1, client=1)


def test_aggregate_names_the_bad_payload_and_checks_lengths() -> None:
    codec = fedrot.get_codec("drive")
    a = codec.encode(make_gaussian(100, 0), seed=1, client=1)
    b = codec.encode(make_gaussian(200, 0), seed=1, client=2)
    with pytest.raises(fedrot.PayloadError, match="Payload 1 \\(client 2\\)"):
        codec.aggregate([a, b], seed=1, clients=[1, 2])
    with pytest.raises(fedrot.PayloadError, match="Payload 1 \\(client 2\\)"):
        codec.aggregate([a, a[:-1]], seed=1, clients=[1, 2])
    with pytest.raises(ValueError, match="weights"):
        codec.aggregate([a, a], seed=1, clients=[1, 2], weights=[1.0, float("nan")])
    with pytest.raises(ValueError, match="clients"):
        codec.aggregate([a, a], seed=1, clients=[1])


FUZZ_CODECS = [
    ("eden", {"bits": 2}),
    ("eden", {"bits": 2.5}),
    ("eden", {"bits": 0.5}),
    ("drive", {}),
    ("hadamard-sq", {"bits": 3}),
    ("qsgd", {"levels": 5}),
    ("terngrad", {}),
    ("topk", {"fraction": 0.1}),
    ("randk", {"fraction": 0.1}),
    ("signsgd", {}),
    ("fp32", {}),
    ("fp16", {}),
]


def _mutate(rng: random.Random, blob: bytes) -> bytes:
    kind = rng.randrange(7)
    b = bytearray(blob)
    if kind == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1:  # truncate
        return bytes(b[: rng.randrange(len(b))])
    if kind == 2:  # extend
        return bytes(b) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    if kind == 3:  # flip bits, CRC left stale
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    # flip bits or rewrite header fields, then fix the CRC so deeper checks run
    if kind == 4:
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b) - 4)] ^= 1 << rng.randrange(8)
    elif kind == 5:
        pos = rng.randrange(min(len(b) - 4, 40))
        b[pos] = rng.randrange(256)
    else:
        field = rng.choice([(8, "<Q"), (4, "<B"), (6, "<H")])
        value = rng.choice([0, 1, 2, 3, 255, 2**16 - 1, 2**40, 2**47 - 1, 2**64 - 1])
        size = struct.calcsize(field[1])
        b[field[0] : field[0] + size] = (value % (1 << (8 * size))).to_bytes(
            size, "little"
        )
    return _refresh_crc(b)


def test_fuzz_decoder_only_raises_payload_error() -> None:
    rng = random.Random(1234)
    cases = 0
    for name, kw in FUZZ_CODECS:
        codec = fedrot.get_codec(name, **kw)
        originals = [
            codec.encode(make_gaussian(d, d).float(), seed=d, client=3)
            for d in (1, 33, 700, 5000)
        ]
        for _ in range(850):
            blob = _mutate(rng, rng.choice(originals))
            cases += 1
            try:
                out = codec.decode(blob, seed=rng.choice([1, 33, 700, 5000]), client=3)
            except fedrot.PayloadError:
                continue
            # a payload that decodes is well-formed: output bounded by its length
            assert out.dtype == torch.float32 and out.dim() == 1
            assert bool(torch.isfinite(out).all())
            assert out.numel() * 4 <= 300 * len(blob)
    assert cases >= 10_000


@pytest.mark.parametrize(
    "name", ["fp32", "qsgd", "topk", "randk", "signsgd", "terngrad"]
)
def test_non_rotating_codecs_reject_declared_rotations(name: str) -> None:
    codec = fedrot.get_codec(name)
    blob = codec.encode(make_gaussian(300, 0), seed=1, client=1)
    bad = _refresh_crc(blob[:4] + bytes([2]) + blob[5:])
    with pytest.raises(fedrot.PayloadError, match="rotations"):
        codec.decode(bad, seed=1, client=1)


SIZE_CONFIGS = [
    ("eden", {"bits": 2}),
    ("eden", {"bits": 1.5}),
    ("eden", {"bits": 0.5}),
    ("quic-fl", {"bits": 2}),
    ("vq", {"bits": 2}),
    *[(name, {}) for name in FIXED_SIZE],
]


@pytest.mark.parametrize(
    "name,params", SIZE_CONFIGS, ids=[f"{n}-{p}" for n, p in SIZE_CONFIGS]
)
def test_exact_size_says_whether_payload_bytes_is_exact(
    name: str, params: dict
) -> None:
    codec = fedrot.get_codec(name, **params)
    d = 70_001
    info = codec.info(d)
    fractional_eden = name == "eden" and not float(params["bits"]).is_integer()
    assert info.exact_size == (name != "quic-fl" and not fractional_eden)
    g = make_gaussian(d, 3).float()
    sparse = torch.zeros(d)
    sparse[::97] = 1.0
    inputs = [g, sparse, torch.full((d,), 0.5), g * 1e-3]
    sizes = {len(codec.encode(x, seed=s, client=s)) for x in inputs for s in (1, 2)}
    if info.exact_size:
        assert sizes == {info.payload_bytes}
    else:
        assert len(sizes) > 1  # genuinely data- or seed-dependent
        gaussian = [len(codec.encode(g, seed=s, client=9)) for s in range(4)]
        assert abs(sum(gaussian) / 4 / info.payload_bytes - 1) < 0.01  # expected size


@pytest.mark.parametrize(
    "name,sent,used,message",
    [
        ("eden", {"bits": 2}, {"bits": 1}, "bits=2 vs bits=1"),
        ("eden", {"rotations": "auto"}, {}, "rotations='auto' vs rotations=2"),
        ("drive", {"scale": "biased"}, {}, "scale='biased' vs scale='unbiased'"),
        ("quic-fl", {"outlier_fraction": 1 / 128}, {}, "outlier_fraction=0.0078125 vs"),
        ("vq", {"block": 4, "bits": 2}, {}, "block=4 vs block=2, codebook=CRC 0x"),
        ("terngrad", {"clip": 2.5}, {}, "clip=2.5 vs clip=None"),
        ("topk", {"fraction": 0.5}, {}, "fraction=0.5 vs fraction=0.03125"),
        ("qsgd", {"levels": 3}, {"levels": 4}, "levels=3 vs levels=4"),
        ("eden", {"chunk_size": 1024}, {}, "chunk_size=1024 vs chunk_size=65536"),
    ],
)
def test_parameter_mismatches_are_readable(
    name: str, sent: dict, used: dict, message: str
) -> None:
    blob = fedrot.get_codec(name, **sent).encode(torch.randn(3000), seed=1, client=1)
    codec = fedrot.get_codec(name, **used)
    with pytest.raises(fedrot.PayloadError) as err:
        codec.check(blob)
    assert message in str(err.value)
    assert "Configure the same" in str(err.value)


def test_parameter_layout_reads_back_what_it_packs() -> None:
    from fedrot.codecs._params import Field, ParamLayout
    from fedrot.codecs._rotation import MODE_FIELD

    layout = ParamLayout((Field("bits", "d"), MODE_FIELD, Field("levels", "H")))
    block = layout.pack({"bits": 2.5, "rotations": "auto", "levels": 7})
    assert block == struct.pack("<dBH", 2.5, 0, 7)
    assert layout.read(block) == {"bits": "2.5", "rotations": "'auto'", "levels": "7"}
    assert layout.read(block[:-1]) is None
    bad = struct.pack("<dBH", 2.5, 9, 7)  # no codec writes rotation code 9
    assert layout.read(bad)["rotations"] == "<invalid 9>"
    assert layout.mismatch(bad, block) == "rotations=<invalid 9> vs rotations='auto'"
    assert "3 bytes" in layout.mismatch(b"abc", block)


def test_every_codec_block_round_trips_its_params() -> None:
    for name in fedrot.available_codecs():
        codec = fedrot.get_codec(name)
        shown = codec.layout.read(codec._param_block)
        assert shown is not None and set(shown) == {f.name for f in codec.layout.fields}
        for key, value in codec.params().items():
            if key in shown:
                assert shown[key] in (
                    repr(value),
                    f"{value:g}" if isinstance(value, float) else "",
                )
