"""A real MLflow tracking server on loopback (PyPI `mlflow`, from scripts/fetch-mlflow-server), for the MLflow tests.

Its runs and registry live in a SQLite file and its artifacts in a folder under `root`, so a server stopped and
started again (an outage) comes back with everything it had.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from infra.local.stack import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0  # a first start migrates its database: ~30 s on a busy 2-core machine


def mlflow_command() -> str:
    """The `mlflow` of the server's own environment (made on first use: a few minutes, then cached)."""
    result = subprocess.run(
        [str(REPO / "scripts" / "fetch-mlflow-server")], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"scripts/fetch-mlflow-server failed: {result.stderr[-2000:]}"
    return result.stdout.strip().splitlines()[-1]


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.command = mlflow_command()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it; `wait_ready` waits for it to answer (start it early, wait late)."""
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            self.command, "server", "--host", LOOPBACK, "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        # Without the server's job runner (huey consumer processes for MLflow's own background jobs): the tests use
        # tracking and the model registry only, and the consumers cost CPU for as long as the server runs.
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with (self.root / "server.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, self._log_tail("mlflow server exited")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self._log_tail(f"mlflow server not up within {timeout:.0f}s")
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop it and every process it started (its uvicorn workers): connections are refused from now on."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def _log_tail(self, what: str) -> str:
        log = self.root / "server.log"
        return f"{what}: {log.read_text()[-3000:] if log.exists() else 'no log'}"
