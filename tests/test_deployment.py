"""End-to-end on loopback: flower-superlink + 2 flower-supernode processes (slow).

Runs ``tests/deployment_app`` through ``CompressedStrategy`` + ``compression_mod``:

* insecure, SuperNodes behind a byte-counting proxy: an EDEN 1-bit run and an fp32
  run of a 151,556-parameter MLP. Checks the run status (``flwr ls``), that the
  recorded per-round byte metrics match the protobuf bodies that crossed the wire
  within 1%, and that EDEN-1 uplink is >= 25x below fp32;
* TLS with a throwaway CA: one EDEN run to completion.

Every process is started in its own session and stopped by its PID (group).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wire_proxy import CountingProxy, attribute

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
APP = Path(__file__).resolve().parent / "deployment_app"
HIDDEN = 4096  # 151,556 parameters
RUN_TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


class Processes:
    """Processes this test started; ``stop_all`` ends each one by its PID."""

    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, []

    def start(self, name: str, cmd: list[str], home: Path) -> subprocess.Popen:
        home.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            cmd,
            env=_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc, log))
        return proc

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this test created
        deadline = time.time() + 15
        for _, proc, log in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            log.close()
        for _, proc, _ in self.procs:
            assert proc.poll() is not None

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}.log ---\n"
            + (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
            for name, _, _ in self.procs
        )


def _start_deployment(
    procs: Processes, root: Path, *, tls: dict[str, Path] | None
) -> tuple[int, int]:
    """Start a SuperLink; returns (link port, fleet port)."""
    port = _free_port()
    link = [
        str(BIN / "flower-superlink"),
        "--disable-runtime-dependency-installation",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    link += (
        [
            "--ssl-ca-certfile",
            str(tls["ca"]),
            "--ssl-certfile",
            str(tls["cert"]),
            "--ssl-keyfile",
            str(tls["key"]),
        ]
        if tls
        else ["--insecure"]
    )
    procs.start("superlink", link, root / "home-link")
    return port, port


def _start_supernodes(
    procs: Processes, root: Path, fleet_port: int, *, tls: dict[str, Path] | None
) -> None:
    for i in range(2):
        cmd = [
            str(BIN / "flower-supernode"),
            "--superlink",
            f"127.0.0.1:{fleet_port}",
            "--port",
            str(_free_port()),
            "--node-config",
            f"partition-id={i} num-partitions=2",
        ]
        cmd += ["--root-certificates", str(tls["ca"])] if tls else ["--insecure"]
        procs.start(f"supernode{i}", cmd, root / f"home-sn{i}")


def _cli_home(root: Path, port: int, tls: dict[str, Path] | None) -> Path:
    home = root / "home-cli"
    home.mkdir(parents=True, exist_ok=True)
    conn = f'root-certificates = "{tls["ca"]}"' if tls else "insecure = true"
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
        f'address = "127.0.0.1:{port}"\n{conn}\n'
    )
    return home


def _flwr(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home,
    )


def _run_app(home: Path, procs: Processes, run_config: str) -> int:
    """Submit a run, wait for it through ``flwr ls`` and return its id."""
    deadline = time.time() + 90
    while True:  # the SuperLink may still be starting
        res = _flwr(
            home,
            "run",
            str(APP),
            "deploy",
            "--format",
            "json",
            "--run-config",
            run_config,
        )
        try:
            submitted = json.loads(res.stdout)
        except json.JSONDecodeError:
            submitted = {"success": False}
        if submitted.get("success") or time.time() > deadline:
            break
        time.sleep(3)
    assert res.returncode == 0 and submitted.get("success"), (
        res.stdout + res.stderr + procs.logs()
    )
    run_id = int(
        next(v for k, v in submitted.items() if k.replace("-", "_") == "run_id")
    )
    deadline = time.time() + RUN_TIMEOUT
    status = ""
    while time.time() < deadline:
        ls = _flwr(home, "ls", "--format", "json", "--run-id", str(run_id))
        if ls.returncode == 0:
            runs = json.loads(ls.stdout).get("runs", [])
            status = runs[0]["status"] if runs else ""
            if status.startswith("finished"):
                break
        time.sleep(3)
    assert status == "finished:completed", (
        f"run {run_id}: {status!r}\n{ls.stdout}{ls.stderr}" + procs.logs()
    )
    return run_id


def _make_ca(root: Path) -> dict[str, Path]:
    d = root / "certs"
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60
        )

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=fedrot-test-ca",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )
    return {"ca": d / "ca.crt", "cert": d / "server.pem", "key": d / "server.key"}


def _recorded(results: dict) -> dict[tuple[str, int, str], int]:
    out = {}
    for phase, records in (
        ("train", results["train"]),
        ("evaluate", results["evaluate"]),
    ):
        for rnd, metrics in records.items():
            out[(phase, int(rnd), "uplink")] = metrics["fedrot.uplink-bytes"]
            out[(phase, int(rnd), "downlink")] = metrics["fedrot.downlink-bytes"]
    return out


def test_insecure_deployment_bytes_match_the_wire(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    proxy = None
    try:
        port, _ = _start_deployment(procs, tmp_path, tls=None)
        proxy = CountingProxy(port).start()
        _start_supernodes(procs, tmp_path, proxy.port, tls=None)
        home = _cli_home(tmp_path, port, None)
        summary = {}
        for codec, rounds in (("eden", 2), ("fp32", 1)):
            before = len(proxy.snapshot())
            out = tmp_path / f"{codec}.json"
            _run_app(
                home,
                procs,
                f"codec='{codec}' bits=1.0 hidden={HIDDEN} "
                f"num-server-rounds={rounds} results-path='{out}'",
            )
            results = json.loads(out.read_text())
            assert results["num_params"] >= 100_000
            measured = attribute(proxy.snapshot()[before:])
            recorded = _recorded(results)
            assert set(recorded) == set(measured), (recorded, measured)
            for key, value in recorded.items():
                wire = measured[key]["bytes"]
                assert abs(value - wire) <= 0.01 * wire, (
                    codec,
                    key,
                    value,
                    measured[key],
                )
            summary[codec] = {
                "recorded": recorded,
                "measured": measured,
                "results": results,
            }
            print(
                json.dumps(
                    {
                        codec: {
                            "|".join(map(str, k)): {"recorded": v, **measured[k]}
                            for k, v in recorded.items()
                        }
                    },
                    indent=1,
                )
            )
        eden_up = summary["eden"]["measured"][("train", 1, "uplink")]["bytes"]
        fp32_up = summary["fp32"]["measured"][("train", 1, "uplink")]["bytes"]
        print(
            f"uplink train bytes per round: fp32 {fp32_up}, eden-1bit {eden_up}, "
            f"ratio {fp32_up / eden_up:.1f}x"
        )
        assert fp32_up / eden_up >= 25
        acc = summary["eden"]["results"]["server"]
        assert acc["2"]["acc"] > acc["0"]["acc"]
    finally:
        procs.stop_all()
        if proxy is not None:
            proxy.stop()


def test_tls_deployment_completes(tmp_path: Path) -> None:
    tls = _make_ca(tmp_path)
    procs = Processes(tmp_path)
    try:
        port, fleet = _start_deployment(procs, tmp_path, tls=tls)
        _start_supernodes(procs, tmp_path, fleet, tls=tls)
        home = _cli_home(tmp_path, port, tls)
        out = tmp_path / "tls.json"
        _run_app(
            home,
            procs,
            f"codec='eden' bits=2.0 num-server-rounds=1 results-path='{out}'",
        )
        results = json.loads(out.read_text())
        assert results["train"]["1"]["fedrot.failed-replies"] == 0
        assert results["train"]["1"]["fedrot.uplink-bytes"] > 0
    finally:
        procs.stop_all()
