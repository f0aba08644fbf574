"""Fixtures for the SDK and CLI tests: a clean client environment, and the real API on loopback.

The API is the real app under uvicorn with a SQLite store and a fake Ray launcher (the pipeline itself is
exercised by tests/e2e); the client talks to it over real HTTP.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.store import JobStore
from core.tenancy import Tenancy
from service.main import create_app
from tests.utils.api_server import FakeLauncher, listening_socket, make_settings, serve
from tests.utils.schema import migrated


@pytest.fixture
def client_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No TRAINYARD_* or AWS variables from the surrounding process; config file and stack home in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("TRAINYARD_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRAINYARD_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "stack-home"))
    # boto3 must not find credentials in the developer's ~/.aws either.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    return tmp_path


@dataclass
class LiveApi:
    url: str
    store: JobStore
    launcher: FakeLauncher  # the Ray side as the API sees it
    api_key: str  # an admin key, also in TRAINYARD_API_KEY for the SDK and the CLI


@pytest.fixture
def live_api(tmp_path: Path, client_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApi]:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # Ray, Serve and S3 "live" here: bound, never listening
        sock = listening_socket()
        public_url = "http://{}:{}".format(*sock.getsockname())
        # S3 too, or the model routes' object checks would try AWS's own endpoint. One attempt: a refused
        # connection answers at once, but boto3's default eight attempts back off for ~7 s per object check
        # whenever this process holds credentials (any earlier test that started the session's stack).
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
        settings = make_settings(
            tmp_path / "api",
            closed.getsockname()[1],
            public_url=public_url,
            s3_endpoint_url=nowhere,
            s3_max_attempts=1,
        )
        migrated(settings.resolved_database_url)
        store = JobStore.from_url(settings.resolved_database_url)
        _, api_key = Tenancy(store.engine).create_key("admin", admin=True)
        monkeypatch.setenv("TRAINYARD_API_KEY", api_key)
        launcher = FakeLauncher()
        with serve(create_app(settings, launcher), sock) as url:
            try:
                yield LiveApi(url=url, store=store, launcher=launcher, api_key=api_key)
            finally:
                store.engine.dispose()
