"""The job metrics on /metrics, computed from the store's event log at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from core.spec import JobParams, JobStatus
from core.store import JobStore, events_table, jobs_table
from tests.utils.api_server import Api

T0 = datetime.now(UTC) - timedelta(minutes=30)


def seconds(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def new_job(store: JobStore, accepted: datetime) -> str:
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/pets"))
    with store.engine.begin() as conn:  # the "queued" event at a time the test chooses
        conn.execute(events_table.update().where(events_table.c.job_id == job.id).values(at=accepted))
    return job.id


def log(store: JobStore, job_id: str, kind: str, at: datetime, **data: Any) -> None:
    """An event as the driver writes it, at a time the test chooses."""
    with store.engine.begin() as conn:
        conn.execute(events_table.insert().values(job_id=job_id, at=at, kind=kind, message=kind, data=data))


def samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.http.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@pytest.fixture
def history(api: Api) -> dict[str, str]:
    """A finished job, a running one and a queued one, with known times."""
    store = api.store
    done = new_job(store, seconds(0))
    log(store, done, "phase", seconds(5), phase="fetching")
    log(store, done, "fetched", seconds(12), objects=3, downloaded=3, bytes_downloaded=1000)
    log(store, done, "phase", seconds(15), phase="training")
    log(store, done, "epoch", seconds(30), epoch=1, seconds=10.0, images_per_second=8.0)
    log(store, done, "succeeded", seconds(45))
    running = new_job(store, seconds(100))
    log(store, running, "phase", seconds(102), phase="training")
    log(store, running, "epoch", seconds(110), epoch=1, seconds=4.0, images_per_second=5.0)
    with store.engine.begin() as conn:
        conn.execute(
            jobs_table.update().where(jobs_table.c.id == running).values(status=JobStatus.running, phase="training")
        )
    queued = new_job(store, datetime.now(UTC))
    return {"done": done, "running": running, "queued": queued}


def test_job_metrics_fold_the_event_log(api: Api, history: dict[str, str]) -> None:
    got = samples(api)
    assert got[("trainyard_jobs_running_by_phase", (("phase", "training"),))] == 1
    assert got[("trainyard_job_oldest_queued_seconds", ())] >= 0
    # Queue wait: 5 s for the finished job, 2 s for the running one.
    assert got[("trainyard_job_queue_wait_seconds_count", ())] == 2
    assert got[("trainyard_job_queue_wait_seconds_sum", ())] == pytest.approx(7)
    assert got[("trainyard_job_queue_wait_seconds_bucket", (("le", "5.0"),))] == 2
    # Phases that ended: fetching 5→15 s, training 15→45 s; the running job's training has not ended.
    assert got[("trainyard_job_phase_duration_seconds_sum", (("phase", "fetching"),))] == pytest.approx(10)
    assert got[("trainyard_job_phase_duration_seconds_count", (("phase", "training"),))] == 1
    assert got[("trainyard_job_phase_duration_seconds_sum", (("phase", "training"),))] == pytest.approx(30)
    assert got[("trainyard_job_duration_seconds_sum", (("status", "succeeded"),))] == pytest.approx(45)
    assert got[("trainyard_s3_fetched_bytes_total", ())] == 1000
    assert got[("trainyard_s3_fetched_objects_total", ())] == 3
    # 10 s at 8 img/s plus 4 s at 5 img/s.
    assert got[("trainyard_training_images_total", ())] == pytest.approx(100)
    assert got[("trainyard_training_seconds_total", ())] == pytest.approx(14)
    throughput = {k[1]: v for k, v in got.items() if k[0] == "trainyard_training_images_per_second"}
    assert throughput == {(("job_id", history["running"]),): 5.0}


def test_each_event_counts_once_across_scrapes_and_new_events_are_added(api: Api, history: dict[str, str]) -> None:
    first = samples(api)
    assert samples(api)[("trainyard_s3_fetched_bytes_total", ())] == first[("trainyard_s3_fetched_bytes_total", ())]
    log(api.store, history["running"], "fetched", datetime.now(UTC), downloaded=1, bytes_downloaded=500)
    log(api.store, history["running"], "succeeded", datetime.now(UTC))
    later = samples(api)
    assert later[("trainyard_s3_fetched_bytes_total", ())] == 1500
    assert later[("trainyard_job_phase_duration_seconds_count", (("phase", "training"),))] == 2
    assert not any(k[0] == "trainyard_training_images_per_second" for k in later)


def test_a_new_replica_exports_the_same_totals(api: Api, history: dict[str, str], make_api: Any) -> None:
    """Another API process over the same store starts from the whole log, so replicas agree."""
    other = make_api(database_url=api.settings.database_url)
    assert samples(other)[("trainyard_training_images_total", ())] == pytest.approx(100)
    with api.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs_table)).scalar() == 3
