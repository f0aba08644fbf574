"""Fault matrix row 2: the job's driver SIGKILLed mid-training → failed as driver_died; a retry resumes.

A real driver (the Ray job's entrypoint, `python -m jobs.driver <id>`) on the session's Ray stack is killed
after its first unfrozen epoch is checkpointed. The API's reconciler must mark the job failed within its
interval; POST /v1/jobs/{id}/retry must then finish the job from that checkpoint, reporting every epoch once.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import psutil
import pytest

from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECONCILE_INTERVAL_S = 2
# Ray notices the entrypoint's exit (its job supervisor polls the process) before the reconciler can see it.
RAY_NOTICES_S = 5.0
FREEZE_EPOCHS, EPOCHS = 1, 4
JOB = {
    "epochs": EPOCHS,
    "freeze_epochs": FREEZE_EPOCHS,
    "batch_size": 8,
    "image_size": 32,
    "num_workers": 1,
    "lr": 0.01,
    "deploy": False,
    "patience": None,  # every epoch runs: what is counted is a resumed run's epochs, not early stopping
}


@pytest.fixture(scope="module")
def api(api_stack: LocalStack, stack_api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> httpx.Client:
    # The shared API reconciles every RECONCILE_INTERVAL_S (tests/conftest.py), so "within the interval" is
    # quick to test.
    assert api_stack.env()["TRAINYARD_RECONCILE_INTERVAL_S"] == str(RECONCILE_INTERVAL_S)
    data = make_shapes(tmp_path_factory.mktemp("driver-kill") / "shapes", train_per_class=8, valid_per_class=4, size=32)
    upload_folder(api_stack.s3_client(), data, "driver-kill", "shapes")
    return stack_api


def _wait(api: httpx.Client, job_id: str, until: Any, timeout: float, poll_s: float = 0.2) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(poll_s)
    raise AssertionError(f"job {job_id} did not get there within {timeout}s: {job}")


def _driver_process(job_id: str) -> psutil.Process:
    """The Ray job's entrypoint process for this job (Ray runs it through a shell: take the python)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "jobs.driver" in cmdline and job_id in cmdline:
            return proc
    raise AssertionError(f"no driver process for {job_id}")


def test_a_killed_driver_fails_the_job_and_a_retry_resumes_from_its_checkpoint(api: httpx.Client) -> None:
    job_id = api.post("/v1/jobs", json={"dataset_uri": "s3://driver-kill/shapes", **JOB}).json()["id"]

    def unfrozen_checkpointed(job: dict[str, Any]) -> bool:
        assert job["status"] in ("queued", "running"), job
        return any(m["stage"] != "frozen" and m.get("checkpoint_uri") for m in job["metrics"])

    before = _wait(api, job_id, unfrozen_checkpointed, timeout=420, poll_s=0.1)
    _driver_process(job_id).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    recorded_before_kill = [m["epoch"] for m in before["metrics"]]

    failed = _wait(api, job_id, lambda j: j["status"] != "running", timeout=60)
    took = time.monotonic() - killed_at
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "driver_died"
    assert "driver process died during training" in failed["error"]["message"]
    assert f"trainyard retry {job_id}" in failed["error"]["message"]
    assert took <= RECONCILE_INTERVAL_S + RAY_NOTICES_S, f"marked failed {took:.1f}s after the kill"
    print(f"driver killed → job failed in {took:.1f}s (reconcile interval {RECONCILE_INTERVAL_S}s)")

    assert api.post(f"/v1/jobs/{job_id}/retry").json()["attempt"] == 2
    done = _wait(api, job_id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"), timeout=420)

    assert done["status"] == "succeeded", done.get("error")
    assert done["attempt"] == 2
    # Every epoch exactly once, in order: the retry neither repeated the checkpointed ones nor skipped any.
    assert [m["epoch"] for m in done["metrics"]] == list(range(1, FREEZE_EPOCHS + EPOCHS + 1))
    events = api.get(f"/v1/jobs/{job_id}/events").json()["events"]
    (resumed,) = [e for e in events if e["kind"] == "resumed"]
    last_checkpointed = resumed["data"]["epoch"]
    assert last_checkpointed >= max(recorded_before_kill) and resumed["data"]["checkpoint_uri"]
    after = [e["data"]["epoch"] for e in events if e["kind"] == "epoch" and e["id"] > resumed["id"]]
    assert after == list(range(last_checkpointed + 1, FREEZE_EPOCHS + EPOCHS + 1)), "resumed, not restarted"
    assert [e["kind"] for e in events].count("retry") == 1
    # The resumed attempt skipped the feature task: its cost still counts the first attempt's run of it.
    assert "features" in {u["work"] for u in done["cost"]["usage"]}

    succeeded_retry = api.post(f"/v1/jobs/{job_id}/retry")
    assert succeeded_retry.status_code == 409 and succeeded_retry.json()["error"]["code"] == "job_not_retryable"
