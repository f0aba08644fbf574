"""`RayLauncher` against what it talks to: nothing at all, and a stand-in for Ray's Jobs API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from service.launcher import LauncherUnavailable, RayJobState, RayLauncher
from tests.utils.api_server import serve


def test_unreachable_ray(closed_port: int) -> None:
    launcher = RayLauncher(f"http://127.0.0.1:{closed_port}")
    assert launcher.ping() is False
    assert launcher.state("job-1") is RayJobState.unreachable
    with pytest.raises(LauncherUnavailable):
        launcher.submit("job-1")
    with pytest.raises(LauncherUnavailable):
        launcher.stop("job-1")


class FakeJobsApi:
    """The few endpoints of the Ray dashboard's Jobs API that the SDK calls, with the SDK's wire format."""

    def __init__(self) -> None:
        self.submissions: list[dict[str, Any]] = []
        self.status: dict[str, str] = {}
        self.fail_reads = False
        self.app = FastAPI()
        self.app.add_api_route("/api/version", self.version)
        self.app.add_api_route("/api/jobs/", self.submit, methods=["POST"])
        self.app.add_api_route("/api/jobs/{job_id}", self.info)
        self.app.add_api_route("/api/jobs/{job_id}/stop", self.stop, methods=["POST"])

    def version(self) -> dict[str, str]:
        return {"version": "4", "ray_version": ray.__version__, "ray_commit": "test"}

    async def submit(self, request: Request) -> Response:
        body = await request.json()
        job_id = body["submission_id"]
        if job_id in self.status:
            return PlainTextResponse(f"ValueError: Job with submission_id {job_id} already exists.", 400)
        self.submissions.append(body)
        self.status[job_id] = "PENDING"
        return JSONResponse({"job_id": job_id, "submission_id": job_id})

    def info(self, job_id: str) -> Response:
        if self.fail_reads:
            return PlainTextResponse("GCS unavailable", 500)
        if job_id not in self.status:
            return PlainTextResponse(f"Job {job_id} does not exist", 404)
        details = {"type": "SUBMISSION", "submission_id": job_id, "status": self.status[job_id], "entrypoint": "x"}
        return JSONResponse(details)

    def stop(self, job_id: str) -> Response:
        if job_id not in self.status:
            return PlainTextResponse(f"Job {job_id} does not exist", 404)
        self.status[job_id] = "STOPPED"
        return JSONResponse({"stopped": True})


@pytest.fixture
def jobs_api() -> Iterator[tuple[FakeJobsApi, RayLauncher]]:
    fake = FakeJobsApi()
    with serve(fake.app) as url:
        yield fake, RayLauncher(url)


def test_submit_runs_the_driver_under_the_job_id(jobs_api: tuple[FakeJobsApi, RayLauncher]) -> None:
    fake, launcher = jobs_api
    assert launcher.ping() is True
    launcher.submit("job-1")
    launcher.submit("job-1")  # a resubmission (reconciler after an API crash) is not an error
    [submission] = fake.submissions
    assert submission["entrypoint"] == "python -m jobs.driver job-1"
    assert submission["submission_id"] == "job-1"
    assert submission["entrypoint_num_cpus"] == 0
    assert submission["metadata"]["trainyard_job_id"] == "job-1"
    # No environment travels with the job: the cluster's processes already have the configuration.
    assert not submission.get("runtime_env", {}).get("env_vars")


def test_states_map_from_ray(jobs_api: tuple[FakeJobsApi, RayLauncher]) -> None:
    fake, launcher = jobs_api
    assert launcher.state("job-x") is RayJobState.missing
    for ray_status, state in [
        ("PENDING", RayJobState.pending),
        ("RUNNING", RayJobState.running),
        ("SUCCEEDED", RayJobState.succeeded),
        ("FAILED", RayJobState.failed),
        ("STOPPED", RayJobState.stopped),
    ]:
        fake.status["job-x"] = ray_status
        assert launcher.state("job-x") is state
    fake.fail_reads = True
    assert launcher.state("job-x") is RayJobState.unreachable


def test_stop(jobs_api: tuple[FakeJobsApi, RayLauncher]) -> None:
    fake, launcher = jobs_api
    launcher.submit("job-1")
    launcher.stop("job-1")
    assert fake.status["job-1"] == "STOPPED"
    launcher.stop("job-unknown")  # nothing to stop is not an error
