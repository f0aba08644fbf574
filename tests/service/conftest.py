"""The real API under uvicorn on a loopback port, a SQLite store under `tmp_path`, and httpx over real HTTP.

Ray and the model server are pointed at a loopback port that is bound but never listens, so every connection
to them is refused at once: the API's "dependency down" paths run for real. Tests that need the Ray side to
answer pass a `FakeLauncher`; the real cluster is exercised by the end-to-end tests.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core.store import JobStore
from core.tenancy import Tenancy
from service.main import create_app
from tests.utils.api_server import Api, ApiFactory, listening_socket, make_settings, serve
from tests.utils.schema import migrated


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on; held bound for the test so no other process can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def make_api(tmp_path: Path, closed_port: int) -> Iterator[ApiFactory]:
    """`make_api(launcher=None, app_hook=None, cluster=None, **settings)` starts an API; all are stopped after the
    test. `cluster` (a FakeCluster) answers for Serve and the nodes; None: the real dashboard client, refused."""
    with ExitStack() as stack:
        count = itertools.count()

        def start(
            launcher: Any = None,
            app_hook: Callable[[FastAPI], None] | None = None,
            cluster: Any = None,
            **overrides: Any,
        ) -> Api:
            sock = listening_socket()
            public_url = "http://{}:{}".format(*sock.getsockname())
            settings = make_settings(tmp_path / f"api{next(count)}", closed_port, public_url=public_url, **overrides)
            migrated(settings.resolved_database_url)  # what the stack and the chart do before the API starts
            store = JobStore.from_url(settings.resolved_database_url)
            stack.callback(store.engine.dispose)
            # `http` carries an admin key, so tests written before auth existed keep working unchanged.
            _, admin_key = Tenancy(store.engine).create_key("admin", admin=True)
            app = create_app(settings, launcher, cluster)
            if app_hook is not None:
                app_hook(app)
            url = stack.enter_context(serve(app, sock))
            headers = {"Authorization": f"Bearer {admin_key}"}
            http = stack.enter_context(httpx.Client(base_url=url, headers=headers, timeout=30))
            # uvicorn reports "started" once it listens; /healthz answering is what the tests rely on.
            assert http.get("/healthz").status_code == 200
            api = Api(url=url, http=http, settings=settings, store=store, admin_key=admin_key, app=app)
            stack.callback(lambda: [client.close() for client in api.clients])
            return api

        yield start


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    """The API with Ray and the model server unreachable."""
    return make_api()
