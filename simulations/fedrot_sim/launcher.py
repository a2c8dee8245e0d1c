"""Runs through Flower's supported entry point: ``flwr run`` on a local SuperLink.

The sweep starts one ``flower-superlink --simulation`` of its own (free loopback
ports, its own ``FLWR_HOME`` under the output directory, no runtime dependency
installation), submits each batch of runs with ``flwr run simulations <connection>
--stream`` (a batch file of configs, run one after the other on disjoint blocks of
SuperNodes of one federation, so Ray starts once per batch), and stops that
SuperLink at the end. The ServerApp writes each run record itself
(:func:`fedrot_sim.server_app.main`), so the Flower app and the sweep produce the same
files; ``flwr run`` exits 0 even when the ServerApp fails, so a run counts as finished
only when its record exists.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .batch import LOG_FAILED, LOG_FINISHED, write_batch
from .config import RunConfig

APP_DIR = Path(__file__).resolve().parents[1]
CONNECTION = "sweep"
STARTUP_TIMEOUT_S = 120.0
#: The ServerApp logs this line after each round's central evaluation.
_ROUND_DONE = "Global evaluation"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    """An executable of this Python environment (flwr's CLIs live next to python)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def flower_env(home: Path) -> dict[str, str]:
    """The environment of the SuperLink and of ``flwr``: quiet, offline, local."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
            # Ray's ClientApp workers import the app as `fedrot_sim.client_app`
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(APP_DIR), env.get("PYTHONPATH", "")) if p
            ),
        }
    )
    return env


class LocalSuperLink:
    """A ``flower-superlink --simulation`` this process starts and stops.

    Use as a context manager; ``home`` becomes its ``FLWR_HOME`` (connection config,
    installed apps, the SuperLink's log). Its state is in memory.
    """

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalSuperLink:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8",
        )
        log = open(self.home / "superlink.log", "wb")  # noqa: SIM115 - held by Popen
        self._process = subprocess.Popen(
            [
                _bin("flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--control-api-address",
                f"127.0.0.1:{_free_port()}",
                "--fleet-api-address",
                f"127.0.0.1:{_free_port()}",
                "--health-server-address",
                f"127.0.0.1:{_free_port()}",
            ],  # no --database: in-memory state, nothing stale for the next sweep
            env=flower_env(self.home),
            cwd=APP_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    "flower-superlink exited with code "
                    f"{self._process.returncode}; see {self.home / 'superlink.log'}."
                )
            try:
                if httpx.get(
                    f"http://127.0.0.1:{self.port}/health", timeout=2
                ).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(
            f"flower-superlink was not ready within {STARTUP_TIMEOUT_S:.0f} s; see "
            f"{self.home / 'superlink.log'}."
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def run(
        self,
        configs: list[RunConfig],
        *,
        records_dir: Path,
        batch_path: Path,
        log_path: Path,
        on_round: Callable[[int], None] | None = None,
        on_run: Callable[[str], None] | None = None,
        echo: IO[str] | None = None,
    ) -> None:
        """``flwr run`` a batch of configs and wait for it; its log goes to
        ``log_path``.

        The configs are written to ``batch_path`` (they must share
        ``num_clients``); the federation gets ``num_clients`` SuperNodes per run.
        ``on_round(n)`` is called as the n-th round's central evaluation of the
        batch is logged, ``on_run(line)`` with each run's finished or failed log
        line; ``echo`` receives every log line too (``--verbose``).
        """
        write_batch(batch_path, configs)
        run_config = {
            "out": str(records_dir.resolve()),
            "runs-file": str(batch_path.resolve()),
        }
        nodes = configs[0].num_clients * len(configs)
        total = sum(c.rounds for c in configs)
        command = [
            _bin("flwr"),
            "run",
            str(APP_DIR),
            CONNECTION,
            "--stream",
            "--federation-config",
            f"num-supernodes={nodes} client-resources-num-cpus=1",
            "--run-config",
            " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items()),
        ]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        done = 0
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                command,
                env=flower_env(self.home),
                cwd=APP_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None  # PIPE above
            try:
                for raw in proc.stdout:
                    line = _ANSI.sub("", raw)
                    log.write(line)
                    if echo is not None:
                        echo.write(line)
                    text = line.strip()
                    if (
                        text.startswith("INFO")
                        and text.endswith(_ROUND_DONE)
                        and done < total
                    ):
                        done += 1
                        if on_round is not None:
                            on_round(done)
                    elif on_run is not None and (
                        LOG_FINISHED in text or LOG_FAILED in text
                    ):
                        on_run(text.split(":", 1)[-1].strip())
                code = proc.wait()
            finally:  # interrupted: do not leave `flwr run` behind
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
        if code != 0:
            raise RuntimeError(
                f"`flwr run` exited with code {code} for the batch {batch_path.name}; "
                f"see {log_path}."
            )


def toml_value(value: Any) -> str:
    """A run-config value as the TOML ``flwr run --run-config`` parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if "'" in text or "\n" in text:
        raise ValueError(
            f"Run-config value {text!r} cannot contain a quote or a newline."
        )
    return f"'{text}'"
