"""Batch prediction runs in the store, on SQLite and PostgreSQL: conditional transitions, retry, claims, events."""

from __future__ import annotations

from datetime import UTC, datetime

from core.batch_spec import BatchParams, BatchPhase, BatchPlan, BatchScores
from core.spec import JobParams, JobStatus
from core.store import JobStore, ModelRecord, new_id
from core.store.batch import BatchStore


def new_run(store: JobStore, tenant: str = "team-a") -> str:
    """A queued run against a model row (the foreign key wants one); the model's artifact is never read here."""
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/data"), tenant=tenant)
    model = ModelRecord(
        id=new_id("mdl"), job_id=job.id, artifact_uri="s3://a/m.pt", arch="resnet18", classes=["a", "b"],
        created_at=datetime.now(UTC),
    )  # fmt: skip
    assert store.succeed_with_model(job.id, model)
    params = BatchParams(input_uri="s3://inputs/images", output_uri="s3://outputs/run/")
    return BatchStore(store).create(BatchStore.new_id(), params, model.id, "pets@production", tenant).id


PLAN = BatchPlan(images=600, shard_size=256, shards=3, listing_sha256="0" * 64, labelled=True)


def test_a_run_moves_through_its_phases_and_succeeds_once(store: JobStore) -> None:
    batches = BatchStore(store)
    run_id = new_run(store)
    run = batches.get(run_id)
    assert run is not None and run.status is JobStatus.queued and run.id.startswith("bp-")
    assert run.model_ref == "pets@production" and run.output_uri == "s3://outputs/run/"
    assert batches.set_phase(run_id, BatchPhase.listing)
    assert batches.set_plan(run_id, PLAN, images_done=256)
    assert batches.set_phase(run_id, BatchPhase.predicting)
    assert batches.set_progress(run_id, 512)
    scores = BatchScores(accuracy=0.5, correct=1, images=2, classes=["a", "b"], confusion_matrix=[[1, 0], [1, 0]],
                         unknown_labels=0)  # fmt: skip
    assert batches.succeed(run_id, scores, {"rows": 600, "errors": 0})
    done = batches.get(run_id)
    assert done is not None and done.status is JobStatus.succeeded and done.phase is None
    assert (done.images_done, done.images_total, done.plan) == (512, 600, PLAN)
    assert done.scores == scores and done.started_at is not None and done.finished_at is not None
    assert not batches.succeed(run_id, None, {}), "a run succeeds once"
    kinds = [e.kind for e in batches.events(run_id)]
    assert kinds == ["queued", "phase", "phase", "succeeded"]


def test_a_cancel_is_final_and_the_driver_learns_it_from_its_next_write(store: JobStore) -> None:
    batches = BatchStore(store)
    run_id = new_run(store)
    assert batches.set_phase(run_id, BatchPhase.predicting)
    assert batches.cancel(run_id)
    assert not batches.cancel(run_id), "cancel changes a run once"
    assert not batches.set_progress(run_id, 10)
    assert not batches.set_phase(run_id, BatchPhase.finishing)
    assert not batches.add_event(run_id, "late", "after the cancel")
    assert not batches.fail(run_id, "internal_error", "too late")
    run = batches.get(run_id)
    assert run is not None and run.status is JobStatus.cancelled and run.error is None
    assert batches.events(run_id)[-1].kind == "cancelled"


def test_retry_queues_the_next_attempt_of_a_failed_or_cancelled_run_only(store: JobStore) -> None:
    batches = BatchStore(store)
    run_id = new_run(store)
    assert batches.retry(run_id) is None, "a queued run is not retried"
    assert batches.set_phase(run_id, BatchPhase.listing) and batches.set_plan(run_id, PLAN, 0)
    assert batches.fail(run_id, "driver_died", "the driver died")
    failed = batches.get(run_id)
    assert failed is not None and failed.error is not None and failed.error.phase is BatchPhase.listing
    retried = batches.retry(run_id)
    assert retried is not None
    assert (retried.status, retried.attempt, retried.error, retried.plan) == (JobStatus.queued, 2, None, PLAN)
    assert batches.events(run_id)[-1].data == {"attempt": 2}


def test_one_of_two_racing_processes_claims_the_submission(store: JobStore) -> None:
    batches = BatchStore(store)
    run_id = new_run(store)
    assert batches.claim_submission(run_id, "api-1", lease_s=60)
    assert not batches.claim_submission(run_id, "api-2", lease_s=60)
    batches.release_claim(run_id, "api-1")
    assert batches.claim_submission(run_id, "api-2", lease_s=60)


def test_listing_is_per_tenant_newest_first_with_a_cursor(store: JobStore) -> None:
    batches = BatchStore(store)
    mine = [new_run(store, "team-a") for _ in range(3)]
    theirs = new_run(store, "team-b")
    assert [r.id for r in batches.list_runs("team-a")] == mine[::-1]
    assert {r.id for r in batches.list_runs(None)} == {*mine, theirs}
    first = batches.list_runs("team-a", limit=2)
    assert [r.id for r in batches.list_runs("team-a", before=first[-1])] == [mine[0]]
    assert batches.set_phase(mine[0], BatchPhase.listing) and batches.cancel(mine[0])
    assert [r.id for r in batches.list_runs("team-a", JobStatus.cancelled)] == [mine[0]]
    assert {r.id for r in batches.active()} == {*mine[1:], theirs}
