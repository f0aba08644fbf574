"""No secret reaches a log, a record or an answer: a real stack run with recognisable secrets, then grep.

The stack (S3 server, Ray head with token auth, the API) runs with secret values nobody could mistake
for anything else: the S3 key pair, the Ray token, an API key, and whatever key or token files the stack
writes into its home (the admin API key, once auth lands). A job goes through the API to Ray and fails in
`fetching`, because the S3 server refuses those credentials: the error path, where tracebacks, S3 error
bodies and environments get logged, is the one most likely to leak. Then every byte the stack produced is
searched: its logs, Ray's session folder, the S3 server's folder, the store (jobs, events, errors), and
the API's answers.

Not covered here: a database password (the local store is SQLite; the API logs its URL through
SQLAlchemy's `hide_password`), and a successful training run's logs (see the closing note in the report).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.local.stack import LocalStack
from tests.utils.stack import own_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MARK = "tyleak"  # every secret contains it, so one search finds a partial leak too
SECRETS = {
    "AWS_ACCESS_KEY_ID": f"AKIA{MARK.upper()}ACCESS42",
    "AWS_SECRET_ACCESS_KEY": f"{MARK}-s3-secret-Zq81nB0fK3",
    "TRAINYARD_API_KEY": f"{MARK}-api-key-7Hc2Lw9",
}
RAY_TOKEN = "7e57" * 16  # hex, as Ray's tokens are (the stack makes them with secrets.token_hex)


@pytest.fixture(scope="module")
def secret_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    home = tmp_path_factory.mktemp("secret-home")
    token = home / "ray-auth-token"
    token.write_text(RAY_TOKEN)
    token.chmod(0o600)
    with own_stack(home, env=SECRETS) as stack:
        yield stack


def _secrets(stack: LocalStack) -> dict[str, str]:
    found = {**SECRETS, "ray token": RAY_TOKEN}
    for path in stack.config.home.iterdir():
        # Key and token files the stack writes for itself (the Ray token, an admin API key) are secrets too.
        if path.is_file() and ("key" in path.name or "token" in path.name) and _owner_only(path):
            found[path.name] = path.read_text().strip()
    return found


def _owner_only(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


def _secret_stores(stack: LocalStack, secrets: dict[str, str]) -> set[Path]:
    """The stack's own configuration files that hold secrets by design; each must be readable by its owner only."""
    stores = set()
    for path in stack.config.home.iterdir():
        if path.is_file() and any(value.encode() in path.read_bytes() for value in secrets.values()):
            assert _owner_only(path), f"{path} holds a secret and is readable by others"
            stores.add(path)
    return stores


def _wait_until_finished(http: httpx.Client, job_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s")


def test_no_secret_in_logs_records_or_answers(secret_stack: LocalStack) -> None:
    stack = secret_stack
    answers: list[str] = []
    with stack.api_client(timeout=30) as http:
        submitted = http.post("/v1/jobs", json={"dataset_uri": "s3://trainyard-artifacts/no-such-dataset"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        job = _wait_until_finished(http, job_id, timeout=240)
        # The job failed on S3's refusal, and says so in a user's words (that is what makes it a real test).
        assert job["status"] == "failed", job
        for route in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events", "/v1/jobs", "/v1/models", "/readyz",
                      "/metrics", "/openapi.json", f"/v1/jobs/{job_id}/report"):  # fmt: skip
            answers.append(http.get(route).text)

    secrets = _secrets(stack)
    skip = _secret_stores(stack, secrets)
    searched: list[Path] = []
    leaks: list[str] = []
    for root in (stack.config.home, stack.config.ray_temp_dir):
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink() or path in skip:
                continue
            with contextlib.suppress(OSError):  # a socket, or a file Ray removed meanwhile
                data = path.read_bytes()
                searched.append(path)
                leaks += [f"{name} in {path}" for name, value in secrets.items() if value.encode() in data]
                if MARK.encode() in data.lower() and not any(value.encode() in data for value in secrets.values()):
                    leaks.append(f"part of a secret ({MARK!r}) in {path}")
    for answer in answers:
        leaks += [f"{name} in an API answer" for name, value in secrets.items() if value in answer]

    assert any(p.name.endswith(".db") for p in searched), "the store was not searched"
    assert any("logs" in p.parts for p in searched), "no log was searched"
    assert any(str(stack.config.ray_temp_dir) in str(p) for p in searched), "Ray's session logs were not searched"
    assert not leaks, "\n".join(sorted(set(leaks)))
