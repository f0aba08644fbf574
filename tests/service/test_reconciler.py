"""The reconciler against a real store, with the Ray side played by `FakeLauncher`."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from core.spec import JobParams, JobStatus, Phase
from core.store import JobStore
from service.launcher import RayJobState
from service.reconciler import Reconciler, reconcile_once
from tests.utils.api_server import ApiFactory, FakeLauncher
from tests.utils.schema import migrated


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrated(url)
    return JobStore.from_url(url)


def new_job(store: JobStore, phase: Phase | None = None) -> str:
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/pets"))
    if phase is not None:
        store.set_phase(job.id, phase, 0.3)
    return job.id


def test_queued_job_unknown_to_ray_is_submitted(store: JobStore) -> None:
    job_id = new_job(store)
    launcher = FakeLauncher()
    reconcile_once(store, launcher)
    assert launcher.submitted == [job_id]
    assert store.get_job(job_id).status is JobStatus.queued  # type: ignore[union-attr]
    reconcile_once(store, launcher)  # Ray knows it now (pending): not submitted twice
    assert launcher.submitted == [job_id]


def test_running_job_unknown_to_ray_fails_as_driver_lost(store: JobStore) -> None:
    job_id = new_job(store, Phase.training)
    reconcile_once(store, FakeLauncher())
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.failed
    assert job.error is not None
    assert (job.error.code, job.error.phase) == ("driver_lost", Phase.training)
    assert "no longer known to the Ray cluster" in job.error.message


@pytest.mark.parametrize(
    ("ray_state", "code", "words"),
    [
        (RayJobState.failed, "driver_died", "driver process died during lr_sweep"),
        (RayJobState.stopped, "driver_stopped", "stopped on the Ray cluster during lr_sweep"),
        (RayJobState.succeeded, "driver_exited", "without reporting a result"),
    ],
)
def test_driver_that_ended_without_a_result(store: JobStore, ray_state: RayJobState, code: str, words: str) -> None:
    job_id = new_job(store, Phase.lr_sweep)
    reconcile_once(store, FakeLauncher(states={job_id: ray_state}))
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.failed and job.error is not None
    assert (job.error.code, job.error.phase) == (code, Phase.lr_sweep)
    assert words in job.error.message


@pytest.mark.parametrize("ray_state", [RayJobState.pending, RayJobState.running])
def test_live_drivers_are_left_alone(store: JobStore, ray_state: RayJobState) -> None:
    queued, running = new_job(store), new_job(store, Phase.training)
    launcher = FakeLauncher(states={queued: ray_state, running: ray_state})
    reconcile_once(store, launcher)
    assert [store.get_job(j).status for j in (queued, running)] == [JobStatus.queued, JobStatus.running]  # type: ignore[union-attr]
    assert launcher.submitted == []


def test_terminal_jobs_are_untouched(store: JobStore) -> None:
    cancelled, succeeded = new_job(store, Phase.training), new_job(store, Phase.deploying)
    store.cancel(cancelled)
    store.succeed(succeeded, "model-1")
    launcher = FakeLauncher(states={cancelled: RayJobState.stopped})  # `succeeded` is missing from Ray
    reconcile_once(store, launcher)
    assert store.get_job(cancelled).status is JobStatus.cancelled  # type: ignore[union-attr]
    assert store.get_job(succeeded).status is JobStatus.succeeded  # type: ignore[union-attr]
    assert launcher.submitted == []


def test_a_driver_that_recorded_its_own_failure_wins(store: JobStore) -> None:
    job_id = new_job(store, Phase.validating)

    class DriverFailsFirst(FakeLauncher):
        def state(self, job_id: str) -> RayJobState:
            # The driver records its error and exits between the reconciler's read and its update.
            store.fail(job_id, "dataset_invalid", "3 of 4 images could not be decoded")
            return RayJobState.failed

    reconcile_once(store, DriverFailsFirst())
    job = store.get_job(job_id)
    assert job is not None and job.error is not None and job.error.code == "dataset_invalid"


def test_ray_unreachable_changes_nothing_and_warns_once(store: JobStore, caplog: pytest.LogCaptureFixture) -> None:
    queued, running = new_job(store), new_job(store, Phase.training)
    launcher = FakeLauncher(reachable=False)
    reconciler = Reconciler(store, launcher)
    with caplog.at_level(logging.INFO, logger="service.reconciler"):
        reconciler.run_once()
        reconciler.run_once()
    assert [store.get_job(j).status for j in (queued, running)] == [JobStatus.queued, JobStatus.running]  # type: ignore[union-attr]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "unreachable" in caplog.records[0].getMessage()

    launcher.reachable = True
    launcher.states[running] = RayJobState.running
    reconciler.run_once()
    assert launcher.submitted == [queued]


def test_one_bad_job_does_not_stop_the_pass(store: JobStore) -> None:
    first, second = new_job(store, Phase.training), new_job(store, Phase.training)

    class Flaky(FakeLauncher):
        def state(self, job_id: str) -> RayJobState:
            if job_id == first:
                raise RuntimeError("unexpected answer")
            return super().state(job_id)

    reconcile_once(store, Flaky())
    assert store.get_job(first).status is JobStatus.running  # type: ignore[union-attr]
    assert store.get_job(second).status is JobStatus.failed  # type: ignore[union-attr]


def test_the_api_submits_jobs_accepted_while_ray_was_down(make_api: ApiFactory) -> None:
    launcher = FakeLauncher(reachable=False)
    api = make_api(launcher=launcher, reconcile_interval_s=0.05)
    job_id = api.create_job()["id"]
    assert launcher.submitted == []
    launcher.reachable = True
    deadline = time.monotonic() + 10
    while launcher.submitted != [job_id]:
        assert time.monotonic() < deadline, "the background reconciler never submitted the job"
        time.sleep(0.02)
