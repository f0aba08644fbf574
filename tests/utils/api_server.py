"""Helpers for the API tests: run an app under uvicorn on loopback, a fake Ray launcher, test settings."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from core.overhead import NodeLife
from core.settings import Settings
from core.store import JobStore
from core.tenancy import Tenancy
from service.launcher import LauncherUnavailable, RayJobState
from service.ray_cluster import ServeState

STARTUP_TIMEOUT_S = 20.0


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: FastAPI, sock: socket.socket | None = None) -> Iterator[str]:
    """Run `app` under uvicorn in a thread until the block ends; yields its base URL once it answers."""
    sock = sock or listening_socket()
    host, port = sock.getsockname()
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up; see the captured log"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class FakeLauncher:
    """The Ray side as the API sees it: records calls, answers `state` from a dict."""

    states: dict[str, RayJobState] = field(default_factory=dict)
    reachable: bool = True
    submitted: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def submit(self, job_id: str) -> None:
        if not self.reachable:
            raise LauncherUnavailable("ray is down (test)")
        self.submitted.append(job_id)
        self.states[job_id] = RayJobState.pending

    def stop(self, job_id: str) -> None:
        if not self.reachable:
            raise LauncherUnavailable("ray is down (test)")
        self.stopped.append(job_id)
        self.states[job_id] = RayJobState.stopped

    def state(self, job_id: str) -> RayJobState:
        if not self.reachable:
            return RayJobState.unreachable
        return self.states.get(job_id, RayJobState.missing)

    def ping(self) -> bool:
        return self.reachable


@dataclass
class FakeCluster:
    """The Ray dashboard's other answers: the Serve application's state, the nodes, and Ray jobs it was given.

    Shares `launcher`'s states, so a submitted restore is pending there as a real Ray job would be."""

    launcher: FakeLauncher = field(default_factory=FakeLauncher)
    serve: ServeState = ServeState.absent
    node_lives: list[NodeLife] = field(default_factory=list)
    jobs: list[tuple[str, str]] = field(default_factory=list)  # (entrypoint, submission id)

    def serve_state(self) -> ServeState:
        return self.serve if self.launcher.reachable else ServeState.unreachable

    def replica_nodes(self) -> list[str] | None:
        return [] if self.launcher.reachable else None

    def nodes(self) -> list[NodeLife] | None:
        return list(self.node_lives) if self.launcher.reachable else None

    def submit_job(self, entrypoint: str, submission_id: str) -> None:
        if not self.launcher.reachable:
            raise LauncherUnavailable("ray is down (test)")
        self.jobs.append((entrypoint, submission_id))
        self.launcher.states[submission_id] = RayJobState.pending


@dataclass
class Api:
    url: str
    http: httpx.Client
    settings: Settings
    store: JobStore  # a second connection to the API's SQLite file, as a job driver would hold
    admin_key: str = ""  # the key `http` sends: an admin of tenant "admin"
    clients: list[httpx.Client] = field(default_factory=list)  # closed by the fixture
    app: FastAPI | None = None

    def new_key(self, tenant: str, admin: bool = False) -> str:
        """A fresh API key for `tenant` (created if new)."""
        return Tenancy(self.store.engine).create_key(tenant, admin)[1]

    def client(self, key: str | None) -> httpx.Client:
        """An HTTP client on this API sending `key` as its bearer token (None: no Authorization header)."""
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def tenant_client(self, tenant: str) -> httpx.Client:
        """An HTTP client holding a new (non-admin) key of `tenant`."""
        return self.client(self.new_key(tenant))

    def create_job(self, **params: Any) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", **params})
        assert response.status_code == 202, response.text
        return dict(response.json())


def make_settings(home: Path, closed_port: int, **overrides: Any) -> Settings:
    # Every value explicit: the session's e2e fixtures export TRAINYARD_* variables for the whole process.
    values: dict[str, Any] = {
        "home": home,
        "database_url": f"sqlite:///{home / 'trainyard.db'}",
        "ray_address": f"http://127.0.0.1:{closed_port}",
        "serve_url": f"http://127.0.0.1:{closed_port}",
        "reconcile_interval_s": 60.0,
        "max_image_bytes": 10 * 1024 * 1024,
        # The tests' stand-in dataset bucket, open to every tenant's keys (see service.dataset_access).
        "dataset_prefixes": ["s3://bucket"],
    }
    return Settings(**{**values, **overrides})


# make_api(launcher=None, app_hook=None, cluster=None, **settings) -> Api (see conftest.py)
ApiFactory = Callable[..., Api]


def add_model(store: JobStore, tenant: str = "admin") -> str:
    """A succeeded job with a listed model, as a finished job leaves them; returns the model id."""
    from datetime import UTC, datetime

    from core.spec import JobParams
    from core.store import ModelRecord

    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/pets"), tenant=tenant)
    model = ModelRecord(
        id=job.id.replace("job-", "mdl-", 1),
        job_id=job.id,
        artifact_uri=f"s3://trainyard-artifacts/jobs/{job.id}/model.pt",
        arch="efficientnet_lite0",
        classes=["cat", "dog"],
        created_at=datetime.now(UTC),
    )
    assert store.succeed_with_model(job.id, model)
    return model.id
