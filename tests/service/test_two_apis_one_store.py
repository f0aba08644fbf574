"""Two real API processes on one PostgreSQL store: each queued job is submitted to Ray exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.spec import JobParams
from core.store import JobStore
from infra.local.stack import LOOPBACK, free_port
from tests.utils.postgres import postgres_bin, temporary_postgres
from tests.utils.recording_launcher import RecordingLauncher
from tests.utils.schema import migrated

REPO = Path(__file__).resolve().parents[2]
JOBS = 40
INTERVAL_S = 0.2


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if postgres_bin("initdb") is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed here (CI installs it)")
    with temporary_postgres() as url:
        migrated(url)
        yield url


def start_api(database_url: str, submissions: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRAINYARD_HOME": str(home),
        "TRAINYARD_DATABASE_URL": database_url,
        "TRAINYARD_RECONCILE_INTERVAL_S": str(INTERVAL_S),
        "TRAINYARD_TEST_SUBMISSIONS": str(submissions),
        # Every job at once: this test is about the claim, not the quota gate that paces a tenant's launches.
        "TRAINYARD_MAX_CONCURRENT_JOBS": str(JOBS),
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "tests.utils.recording_launcher:create_app",
            "--host", LOOPBACK, "--port", str(port), "--no-access-log"]  # fmt: skip
    log = (home / "api.log").open("wb")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), f"http://{LOOPBACK}:{port}"


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"API at {url} exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"API at {url} did not answer /healthz within {timeout_s}s")


@pytest.mark.slow  # two API processes start (~30 s each on a busy 2-core machine)
def test_racing_reconcilers_submit_each_queued_job_exactly_once(postgres_url: str, tmp_path: Path) -> None:
    store = JobStore.from_url(postgres_url)
    submissions = tmp_path / "submissions.log"
    procs = []
    try:
        job_ids = [store.create_job(JobParams(dataset_uri="s3://bucket/data"))[0].id for _ in range(JOBS)]
        for name in ("a", "b"):  # both start together and find every job queued and unknown to Ray
            (tmp_path / name).mkdir()
            procs.append(start_api(postgres_url, submissions, tmp_path / name))
        for proc, url in procs:
            wait_healthy(url, proc)
        launcher = RecordingLauncher(submissions)
        deadline = time.monotonic() + 60
        while set(launcher.submitted()) != set(job_ids) and time.monotonic() < deadline:
            time.sleep(INTERVAL_S)
        time.sleep(10 * INTERVAL_S)  # more passes of both reconcilers: still no second submission

        counts = Counter(launcher.submitted())
        assert set(counts) == set(job_ids), "every queued job is submitted"
        assert [job for job, n in counts.items() if n > 1] == [], "no job is submitted twice"
        claimants = {line.split()[1] for line in submissions.read_text().splitlines()}
        assert claimants <= {str(p.pid) for p, _ in procs}
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=30)
        store.engine.dispose()
