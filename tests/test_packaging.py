"""Packaging: the wheel holds ``fedrot`` only, and the core installs without Flower.

The slow test builds a fresh venv (no system site-packages), installs the CPU torch
wheel first exactly as ``install.sh`` does (``pip install torch==2.13.0``; pip serves
it from its cache or the configured index), then ``pip install <repo>`` with no
extras, and checks in that venv that a codec round trip works while ``flwr`` and
``ray`` are not importable and ``fedrot.strategies`` names the extra to install.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def _clean_env() -> dict[str, str]:
    """This process's environment without PYTHON* variables: an earlier test in the
    same session (Flower's simulation, a sweep) may leave a PYTHONPATH that would
    show the project venv's packages to the fresh venv."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _pip(python: Path | str, *args: str, timeout: int) -> None:
    out = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel . --no-deps`` of the repository."""
    dest = tmp_path_factory.mktemp("wheel")
    _pip(
        sys.executable,
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        str(dest),
        str(ROOT),
        timeout=300,
    )
    (path,) = dest.glob("fedrot-*.whl")
    return path


def test_wheel_contains_only_the_fedrot_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"fedrot"}, sorted(tops)
    for data in ("lloyd_max.json", "quic_fl_tables.json", "vq_codebooks.json"):
        assert f"fedrot/tables/data/{data}" in names
    assert "fedrot/py.typed" in names


def test_core_requires_numpy_and_torch_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (meta_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    core = sorted(
        r.split(">")[0].split("<")[0].split("=")[0].strip()
        for r in requires
        if "extra ==" not in r
    )
    assert core == ["numpy", "torch"], requires
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"flower", "sim", "dev"} <= extras
    flower = [r for r in requires if "extra == 'flower'" in r]
    assert flower and all("flwr==1.41.0" in r for r in flower)
    sim = [r for r in requires if "extra == 'sim'" in r]
    assert any(r.startswith("flwr[simulation]==1.41.0") for r in sim), sim


def test_installed_fedrot_exposes_no_generic_top_level_names(tmp_path: Path) -> None:
    # Outside the checkout (cwd elsewhere, no PYTHONPATH) only `fedrot` resolves.
    code = (
        "import importlib.util as u, fedrot\n"
        "print([n for n in ('bench', 'simulations', 'tests', 'fedrot_sim')"
        " if u.find_spec(n) is not None])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


_CORE_CHECK = """
import importlib.util, sys
import torch, fedrot
codec = fedrot.get_codec("eden", bits=1)
x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
y = codec.decode(codec.encode(x, seed=3, client=1), seed=3, client=1)
assert y.shape == x.shape and torch.isfinite(y).all()
# EDEN 1-bit: vNMSE about 0.57 for a Gaussian vector; a broken decode is far off.
err = float(((y - x) ** 2).sum() / (x**2).sum())
assert 0.3 < err < 0.9, err
assert "flwr" not in sys.modules
for name in ("flwr", "ray"):
    assert importlib.util.find_spec(name) is None, name + " is installed"
try:
    import fedrot.strategies
except ImportError as exc:
    assert "pip install 'fedrot[flower]'" in str(exc), exc
else:
    raise AssertionError("fedrot.strategies imported without Flower")
print("core ok", fedrot.__file__)
"""


@pytest.mark.slow
def test_pip_install_without_extras_gives_a_working_core(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _pip(python, "install", "-q", TORCH, timeout=900)
    _pip(python, "install", "-q", str(ROOT), timeout=600)
    out = subprocess.run(
        [str(python), "-c", _CORE_CHECK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "core ok" in out.stdout and str(env_dir) in out.stdout
