"""The single-machine stack: an S3-compatible server, a Ray head and the API, all on loopback.

    trainyard up              # start everything (idempotent), print the URLs (trainyard/cli/stack.py)
    trainyard stack status    # what is running
    trainyard down            # stop everything this stack started

The same class is what the tests start, so the README's commands are exercised by the suite.
State (ports, pids) lives in <home>/stack.json so `down` works from another shell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from core.runtime_env import TORCH_MALLOC_ENV
from infra.local.config import LOCAL_S3_KEY, LOOPBACK, StackConfig, free_port

logger = logging.getLogger("trainyard.stack")

# The local S3-compatible server: s3rver (Node.js) keeps every object as a file under <home>/s3, so datasets,
# checkpoints and models survive a restart. Installed by scripts/setup from infra/local/s3/package-lock.json.
S3RVER_DIR = Path(__file__).resolve().parent / "s3"


def _free_agent_ports(config: StackConfig) -> list[str]:
    # Ray's per-node agents default to fixed ports (52365 …): a second node or stack on the same machine would
    # find them taken, and a head without its agent cannot accept Ray Jobs. Free ones for every node, and
    # none of the stack's own ports, which are free now only because their servers have not started yet.
    taken = {config.s3_port, config.gcs_port, config.dashboard_port, config.serve_port, config.api_port}
    ports: list[int] = []
    while len(ports) < 5:
        port = free_port()
        if port not in taken:
            taken.add(port)
            ports.append(port)
    flags = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
             "--runtime-env-agent-port", "--ray-client-server-port"]  # fmt: skip
    return [f"{flag}={port}" for flag, port in zip(flags, ports, strict=True)]


@dataclass
class WorkerNode:
    """A Ray worker node this stack started: its Ray node id and its own Trainyard home (cache included)."""

    name: str
    node_id: str
    home: Path

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.config.home.mkdir(parents=True, exist_ok=True)
        self._ensure_ray_token()
        self._ensure_api_key()

    def _ensure_api_key(self) -> None:
        # Auth is on by default: the stack's first start makes one admin key, kept like the Ray token. The API
        # registers it at every start (TRAINYARD_BOOTSTRAP_KEY_FILE), so a purged store gets it back too.
        path = self.config.api_key_file
        if not path.exists():
            from core.tenancy import new_key

            path.touch(mode=0o600)
            path.write_text(new_key())

    @property
    def api_key(self) -> str:
        self._ensure_api_key()  # `purge` deletes the home folder, key file included
        return self.config.api_key_file.read_text().strip()

    def api_headers(self) -> dict[str, str]:
        """What a client of this stack's API sends: its admin key as a bearer token."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def api_client(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client on this stack's API carrying its admin key (close it, or use it in a `with`)."""
        return httpx.Client(base_url=self.config.api_url, headers=self.api_headers(), timeout=timeout)

    def _ensure_ray_token(self) -> None:
        # Ray binds some ports on every interface even with a loopback node address: token authentication
        # keeps anyone else on the network from submitting code to this cluster.
        path = self.config.ray_token_file
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32))

    # --- environment shared by every process -------------------------------------------------------

    def env(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(
            TRAINYARD_HOME=str(c.home),
            TRAINYARD_S3_ENDPOINT_URL=c.s3_url,
            TRAINYARD_RAY_ADDRESS=c.dashboard_url,
            TRAINYARD_SERVE_URL=c.serve_url,
            TRAINYARD_PUBLIC_URL=c.api_url,
            TRAINYARD_FIXED_CLUSTER="true",
            AWS_ACCESS_KEY_ID=LOCAL_S3_KEY,
            AWS_SECRET_ACCESS_KEY=LOCAL_S3_KEY,
            AWS_DEFAULT_REGION="us-east-1",
            # AWS SDKs add CRC checksums and streaming signatures to every upload by default (boto3 >= 1.36,
            # the C++ SDK under pyarrow); S3-compatible servers such as s3rver refuse those payloads.
            AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
            AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(c.ray_token_file),
            # The API registers this admin key; the SDK, the CLI and the demo send it.
            TRAINYARD_BOOTSTRAP_KEY_FILE=str(c.api_key_file),
            TRAINYARD_API_KEY=self.api_key,
            # glibc malloc tuned for torch on few cores (core/runtime_env.py). Set here, every Ray process
            # inherits it.
            **TORCH_MALLOC_ENV,
            PYTHONUNBUFFERED="1",
            # Ray Jobs run their entrypoint through a shell: `python` must be this environment's.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        env.pop("RAY_ADDRESS", None)
        env.update(c.env_overrides)
        return env

    def export_env(self) -> None:
        """Point this process at the stack too (Settings and boto3 read the environment)."""
        from core.settings import get_settings

        os.environ.update({k: v for k, v in self.env().items() if k.startswith(("TRAINYARD_", "AWS_", "RAY_AUTH_"))})
        get_settings.cache_clear()

    def _log(self, name: str) -> Path:
        path = self.config.home / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self._log(name).open("ab")
        proc = subprocess.Popen(
            argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.config.pids[name] = proc.pid
        self.save()

    # --- services ----------------------------------------------------------------------------------

    def start_s3(self) -> None:
        if self._alive("s3"):
            return
        c = self.config
        if s3rver_installed():
            c.s3_data_dir.mkdir(parents=True, exist_ok=True)
            # s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider: without it
            # every listing longer than one page (a dataset over 1,000 images) fails with a 500.
            argv = ["node", "--openssl-legacy-provider", str(S3RVER_DIR / "serve.js"), "--silent",
                    "--directory", str(c.s3_data_dir), "--address", LOOPBACK, "--port", str(c.s3_port)]  # fmt: skip
            self._spawn("s3", argv)
            wait_http(f"{c.s3_url}/", "S3 server", timeout=30)
        else:
            # Without Node.js the stack still runs, but on moto's in-memory server: say loudly what that costs.
            logger.warning(
                "Node.js >= 20 or s3rver is missing (run scripts/setup): the local S3 server keeps objects in "
                "memory, and a restart loses every dataset, checkpoint and model"
            )
            self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(c.s3_port)])
            wait_http(f"{c.s3_url}/moto-api/", "S3 server", timeout=30)
        self._create_artifact_bucket()

    def s3_client(self) -> Any:
        """boto3 on this stack's S3 server with its local credentials (this process's environment aside)."""
        import boto3

        from core.s3 import client_config

        return boto3.client(
            "s3",
            endpoint_url=self.config.s3_url,
            aws_access_key_id=LOCAL_S3_KEY,
            aws_secret_access_key=LOCAL_S3_KEY,
            region_name="us-east-1",
            config=client_config(compatible_server=True),
        )

    def _create_artifact_bucket(self) -> None:
        from core.settings import Settings
        from core.spec import S3Location
        from infra.local.sample_data import ensure_bucket

        uri = self.env().get("TRAINYARD_ARTIFACT_URI") or Settings.model_fields["artifact_uri"].default
        ensure_bucket(self.s3_client(), S3Location.parse(uri).bucket)

    def start_ray(self, extra_args: list[str] | None = None, extra_env: dict[str, str] | None = None) -> None:
        """Start the Ray head; `extra_args`/`extra_env` go to its `ray start` (e.g. an autoscaling config)."""
        c = self.config
        if self.ray_ready():
            return
        argv = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            f"--num-cpus={c.num_cpus}",
            f"--node-ip-address={LOOPBACK}",
            f"--port={c.gcs_port}",
            "--include-dashboard=true",
            f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={c.dashboard_port}",
            f"--dashboard-agent-listen-port={c.dashboard_agent_port}",
            f"--ray-client-server-port={c.ray_client_port}",
            f"--temp-dir={c.ray_temp_dir}",
            # Ray's fixed defaults (agent HTTP 52365, client server 10001) collide with a second stack or
            # test run on the machine: the agent then fails to bind and no job can be submitted.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
            *_free_agent_ports(c),
            *(extra_args or []),
        ]
        env = self.env() | (extra_env or {})
        for attempt in (1, 2):
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
            self._log("ray-start").write_text(result.stdout + result.stderr)
            if result.returncode == 0:
                break
            # Ray gives its raylet a fixed 30 s to register; on a machine busy with other test runs that can
            # pass. Clear what the failed start left and try once more before giving up.
            self.stop_ray()
            if attempt == 2 or "timed out during startup" not in result.stdout + result.stderr:
                raise RuntimeError(f"ray start failed; see {self._log('ray-start')}")
        wait_http(f"{c.dashboard_url}/api/version", "Ray dashboard", timeout=120)

    @property
    def database_url(self) -> str:
        """The store every process of this stack shares (a SQLite file here; PostgreSQL on clusters)."""
        return self.env().get("TRAINYARD_DATABASE_URL") or f"sqlite:///{self.config.home / 'trainyard.db'}"

    def start_worker_node(
        self,
        name: str,
        num_cpus: int,
        resources: dict[str, float] | None = None,
        env: dict[str, str] | None = None,
        num_gpus: int = 0,
    ) -> WorkerNode:
        """Join a Ray worker node to this stack's head, as `ray start --address` does on another machine.

        The node gets its own Trainyard home, so its own dataset and weights cache: nothing a task on another
        node wrote is visible to it, as on a real cluster. Only the store is shared (a database every node can
        reach), and every port is free-picked so several nodes fit on one machine. `stop_ray` stops it.
        `num_gpus` on a machine without GPUs makes Ray believe in them (placement and pricing tests); `env` is the
        node's own, e.g. RAY_NODE_TYPE_NAME as KubeRay sets it to the node's group name.
        """
        c = self.config
        home = c.home / "nodes" / name
        home.mkdir(parents=True, exist_ok=True)
        node_env = self.env() | {"TRAINYARD_HOME": str(home), "TRAINYARD_DATABASE_URL": self.database_url}
        node_env.pop("TRAINYARD_CACHE_DIR", None)
        node_env |= env or {}
        before = {n["node_id"] for n in self.ray_nodes()}
        argv = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            f"--address={LOOPBACK}:{c.gcs_port}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            f"--resources={json.dumps(resources or {})}",
            f"--node-ip-address={LOOPBACK}",
            *_free_agent_ports(c)[:-1],  # worker nodes run no client server
            f"--temp-dir={c.ray_temp_dir}",
            "--disable-usage-stats",
        ]
        result = subprocess.run(argv, env=node_env, capture_output=True, text=True, timeout=180)
        self._log(f"ray-start-{name}").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"ray start for worker node {name} failed; see {self._log(f'ray-start-{name}')}")
        deadline = time.monotonic() + 60
        while not (new := {n["node_id"] for n in self.ray_nodes() if n["state"] == "ALIVE"} - before):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker node {name} did not join the cluster within 60s")
            time.sleep(0.5)
        return WorkerNode(name=name, node_id=new.pop(), home=home)

    def ray_nodes(self) -> list[dict[str, Any]]:
        """Ray's node list (the state API over the dashboard): node_id, state, is_head_node, resources_total."""
        token = self.config.ray_token_file.read_text().strip()
        response = httpx.get(
            f"{self.config.dashboard_url}/api/v0/nodes",
            params={"detail": "1", "limit": "1000"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        response.raise_for_status()
        return list(response.json()["data"]["result"]["result"])

    def migrate_store(self) -> None:
        """Bring the store to this release's schema (Alembic head), as the chart's initContainer does."""
        result = subprocess.run(
            [sys.executable, "-m", "core.migrate"], env=self.env(), capture_output=True, text=True, timeout=120
        )
        self._log("migrate").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"migrating the job store failed; see {self._log('migrate')}")

    def start_api(self) -> None:
        if self._alive("api"):
            return
        self.migrate_store()  # the API refuses to serve a store behind its schema
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app",
            "--host", LOOPBACK, "--port", str(self.config.api_port), "--no-access-log",
            # Longer than clients keep idle connections (httpx: 5 s, uvicorn's own default): a server closing
            # at the same moment a client reuses the connection is a ReadError under load.
            "--timeout-keep-alive", "75",
        ]  # fmt: skip
        self._spawn("api", argv)
        wait_http(f"{self.config.api_url}/healthz", "API", timeout=60)

    def stop_api(self) -> None:
        self._kill("api")

    def up(self) -> None:
        self.start_s3()
        self.start_ray()
        self.start_api()
        self.restore_serving()

    def restore_serving(self) -> dict[str, Any]:
        """Bring Serve back for the models the store lists (after a restart) and report those that cannot
        answer; see serving/restore.py. Returns its report."""
        env = self.env() | {"RAY_ADDRESS": f"{LOOPBACK}:{self.config.gcs_port}"}
        result = subprocess.run(
            [sys.executable, "-m", "serving.restore"], env=env, capture_output=True, text=True, timeout=300
        )
        with self._log("serving-restore").open("a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"restoring the Serve application failed; see {self._log('serving-restore')}")
        for line in result.stderr.splitlines():
            if line.startswith("warning: model"):
                print(line, file=sys.stderr)
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return report

    def purge(self) -> None:
        """Delete everything the stack keeps: the job store, every object (datasets, checkpoints, models),
        the dataset cache and the logs. The stack must be down."""
        shutil.rmtree(self.config.home, ignore_errors=True)

    def data_summary(self) -> str:
        c = self.config
        objects = [p for p in c.s3_data_dir.rglob("*") if p.is_file()] if c.s3_data_dir.exists() else []
        size = sum(p.stat().st_size for p in objects)
        return f"{c.home} (job store, {len(objects)} object files totalling {size / 1e6:.1f} MB, cache, logs)"

    def down(self) -> None:
        self._kill("api")
        if self.state_file.exists():  # never started from this home: no Ray of ours to stop
            self.stop_ray()
        self._kill("s3")
        shutil.rmtree(self.config.ray_temp_dir, ignore_errors=True)

    def stop_ray(self, timeout: float = 15) -> None:
        """Stop this stack's Ray processes and only those.

        `ray stop` would stop every Ray cluster on the machine (another stack, a parallel test run). This
        stack's processes are the ones whose command line names its GCS address or its temp folder, plus
        their descendants (job drivers, Ray Train workers).
        """
        import psutil

        found = self._ray_processes()
        # The GCS last: a raylet or agent told to stop while the GCS is going too keeps retrying to reach it, and
        # sat out the whole timeout (15 s of every test stack's teardown) before it was killed.
        gcs = [p for p in found.values() if _is_gcs(p)]
        for group in ([p for p in found.values() if p not in gcs], gcs):
            for proc in group:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            _, alive = psutil.wait_procs(group, timeout=timeout)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)

    def kill_ray(self) -> int:
        """SIGKILL every Ray process of this stack at once, as a crash of its machine would (the head's GCS,
        raylet, dashboard, Serve and the drivers alike); returns how many were killed. `start_ray` starts again."""
        import psutil

        found = list(self._ray_processes().values())
        for proc in found:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(found, timeout=10)
        return len(found)

    def _ray_processes(self) -> dict[int, Any]:
        """This stack's Ray processes (psutil.Process by pid): those whose command line names its GCS address or
        its temp folder, and their descendants (job drivers, Ray Train workers)."""
        import psutil

        marks = (f"{LOOPBACK}:{self.config.gcs_port}", f"--gcs_server_port={self.config.gcs_port}",
                 str(self.config.ray_temp_dir))  # fmt: skip
        # Some (Ray's client server) name the GCS by the machine's address instead: `--address=<ip>:<port>`.
        address_suffix = f":{self.config.gcs_port}"
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            args = proc.info.get("cmdline") or []
            cmdline = " ".join(args)
            named = any(mark in cmdline for mark in marks) or any(a.endswith(address_suffix) for a in args)
            if proc.pid != os.getpid() and named:
                found[proc.pid] = proc
                with contextlib.suppress(psutil.Error):
                    found.update({child.pid: child for child in proc.children(recursive=True)})
        found.pop(os.getpid(), None)
        return found

    def ray_ready(self) -> bool:
        try:
            token = self.config.ray_token_file.read_text().strip()
            response = httpx.get(
                f"{self.config.dashboard_url}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=2
            )
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    # --- process bookkeeping -----------------------------------------------------------------------

    def _alive(self, name: str) -> bool:
        pid = self.config.pids.get(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def _kill(self, name: str, timeout: float = 15) -> None:
        pid = self.config.pids.pop(name, None)
        self.save()
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                os.waitpid(pid, os.WNOHANG)
            except (OSError, ChildProcessError):
                return
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)

    @property
    def state_file(self) -> Path:
        return self.config.home / "stack.json"

    def save(self) -> None:
        data = asdict(self.config) | {"home": str(self.config.home)}
        # Owner-only, like the Ray token: `env_overrides` may carry credentials (an S3 key pair, a database URL).
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2))
        self.state_file.chmod(0o600)  # a file written by an older version keeps its mode otherwise

    @classmethod
    def load(cls, home: Path) -> LocalStack:
        path = home / "stack.json"
        if path.exists():
            data = json.loads(path.read_text())
            data["home"] = Path(data["home"])
            return cls(StackConfig(**data))
        return cls(StackConfig(home=home))

    def describe(self) -> str:
        c = self.config
        return "\n".join(
            [
                f"  API            {c.api_url}   (docs: {c.api_url}/docs)",
                f'  API admin key  {c.api_key_file}   (curl -H "Authorization: Bearer $(cat {c.api_key_file})" …)',
                f"  Ray dashboard  {c.dashboard_url}",
                f"  Ray Serve      {c.serve_url}",
                f"  S3 (local)     {c.s3_url}   (key/secret: {LOCAL_S3_KEY})",
                f"  job store      {c.home / 'trainyard.db'}",
                f"  objects        {c.s3_data_dir}   (datasets, checkpoints, models: kept across restarts)",
                f"  cache, logs    {c.home / 'cache'}, {c.home / 'logs'}",
            ]
        )


def _is_gcs(proc: Any) -> bool:
    with contextlib.suppress(Exception):
        return bool(proc.name() == "gcs_server")
    return False


def s3rver_installed() -> bool:
    if not (S3RVER_DIR / "node_modules" / "@20minutes" / "s3rver").is_dir() or shutil.which("node") is None:
        return False
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout
    return int(version.lstrip("v").split(".")[0] or 0) >= 20


def wait_http(url: str, what: str, timeout: float) -> None:
    """Poll until `url` answers at all (any status): readiness, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f}s")
