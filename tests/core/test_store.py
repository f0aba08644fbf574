"""The job store against both backends it ships with: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.spec import JobParams, JobStatus, Phase
from core.store import IdempotencyConflict, JobStore, ModelRecord
from tests.utils.postgres import postgres_bin, temporary_postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if postgres_bin("initdb") is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed here (CI installs it)")
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "sqlite":
        return JobStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    url = request.getfixturevalue("postgres_url")
    store = JobStore.from_url(url)
    from core.store import metadata

    metadata.drop_all(store.engine)  # each test starts from empty tables
    store.create_schema()
    return store


def params(**overrides: object) -> JobParams:
    return JobParams.model_validate({"dataset_uri": "s3://bucket/data", **overrides})


def test_idempotency_key_returns_the_first_job_or_conflicts(store: JobStore) -> None:
    first, created = store.create_job(params(), "key-1")
    again, created_again = store.create_job(params(), "key-1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.create_job(params(epochs=9), "key-1")
    other, _ = store.create_job(params(), None)
    assert other.id != first.id


def test_terminal_jobs_cannot_be_resurrected(store: JobStore) -> None:
    job, _ = store.create_job(params())
    assert store.set_phase(job.id, Phase.training, 0.5)
    running = store.get_job(job.id)
    assert running is not None and running.status == JobStatus.running and running.started_at is not None
    assert store.cancel(job.id)
    # A driver that has not noticed the cancellation yet must not overwrite it.
    assert not store.set_phase(job.id, Phase.evaluating, 0.8)
    assert not store.succeed(job.id, "mdl-x")
    assert not store.fail(job.id, "late", "too late")
    final = store.get_job(job.id)
    assert final is not None and final.status == JobStatus.cancelled and final.model_id is None
    assert [e.kind for e in store.events(job.id)] == ["queued", "phase", "cancelled"]


def test_failure_keeps_the_phase_it_happened_in(store: JobStore) -> None:
    job, _ = store.create_job(params())
    store.set_phase(job.id, Phase.validating, 0.07)
    assert store.fail(job.id, "invalid_layout", "s3://bucket/data/ must contain train/")
    failed = store.get_job(job.id)
    assert failed is not None and failed.error is not None
    assert failed.status == JobStatus.failed
    assert (failed.error.phase, failed.error.code) == (Phase.validating, "invalid_layout")
    assert failed.finished_at is not None and failed.finished_at.tzinfo is not None


def test_listing_is_newest_first_with_cursor_and_filter(store: JobStore) -> None:
    ids = [store.create_job(params(name=f"j{i}"))[0].id for i in range(5)]
    store.cancel(ids[1])
    page1 = store.list_jobs(limit=2)
    page2 = store.list_jobs(limit=2, before=page1[-1].id)
    page3 = store.list_jobs(limit=2, before=page2[-1].id)
    assert [j.id for j in page1 + page2 + page3] == ids[::-1]
    assert [j.id for j in store.list_jobs(status=JobStatus.cancelled)] == [ids[1]]
    assert {j.id for j in store.active_jobs()} == set(ids) - {ids[1]}


def test_results_epochs_and_models_round_trip(store: JobStore) -> None:
    job, _ = store.create_job(params())
    store.set_result(job.id, "lr_sweep", {"suggested_lr": 0.003, "lrs": [1e-7, 1e-6], "losses": [1.1, 1.0]})
    store.add_epoch(job.id, {"epoch": 1, "accuracy": 0.5})
    store.add_epoch(job.id, {"epoch": 2, "accuracy": 0.75})
    store.add_model(
        ModelRecord(
            id="mdl-1",
            job_id=job.id,
            artifact_uri="s3://a/m.pt",
            arch="efficientnet_lite0",
            classes=["a", "b"],
            metrics={"accuracy": 0.75},
            created_at=datetime.now(UTC),
        )
    )
    loaded = store.get_job(job.id)
    assert loaded is not None and loaded.lr_sweep is not None and loaded.lr_sweep["suggested_lr"] == 0.003
    assert [e["epoch"] for e in store.epochs(job.id)] == [1, 2]
    model = store.get_model("mdl-1")
    assert model is not None and model.classes == ["a", "b"] and store.get_model("nope") is None
    assert [m.id for m in store.list_models()] == ["mdl-1"]


def test_a_store_from_an_older_release_gains_new_columns(store: JobStore) -> None:
    job, _ = store.create_job(params())
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN artifacts")  # as the first release made it
    upgraded = JobStore(store.engine)
    upgraded.create_schema()
    upgraded.set_result(job.id, "artifacts", {"lr_sweep.png": "s3://b/k"})
    loaded = upgraded.get_job(job.id)
    assert loaded is not None and loaded.artifacts == {"lr_sweep.png": "s3://b/k"}


def _named_model(store: JobStore, name: str | None) -> ModelRecord:
    job, _ = store.create_job(params(name=name))
    return ModelRecord(
        id=job.id.replace("job-", "mdl-", 1),
        job_id=job.id,
        artifact_uri=f"s3://a/{job.id}.pt",
        arch="efficientnet_lite0",
        classes=["a", "b"],
        created_at=datetime.now(UTC),
        name=name,
    )


def test_versions_racing_for_one_name_get_distinct_numbers_and_latest_is_the_top(store: JobStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    models = [_named_model(store, "pets") for _ in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        versions = sorted(v.version or 0 for v in pool.map(store.add_model_version, models))
    assert versions == list(range(1, 9))
    latest = store.get_model_by_alias("pets", "latest")
    assert latest is not None and latest.version == 8
    unnamed = store.add_model_version(_named_model(store, None))
    assert unnamed.version is None and store.model_aliases().get(unnamed.id) is None


def test_deleting_the_latest_version_moves_latest_back_and_keeps_its_number(store: JobStore) -> None:
    first = store.add_model_version(_named_model(store, "pets"))
    second = store.add_model_version(_named_model(store, "pets"))
    assert store.delete_model(second.id) and not store.delete_model(second.id)
    assert store.get_model(second.id) is None and [m.id for m in store.list_models()] == [first.id]
    assert store.model_aliases() == {first.id: ["latest"]}
    assert store.add_model_version(_named_model(store, "pets")).version == 3
