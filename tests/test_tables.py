"""fedrot.tables: the shipped-JSON reader/writer, runtime isolation, regeneration."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedrot.tables import _shipped
from fedrot.tables import lloyd_max as lloyd_max_module
from fedrot.tables import quic_fl as quic_fl_module
from fedrot.tables import vq as vq_module
from fedrot.tables._shipped import ShippedFile, crc32_f64

SHIPPED = [lloyd_max_module.SHIPPED, quic_fl_module.SHIPPED, vq_module.SHIPPED]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda s: s.name)
def test_writer_reproduces_the_shipped_layout_byte_for_byte(
    shipped: ShippedFile, tmp_path: Path
) -> None:
    """Rewriting a shipped file's content changes nothing but its generator line."""
    original = Path(shipped.shipped_path()).read_text()
    doc = json.loads(original)
    out = tmp_path / shipped.name
    source = doc["generator"].split("(")[-1].rstrip(")")
    shipped.write(
        str(out), doc[shipped.section], source=source, method=doc.get("method")
    )
    written = out.read_text()
    new_generator = json.loads(written)["generator"]
    assert new_generator == f"{shipped.regenerate} ({source})"
    assert written.replace(json.dumps(new_generator), json.dumps(doc["generator"])) == (
        original
    )


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda s: s.name)
def test_shipped_files_state_version_and_provenance(shipped: ShippedFile) -> None:
    doc = shipped.document()
    assert doc["format"] == shipped.format
    assert doc["generator"].startswith("python -m ")
    assert shipped.keys() == list(doc[shipped.section])


def test_every_shipped_quic_fl_table_matches_its_crc() -> None:
    s = quic_fl_module.SHIPPED
    for key in s.keys():
        e = s.entry(key, missing="")
        table = np.asarray(e["table"], dtype=np.float64)
        assert crc32_f64(table) == e["crc32"]


def test_unknown_format_names_the_regeneration_command() -> None:
    newer = ShippedFile(
        name="lloyd_max.json",
        section="tables",
        regenerate="python -m fedrot.tables.solvers.lloyd_max",
        format=2,
    )
    with pytest.raises(ValueError, match=r"format 1; .*reads format 2.*solvers\.lloyd"):
        newer.document()


def test_file_without_provenance_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        _shipped, "_document", lambda name: {"format": 1, "tables": {"1": {}}}
    )
    with pytest.raises(ValueError, match="does not say which command wrote it"):
        lloyd_max_module.SHIPPED.document()


@pytest.mark.parametrize(
    ("values", "crc", "problem"),
    [
        ([1.0, 2.0, 3.0], None, "shape"),
        ([1.0, float("nan")], None, "non-finite"),
        ([1.0, 2.0], 12345, "does not match its crc32"),
    ],
)
def test_damaged_arrays_are_rejected(
    values: list[float], crc: int | None, problem: str
) -> None:
    entry = {"a": values, "crc32": crc}
    with pytest.raises(ValueError, match=f"corrupt.*{problem}.*python -m fedrot"):
        vq_module.SHIPPED.array(
            "k", entry, "a", shape=(2,), crc_field=None if crc is None else "crc32"
        )


def test_array_with_matching_crc_loads() -> None:
    values = np.array([[1.5, -2.0], [0.25, 3.0]])
    entry = {"a": values.tolist(), "crc32": crc32_f64(values)}
    got = quic_fl_module.SHIPPED.array("k", entry, "a", shape=(2, 2), crc_field="crc32")
    assert np.array_equal(got, values) and got.dtype == np.float64


@pytest.mark.parametrize(
    ("load", "args", "message"),
    [
        (lloyd_max_module.lloyd_max, (9,), "`bits` must be in 1..8"),
        (quic_fl_module.quic_fl_table, (2, 8), "solvers.quic_fl"),
        (vq_module.codebook, (3, 1), r"Shipped \(block, bits\).*solvers.vq"),
    ],
)
def test_missing_entries_say_what_is_shipped(
    load: Callable[..., object], args: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load(*args)


def test_codebook_crc_is_the_crc_of_its_codewords() -> None:
    cb = vq_module.codebook(2, 2)
    assert cb.crc == crc32_f64(cb.codewords)


def test_runtime_loading_imports_no_solver_and_no_scipy() -> None:
    code = (
        "import sys, torch, fedrot\n"
        "from fedrot.tables.lloyd_max import lloyd_max\n"
        "from fedrot.tables.quic_fl import quic_fl_table\n"
        "from fedrot.tables.vq import codebook\n"
        "lloyd_max(3); quic_fl_table(2); codebook(2, 2)\n"
        "x = torch.randn(3000)\n"
        "for name in ('eden', 'quic-fl', 'vq'):\n"
        "    c = fedrot.get_codec(name)\n"
        "    c.decode(c.encode(x, seed=1, client=0), seed=1, client=0)\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.startswith(('scipy', 'fedrot.tables.solvers')))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_lloyd_max_command_regenerates_the_shipped_tables(tmp_path: Path) -> None:
    """`python -m fedrot.tables.solvers.lloyd_max --out F` reproduces every number."""
    out = tmp_path / "lloyd_max.json"
    subprocess.run(
        [sys.executable, "-m", "fedrot.tables.solvers.lloyd_max", "--out", str(out)],
        capture_output=True,
        check=True,
        timeout=300,
        cwd=ROOT,
    )
    shipped = lloyd_max_module.SHIPPED.document()
    assert json.loads(out.read_text())["tables"] == shipped["tables"]
