"""POST /v1/jobs/{id}/retry: a failed or cancelled job runs again as the same job's next attempt."""

from __future__ import annotations

from core.spec import JobStatus, Phase
from service.launcher import RayJobState
from service.reconciler import reconcile_once
from tests.utils.api_server import ApiFactory, FakeLauncher


def test_a_job_whose_driver_died_is_retried_as_its_next_attempt(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher)
    job_id = api.create_job()["id"]
    api.store.set_phase(job_id, Phase.training, 0.5)
    launcher.states[job_id] = RayJobState.failed  # the driver was SIGKILLed: Ray saw its process die
    reconcile_once(api.store, launcher)
    failed = api.http.get(f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "driver_died"
    assert "driver process died during training" in failed["error"]["message"]
    assert f"trainyard retry {job_id}" in failed["error"]["message"]

    response = api.http.post(f"/v1/jobs/{job_id}/retry")

    assert response.status_code == 202, response.text
    retried = response.json()
    assert (retried["id"], retried["status"], retried["attempt"]) == (job_id, "queued", 2)
    assert retried["error"] is None and retried["finished_at"] is None
    # Its own Ray submission: Ray keeps the first attempt's record and log under the job id.
    assert launcher.submitted == [job_id, f"{job_id}-attempt2"]
    kinds = [e["kind"] for e in api.http.get(f"/v1/jobs/{job_id}/events").json()["events"]]
    assert kinds[-2:] == ["failed", "retry"]  # the same event log continues
    # The reconciler follows the new attempt, not the dead first driver.
    reconcile_once(api.store, launcher)
    assert api.store.get_job(job_id).status is JobStatus.queued  # type: ignore[union-attr]
    assert launcher.submitted == [job_id, f"{job_id}-attempt2"]


def test_only_failed_or_cancelled_jobs_are_retried(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher)
    job_id = api.create_job()["id"]

    queued = api.http.post(f"/v1/jobs/{job_id}/retry")
    assert queued.status_code == 409
    assert queued.json()["error"]["code"] == "job_not_retryable" and "is queued" in queued.json()["error"]["message"]
    assert api.http.post("/v1/jobs/job-nope/retry").status_code == 404

    api.http.post(f"/v1/jobs/{job_id}/cancel")
    launcher.states[job_id] = RayJobState.running  # the cancelled driver has not stopped yet
    stopping = api.http.post(f"/v1/jobs/{job_id}/retry")
    assert stopping.status_code == 409 and stopping.json()["error"]["code"] == "previous_attempt_running"

    launcher.states[job_id] = RayJobState.stopped
    assert api.http.post(f"/v1/jobs/{job_id}/retry").json()["attempt"] == 2
    again = api.http.post(f"/v1/jobs/{job_id}/retry")  # now queued again: a second retry is refused
    assert again.status_code == 409


def test_retry_while_ray_is_down_answers_503(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher)
    job_id = api.create_job()["id"]
    api.store.fail(job_id, "internal_error", "boom")
    launcher.reachable = False
    response = api.http.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert api.store.get_job(job_id).status is JobStatus.failed  # type: ignore[union-attr]
