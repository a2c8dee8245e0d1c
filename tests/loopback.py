"""A loopback Flower deployment for the end-to-end tests (not a test module).

One ``flower-superlink`` and any number of ``flower-supernode`` processes on
127.0.0.1, each started in its own session and logged to ``<name>.log``; runs of
``tests/deployment_app`` are submitted and followed through the ``flwr`` CLI.
Processes are stopped by PID: :meth:`Processes.stop_all` ends each process group
this module created, and :func:`kill_tree` SIGKILLs a process with every
descendant (a SuperNode's ``flower-superexec`` and ``flwr-clientapp`` children),
as a machine crash would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
APP = Path(__file__).resolve().parent / "deployment_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flwr_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@dataclass
class Started:
    """A process this module started, and how to start it again."""

    name: str
    cmd: list[str]
    home: Path
    proc: subprocess.Popen
    log: object


class Processes:
    """Processes a test started; ``stop_all`` ends each one by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Started] = []

    def start(self, name: str, cmd: list[str], home: Path) -> subprocess.Popen:
        home.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            cmd,
            env=flwr_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(Started(name, cmd, home, proc, log))
        return proc

    def latest(self, name: str) -> Started:
        return [s for s in self.started if s.name == name][-1]

    def stop_all(self) -> None:
        for s in reversed(self.started):
            if s.proc.poll() is None:
                os.killpg(s.proc.pid, signal.SIGTERM)  # the group this test created
        deadline = time.time() + 15
        for s in self.started:
            try:
                s.proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(s.proc.pid, signal.SIGKILL)
                s.proc.wait(5)
            s.log.close()
        for s in self.started:
            assert s.proc.poll() is not None

    def logs(self, tail: int = 3000) -> str:
        names = dict.fromkeys(s.name for s in self.started)
        return "\n".join(
            f"--- {name}.log ---\n"
            + (self.root / f"{name}.log").read_text(errors="replace")[-tail:]
            for name in names
        )


# ---------------------------------------------------------------- process trees
def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # the command name may hold spaces and parentheses: fields start after ")"
        out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first, then theirs)."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        found += children
        frontier = children
    return found


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (a zombie's: ``[name] (zombie)``)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    if not raw:
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        return f"[{name}] (zombie)" if not alive(pid) else f"[{name}]"
    return " ".join(raw.decode(errors="replace").split("\0")[:-1])


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_tree(proc: subprocess.Popen, *, timeout: float = 10) -> dict[int, str]:
    """SIGKILL ``proc`` and all its descendants, by PID; returns {pid: command}.

    The tree is frozen first (SIGSTOP, repeated until no new descendant appears),
    so no process can fork or be re-parented between listing and killing.

    Raises
    ------
    RuntimeError
        If a process of the tree is still alive ``timeout`` seconds later.
    """
    tree: dict[int, str] = {proc.pid: cmdline(proc.pid)}
    os.kill(proc.pid, signal.SIGSTOP)
    while True:
        new = [p for p in descendants(proc.pid) if p not in tree]
        if not new:
            break
        for p in new:
            tree[p] = cmdline(p)
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout)
    deadline = time.time() + timeout
    while any(alive(p) for p in tree):
        if time.time() > deadline:
            left = {p: c for p, c in tree.items() if alive(p)}
            raise RuntimeError(f"processes survived SIGKILL: {left}")
        time.sleep(0.05)
    return tree


# ------------------------------------------------------------------- deployment
def start_superlink(
    procs: Processes, root: Path, *, tls: dict[str, Path] | None = None
) -> int:
    """Start a SuperLink (all APIs on one port); returns the port."""
    port = free_port()
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
    return port


def start_supernode(
    procs: Processes,
    root: Path,
    fleet_port: int,
    partition: int,
    partitions: int,
    *,
    tls: dict[str, Path] | None = None,
) -> subprocess.Popen:
    """Start SuperNode ``supernode<partition>`` (FLWR_HOME ``home-sn<partition>``)."""
    cmd = [
        str(BIN / "flower-supernode"),
        "--superlink",
        f"127.0.0.1:{fleet_port}",
        "--port",
        str(free_port()),
        "--node-config",
        f"partition-id={partition} num-partitions={partitions}",
    ]
    cmd += ["--root-certificates", str(tls["ca"])] if tls else ["--insecure"]
    return procs.start(f"supernode{partition}", cmd, root / f"home-sn{partition}")


def restart(procs: Processes, name: str) -> subprocess.Popen:
    """Start ``name`` again with the same command line (a fresh ClientAppIo port)."""
    old = procs.latest(name)
    cmd = list(old.cmd)
    if "--port" in cmd:
        cmd[cmd.index("--port") + 1] = str(free_port())
    return procs.start(name, cmd, old.home)


def activated_nodes(root: Path) -> list[int]:
    """Node ids in the order the SuperLink activated them (from its log)."""
    text = (root / "superlink.log").read_text(errors="replace")
    marker = "[Fleet.ActivateNode] Activated node_id="
    return [
        int(line.split(marker, 1)[1].split()[0])
        for line in text.splitlines()
        if marker in line
    ]


def wait_for(what: str, check, *, timeout: float, procs: Processes) -> None:
    """Poll ``check()`` every 0.2 s until it is true."""
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n" + procs.logs())
        time.sleep(0.2)


def cli_home(root: Path, port: int, tls: dict[str, Path] | None = None) -> Path:
    home = root / "home-cli"
    home.mkdir(parents=True, exist_ok=True)
    conn = f'root-certificates = "{tls["ca"]}"' if tls else "insecure = true"
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
        f'address = "127.0.0.1:{port}"\n{conn}\n'
    )
    return home


def flwr(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        env=flwr_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home,
    )


def submit(home: Path, procs: Processes, run_config: str) -> int:
    """Submit a run of the deployment app; returns its id."""
    deadline = time.time() + 90
    while True:  # the SuperLink may still be starting
        res = flwr(
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
    return int(next(v for k, v in submitted.items() if k.replace("-", "_") == "run_id"))


def wait_finished(
    home: Path, procs: Processes, run_id: int, *, timeout: float = 240
) -> str:
    """Poll ``flwr ls`` until the run is finished; returns its status."""
    deadline = time.time() + timeout
    status, ls = "", None
    while time.time() < deadline:
        ls = flwr(home, "ls", "--format", "json", "--run-id", str(run_id))
        if ls.returncode == 0:
            runs = json.loads(ls.stdout).get("runs", [])
            status = runs[0]["status"] if runs else ""
            if status.startswith("finished"):
                return status
        time.sleep(2)
    raise AssertionError(
        f"run {run_id}: {status!r} after {timeout} s\n"
        + (ls.stdout + ls.stderr if ls else "")
        + procs.logs()
    )


def run_app(
    home: Path, procs: Processes, run_config: str, *, timeout: float = 240
) -> int:
    """Submit a run, wait for it and check that it completed; returns its id."""
    run_id = submit(home, procs, run_config)
    status = wait_finished(home, procs, run_id, timeout=timeout)
    assert status == "finished:completed", f"run {run_id}: {status!r}\n" + procs.logs()
    return run_id


def make_ca(root: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl)."""
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


def node_ids(root: Path, name: str) -> list[int]:
    """The node ids SuperNode ``name`` reported, one per start (from its log)."""
    text = (root / f"{name}.log").read_text(errors="replace")
    marker = "SuperNode ID: "
    return [
        int(line.split(marker, 1)[1].split()[0])
        for line in text.splitlines()
        if marker in line
    ]
