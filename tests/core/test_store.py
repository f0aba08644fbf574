"""The job store against both backends it ships with: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.migrate import migrate
from core.spec import JobParams, JobStatus, Phase
from core.store import IdempotencyConflict, JobStore, ModelRecord, make_engine


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


def test_a_job_cancelled_while_its_model_deploys_lists_no_model(store: JobStore) -> None:
    def model(job_id: str) -> ModelRecord:
        return ModelRecord(
            id=job_id.replace("job-", "mdl-", 1),
            job_id=job_id,
            artifact_uri="s3://a/m.pt",
            arch="efficientnet_lite0",
            classes=["a", "b"],
            metrics={},
            created_at=datetime.now(UTC),
        )

    cancelled, _ = store.create_job(params(name="cancelled"))
    store.set_phase(cancelled.id, Phase.deploying, 0.95)
    assert store.cancel(cancelled.id)
    assert store.succeed_with_model(cancelled.id, model(cancelled.id)) is False
    assert store.list_models() == [] and store.get_job(cancelled.id).status is JobStatus.cancelled  # type: ignore[union-attr]

    deployed, _ = store.create_job(params(name="deployed"))
    store.set_phase(deployed.id, Phase.deploying, 0.95)
    assert store.succeed_with_model(deployed.id, model(deployed.id)) is True
    job = store.get_job(deployed.id)
    assert job is not None and job.status is JobStatus.succeeded and job.model_id == model(deployed.id).id
    assert [m.job_id for m in store.list_models()] == [deployed.id]


def test_one_claim_wins_until_released_or_its_lease_runs_out(store: JobStore) -> None:
    job, _ = store.create_job(params())
    assert store.claim_submission(job.id, "api-a", lease_s=60)
    assert not store.claim_submission(job.id, "api-b", lease_s=60)  # held by api-a
    store.release_claim(job.id, "api-b")  # only the holder can give it back
    assert not store.claim_submission(job.id, "api-b", lease_s=60)
    store.release_claim(job.id, "api-a")
    assert store.claim_submission(job.id, "api-b", lease_s=60)
    assert store.claim_submission(job.id, "api-a", lease_s=0)  # api-b's lease has run out
    assert store.set_phase(job.id, Phase.fetching, 0.1)
    assert not store.claim_submission(job.id, "api-b", lease_s=0)  # no longer queued: nothing to submit


def test_retry_queues_a_failed_job_as_its_next_attempt_keeping_its_history(store: JobStore) -> None:
    job, _ = store.create_job(params())
    assert store.retry(job.id) is None  # queued: not retryable
    store.set_phase(job.id, Phase.training, 0.5)
    store.add_epoch(job.id, {"epoch": 1})
    store.fail(job.id, "driver_died", "the driver died")
    retried = store.retry(job.id)
    assert retried is not None and retried.status is JobStatus.queued and retried.attempt == 2
    assert retried.error is None and retried.finished_at is None and retried.phase is None
    assert store.epochs(job.id) == [{"epoch": 1}]
    assert [e.kind for e in store.events(job.id)][-2:] == ["failed", "retry"]
    assert store.claim_submission(job.id, "api-a", lease_s=60)  # the new attempt can be submitted


def test_tenants_scope_listings_and_a_model_inherits_its_jobs_tenant(store: JobStore) -> None:
    a, _ = store.create_job(JobParams(dataset_uri="s3://bucket/a"), tenant="team-a")
    b, _ = store.create_job(JobParams(dataset_uri="s3://bucket/b"), tenant="team-b")
    assert [j.id for j in store.list_jobs(tenant="team-a")] == [a.id]
    assert {j.id for j in store.list_jobs()} == {a.id, b.id}  # no tenant: an admin's view
    store.add_model(
        ModelRecord(
            id="m-a",
            job_id=a.id,
            artifact_uri="s3://x/m.pt",
            arch="resnet18",
            classes=["x"],
            created_at=datetime.now(UTC),
        )
    )
    assert [m.tenant for m in store.list_models()] == ["team-a"]
    assert store.list_models(tenant="team-b") == []


def test_a_launch_is_claimed_once(store: JobStore) -> None:
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/a"), tenant="team-a")
    assert [j.id for j in store.unlaunched_jobs()] == [job.id]
    assert store.claim_launch(job.id) and not store.claim_launch(job.id)
    assert store.unlaunched_jobs() == [] and [j.id for j in store.launched_jobs()] == [job.id]
    store.release_launch(job.id)
    assert store.claim_launch(job.id)
    store.cancel(job.id)
    assert store.launched_jobs() == []


def test_epochs_of_a_page_of_jobs_in_one_query(store: JobStore) -> None:
    first, _ = store.create_job(JobParams(dataset_uri="s3://bucket/one"))
    second, _ = store.create_job(JobParams(dataset_uri="s3://bucket/two"))
    idle, _ = store.create_job(JobParams(dataset_uri="s3://bucket/three"))
    for epoch in range(3):
        store.add_epoch(first.id, {"epoch": epoch})
        store.add_epoch(second.id, {"epoch": 10 + epoch})
    found = store.epochs_of([first.id, second.id, idle.id])
    assert found == {first.id: store.epochs(first.id), second.id: store.epochs(second.id), idle.id: []}
    assert [e["epoch"] for e in found[second.id]] == [10, 11, 12]
    assert store.epochs_of([]) == {}


def _named_model(store: JobStore, name: str | None, tenant: str = "team-a") -> ModelRecord:
    job, _ = store.create_job(params(name=name), tenant=tenant)
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
        versions = sorted(v.version or 0 for v in pool.map(store.add_model, models))
    assert versions == list(range(1, 9))
    latest = store.get_model_by_alias("pets", "latest", "team-a")
    assert latest is not None and latest.version == 8
    unnamed = store.add_model(_named_model(store, None))
    assert unnamed.version is None and store.model_aliases().get(unnamed.id) is None


def test_deleting_the_latest_version_moves_latest_back_and_keeps_its_number(store: JobStore) -> None:
    first = store.add_model(_named_model(store, "pets"))
    second = store.add_model(_named_model(store, "pets"))
    assert store.delete_model(second.id) and not store.delete_model(second.id)
    assert store.get_model(second.id) is None and [m.id for m in store.list_models()] == [first.id]
    assert store.model_aliases() == {first.id: ["latest"]}
    assert store.add_model(_named_model(store, "pets")).version == 3


def test_each_tenant_numbers_and_aliases_its_own_names(store: JobStore) -> None:
    ours = store.add_model(_named_model(store, "pets", tenant="team-a"))
    theirs = store.add_model(_named_model(store, "pets", tenant="team-b"))
    assert ours.version == theirs.version == 1  # one name, two tenants: two version 1s
    store.set_alias("pets", "production", theirs.id, "team-b")
    assert store.get_model_by_alias("pets", "production", "team-a") is None  # team-b's alias is not team-a's
    latest_a = store.get_model_by_alias("pets", "latest", "team-a")
    assert latest_a is not None and latest_a.id == ours.id
    assert store.get_model_version("pets", 1, "team-b").id == theirs.id  # type: ignore[union-attr]
    assert not store.model_name_exists("pets", "team-c")


def test_a_succeeding_job_lists_its_model_in_its_tenant_as_the_next_version(store: JobStore) -> None:
    # What the driver does at the end of a job: the model must land in the job's tenant, numbered, as `latest`.
    first = store.add_model(_named_model(store, "pets"))
    model = _named_model(store, "pets")
    store.set_phase(model.job_id, Phase.deploying, 0.95)
    assert store.succeed_with_model(model.job_id, model)
    stored = store.get_model(model.id)
    assert stored is not None and stored.tenant == "team-a" and stored.version == (first.version or 0) + 1
    latest = store.get_model_by_alias("pets", "latest", "team-a")
    assert latest is not None and latest.id == model.id


def test_sqlite_commits_in_wal_mode_without_an_fsync_each(tmp_path: Path) -> None:
    # synchronous=FULL spent 22 of a POST's 26 ms in fsyncs; NORMAL keeps every commit across process crashes.
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    engine.dispose()


def test_a_cancel_is_a_jobs_last_event(store: JobStore) -> None:
    # The driver of a cancelled job may finish a stage before Ray stops it; what it logs then must not land.
    job, _ = store.create_job(params(name="raced"))
    store.set_phase(job.id, Phase.evaluating, 0.9)
    assert store.add_event(job.id, "note", "while running")
    assert store.cancel(job.id)
    assert store.add_event(job.id, "evaluated", "after the cancel") is False
    assert [e.kind for e in store.events(job.id)][-1] == "cancelled"


def test_replicas_starting_together_register_the_same_bootstrap_key_without_failing(store: JobStore) -> None:
    # Each API process registers the stack's key at start-up; a check-then-insert let the loser of the race die
    # with a duplicate-key error (two uvicorn APIs on one PostgreSQL, tests/service/test_two_apis_one_store.py).
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from core.tenancy import Tenancy, new_key

    key, starting = new_key(), Barrier(8)

    def start_up(_: int) -> str:
        tenancy = Tenancy(store.engine)
        starting.wait()
        return tenancy.register_key(key, "ops", admin=True).id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(start_up, range(8)))
    assert len(ids) == 1
    assert [k.id for k in Tenancy(store.engine).list_keys("ops")] == list(ids)


def test_sqlite_writers_of_one_process_take_turns_instead_of_meeting_the_lock(tmp_path: Path) -> None:
    # SQLite's busy handler makes a writer that meets the lock sleep 1, 2, 5 ... 100 ms before it retries: under
    # the load benchmark an INSERT slept up to 430 ms for a lock freed after 1 ms. With the busy timeout at 0, a
    # writer that met the lock would fail at once ("database is locked"): one process's writers must never meet.
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    store = JobStore.from_url(url)
    sa.event.listen(store.engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=0"))

    def write(n: int) -> None:
        for i in range(15):
            job, _ = store.create_job(params(name=f"w{n}-{i}"))
            assert store.add_event(job.id, "note", "written")
            store.set_phase(job.id, Phase.fetching, 0.1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert len(store.list_jobs(limit=200)) == 120


def test_jobs_created_at_once_are_stamped_in_the_order_they_were_written(tmp_path: Path) -> None:
    # The queue launches the oldest first by `created_at`. A timestamp read before the writer's turn lets a job
    # stamped earlier be written after one stamped later; the gate, which reads what is written, then launches
    # the later one first (the burst of tests/service/test_quotas.py).
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    store = JobStore.from_url(url)
    with ThreadPoolExecutor(12) as pool:
        jobs = list(pool.map(lambda n: store.create_job(params(name=f"burst{n}"))[0], range(48)))
    with store.engine.connect() as conn:  # a job's first event is written in its creating transaction
        written = [row.job_id for row in conn.execute(sa.text("SELECT job_id FROM job_events ORDER BY id"))]
    assert [job.id for job in sorted(jobs, key=lambda job: (job.created_at, job.id))] == written
