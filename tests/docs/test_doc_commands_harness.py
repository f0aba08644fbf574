"""The harness behind tests/e2e/test_documented_commands.py: what it extracts, and that a broken line fails it.

The e2e test runs the lines against the whole stack; here the lines are checked against the API's own schema,
and the checker against the real API under uvicorn (no Ray), so a harness that could not fail shows here fast.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from core.store import JobStore
from core.tenancy import Tenancy
from service.main import create_app
from tests.utils.api_server import FakeLauncher, listening_socket, make_settings, serve
from tests.utils.doc_commands import NOT_RUN, DocCommand, _expected_status, documented_commands, run_command
from tests.utils.schema import migrated

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "api.md"]
AUTH = '-H "Authorization: Bearer $TRAINYARD_API_KEY"'


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(Settings(home=tmp_path_factory.mktemp("schema"))).openapi()


def test_every_curl_line_names_a_route_and_carries_the_key_users_export(openapi: dict[str, Any]) -> None:
    commands = [c for doc in DOCS for c in documented_commands(doc)]
    curls = [c for c in commands if c.kind == "curl"]
    assert len(curls) >= 20 and len(commands) - len(curls) >= 10, commands
    for command in curls:
        filled = command.line.replace("<job id>", "job-1").replace("<model id>", "mdl-1")
        assert _expected_status(filled, openapi), command  # each URL is a route of the API
        if "/v1/" in command.line:
            assert AUTH in command.line, f"{command.source}: a /v1 call without `{AUTH}`"
        assert "$API" not in command.line or any(s.startswith("API=") for s in command.setup), command
    # The only placeholders in the lines that run are the ids a finished job fills in.
    assert set(NOT_RUN) <= {c.line for c in commands}, "a NOT_RUN line no page shows any more"
    placeholders = {p for c in commands if c.line not in NOT_RUN for p in re.findall(r"<[a-z ]+>", c.line)}
    assert placeholders == {"<job id>", "<model id>"}, placeholders


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("harness")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        settings = make_settings(home, closed.getsockname()[1])
        migrated(settings.resolved_database_url)
        store = JobStore.from_url(settings.resolved_database_url)
        _, key = Tenancy(store.engine).create_key("admin", admin=True)
        with serve(create_app(settings, FakeLauncher()), listening_socket()) as url:
            yield url, key
        store.engine.dispose()


@pytest.mark.parametrize(
    ("line", "passes"),
    [
        (f"curl -s {AUTH} $API/v1/jobs", True),
        (
            f"curl -s {AUTH} -X POST $API/v1/jobs -H 'Content-Type: application/json' -d '{{\"dataset_uri\": \"s3://bucket/pets\"}}'",
            True,
        ),
        ("curl -s $API/healthz; curl -s $API/readyz; curl -s $API/metrics", True),
        ("curl -s $API/healthz; curl -s $API/v1/models", False),  # the second call has no key: 401
        ("curl -s $API/v1/jobs", False),  # no key: 401
        (f"curl -s {AUTH} $API/v1/jobs/job-nope", False),  # 404
        (f"curl -s {AUTH} -X POST $API/v1/jobs -d '{{\"epochs\": 0}}'", False),  # 422
        ("trainyard list --json", True),
        ("trainyard statuss job-1", False),  # a typo: exit 2
    ],
)
def test_a_broken_line_fails_the_check(api: tuple[str, str], tmp_path: Path, line: str, passes: bool) -> None:
    url, key = api
    env = {**os.environ, "TRAINYARD_URL": url, "TRAINYARD_API_KEY": key, "PYTHONPATH": str(REPO)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    command = DocCommand("test", line, ("API=${TRAINYARD_URL:-http://127.0.0.1:8080}",))
    openapi = create_app(Settings(home=tmp_path)).openapi()
    if passes:
        run_command(command, tmp_path, env, openapi, timeout=60)
    else:
        with pytest.raises(AssertionError):
            run_command(command, tmp_path, env, openapi, timeout=60)
