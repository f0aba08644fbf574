"""Training jobs: submit, inspect, list, cancel, follow."""

from __future__ import annotations

import asyncio
import logging
from pathlib import PurePosixPath
from typing import Annotated

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from core.settings import Settings
from core.spec import JobParams, JobStatus, S3Location
from core.store import IdempotencyConflict, JobRecord, JobStore
from core.tenancy import Tenancy
from service.auth import Principal, PrincipalDep, TenancyDep
from service.budget import check_budget
from service.dataset_access import check_job_access
from service.deps import DispatcherDep, LauncherDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.dispatch import Dispatcher, limits_for
from service.errors import ApiError, artifact_not_found, error_responses, job_not_found
from service.launcher import Launcher, LauncherUnavailable, RayJobState, ray_submission_id
from service.notify import admit_notify_url
from service.report import render_report
from service.schemas import EventList, JobList, JobPublic
from service.sse import EVENTS_RESPONSES, After, LastEventId, Stream, events_answer

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="repeat a POST safely: the same key and body return the first job instead of a new one",
    ),
]


def _public(job: JobRecord, store: JobStore, settings: Settings) -> JobPublic:
    return JobPublic.build(job, store.epochs(job.id), settings.public_url)


def _get_job(store: JobStore, job_id: str, principal: Principal) -> JobRecord:
    job = store.get_job(job_id)
    # Another tenant's job answers exactly like a missing one: ids cannot be probed across tenants.
    if job is None or not principal.owns(job.tenant):
        raise job_not_found(job_id)
    return job


async def launch(dispatcher: Dispatcher, store: JobStore, job: JobRecord, principal: Principal) -> JobRecord:
    """Hand the queued job to the quota gate; returns it as it stands (waiting for its turn, or launched)."""
    # The job is already safe in the store; whatever happens here, the reconciler launches it later.
    try:
        if not await dispatcher.admit_in_turn(job):
            return await asyncio.to_thread(_get_job, store, job.id, principal)  # it waits for its turn: show why
    except Exception:
        logger.exception("launching job %s failed; it stays queued and will be retried", job.id)
    return job


def store_new_job(
    params: JobParams,
    idempotency_key: str | None,
    store: JobStore,
    settings: Settings,
    tenancy: Tenancy,
    principal: Principal,
) -> tuple[JobRecord, bool]:
    """Check the job against its tenant's access and quota, then store it; (job, False) for a replay."""
    # A tenant's uploads and dataset revisions are its own data; see service.dataset_access.
    check_job_access(params, principal, settings, tenancy)
    check_budget(store, tenancy.get_tenant(principal.tenant))
    admit_notify_url(params.notify_url, principal.tenant, settings, store)
    gpu_limit = limits_for(settings, tenancy)(principal.tenant).max_gpu_workers
    if params.use_gpu and params.num_workers > gpu_limit:
        raise ApiError(
            400,
            "over_quota",
            f"num_workers: {params.num_workers} GPU workers exceed tenant {principal.tenant!r}'s limit of "
            f"{gpu_limit} (max_gpu_workers), so the job could never start; ask for num_workers <= {gpu_limit}",
            "num_workers",
        )
    try:
        return store.create_job(params, idempotency_key, tenant=principal.tenant)
    except IdempotencyConflict:
        raise ApiError(
            409,
            "idempotency_conflict",
            "this Idempotency-Key was already used with a different request body; "
            "send a new key to submit a different job",
            "Idempotency-Key",
        ) from None


# Sync routes (but POST): FastAPI runs them in its thread pool, where blocking store and launcher calls are fine.


@router.post("", status_code=202, summary="Submit a training job", responses=error_responses(400, 402, 403, 409, 413))
async def create_job(
    params: JobParams,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    principal: PrincipalDep,
    tenancy: TenancyDep,
    dispatcher: DispatcherDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    # Async, unlike the other routes: a POST waits for its turn at the quota gate (one at a time) without
    # holding a thread of the pool that the status reads run in.
    job, created = await asyncio.to_thread(store_new_job, params, idempotency_key, store, settings, tenancy, principal)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if created:
        metrics.jobs_submitted.inc()
        job = await launch(dispatcher, store, job, principal)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return await asyncio.to_thread(_public, job, store, settings)


@router.get("", summary="List jobs, newest first", responses=error_responses())
def list_jobs(
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    status: Annotated[JobStatus | None, Query(description="only jobs with this status")] = None,
    name: Annotated[
        str | None, Query(min_length=1, max_length=128, description="only jobs whose name contains this (any case)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor from the previous page")] = None,
) -> JobList:
    cursor_job = store.get_job(cursor) if cursor is not None else None
    if cursor is not None and (cursor_job is None or not principal.owns(cursor_job.tenant)):
        raise ApiError(
            422,
            "validation_error",
            f"cursor: unknown cursor {cursor!r}; pass the next_cursor of the previous page, or omit it for the first",
            "cursor",
        )
    jobs = store.list_jobs(status, limit, before=cursor, tenant=principal.scope, name=name)
    # A full page may be followed by more; an empty next page is the price of not counting.
    next_cursor = jobs[-1].id if len(jobs) == limit else None
    # One query for the whole page's epochs, not one per job: it made a page of 20 five times a status read.
    epochs = store.epochs_of([job.id for job in jobs])
    public = [JobPublic.build(job, epochs[job.id], settings.public_url) for job in jobs]
    return JobList(jobs=public, next_cursor=next_cursor)


@router.get("/{job_id}", summary="One job, with its progress and results", responses=error_responses(404))
def get_job(job_id: str, store: StoreDep, settings: SettingsDep, principal: PrincipalDep) -> JobPublic:
    return _public(_get_job(store, job_id, principal), store, settings)


@router.post("/{job_id}/cancel", summary="Cancel a job (idempotent)", responses=error_responses(404))
def cancel_job(
    job_id: str, store: StoreDep, launcher: LauncherDep, settings: SettingsDep, principal: PrincipalDep
) -> JobPublic:
    job = _get_job(store, job_id, principal)
    # Only the request that actually cancels stops the driver; a repeat or a finished job changes nothing.
    if not job.status.terminal and store.cancel(job_id):
        try:
            launcher.stop(ray_submission_id(job_id, job.attempt))
        except LauncherUnavailable as e:
            logger.warning("job %s is cancelled, but its driver could not be stopped now: %s", job_id, e)
        except Exception:
            logger.exception("job %s is cancelled, but stopping its driver failed", job_id)
        job = _get_job(store, job_id, principal)
    return _public(job, store, settings)


# The previous attempt's driver has ended (or Ray lost it): a new one cannot collide with it in the store.
_ENDED = {RayJobState.failed, RayJobState.stopped, RayJobState.succeeded, RayJobState.missing}


@router.post(
    "/{job_id}/retry",
    status_code=202,
    summary="Run a failed or cancelled job again from its last checkpoint",
    responses=error_responses(404, 409, 503),
)
async def retry_job(
    job_id: str,
    store: StoreDep,
    launcher: LauncherDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    dispatcher: DispatcherDep,
) -> JobPublic:
    # Async like create_job: it too waits for its turn at the quota gate.
    retried = await asyncio.to_thread(_requeue, job_id, store, launcher, principal)
    job = await launch(dispatcher, store, retried, principal)
    return await asyncio.to_thread(_public, job, store, settings)


def _requeue(job_id: str, store: JobStore, launcher: Launcher, principal: Principal) -> JobRecord:
    """Queue a failed or cancelled job for its next attempt, once its previous driver is confirmed gone."""
    job = _get_job(store, job_id, principal)
    if job.status not in (JobStatus.failed, JobStatus.cancelled):
        raise ApiError(
            409,
            "job_not_retryable",
            f"job {job_id!r} is {job.status.value}; only a failed or cancelled job can be retried "
            "(cancel it first to restart a queued or running one)",
            "job_id",
        )
    previous = launcher.state(ray_submission_id(job_id, job.attempt))
    if previous is RayJobState.unreachable:
        raise ApiError(
            503,
            "ray_unavailable",
            "the Ray cluster is not answering, so the job's previous driver cannot be confirmed stopped; retry shortly",
            headers={"Retry-After": "10"},
        )
    if previous not in _ENDED:
        raise ApiError(
            409,
            "previous_attempt_running",
            f"attempt {job.attempt} of job {job_id!r} is still stopping on the Ray cluster; retry in a few seconds",
            "job_id",
        )
    retried = store.retry(job_id)
    if retried is None:  # another request retried (or changed) it first
        raise ApiError(409, "job_not_retryable", f"job {job_id!r} was retried by another request", "job_id")
    return retried


@router.get(
    "/{job_id}/events",
    summary="The job's event log; with ?stream=true a Server-Sent-Events stream until the job ends",
    response_model=EventList,
    responses={**EVENTS_RESPONSES, **error_responses(404)},
)
def job_events(
    job_id: str,
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    after: After = 0,
    stream: Stream = False,
    last_event_id: LastEventId = None,
) -> EventList | StreamingResponse:
    _get_job(store, job_id, principal)

    def status() -> JobStatus | None:
        job = store.get_job(job_id)
        return job.status if job else None

    return events_answer(status, lambda last: store.events(job_id, last), request, after, stream, last_event_id)


_CONTENT_TYPES = {
    ".png": "image/png",
    ".json": "application/json",
    ".csv": "text/csv",
    ".html": "text/html",
    ".pt": "application/octet-stream",
}


@router.get(
    "/{job_id}/artifacts/{name}",
    summary="One of the job's files: lr_sweep.png, training_curves.png, …",
    responses={
        200: {"content": {media_type: {} for media_type in sorted(set(_CONTENT_TYPES.values()))}},
        **error_responses(404, 503),
    },
)
def job_artifact(job_id: str, name: str, store: StoreDep, s3: S3Dep, principal: PrincipalDep) -> Response:
    job = _get_job(store, job_id, principal)
    artifacts = job.artifacts or {}
    if name not in artifacts:
        raise artifact_not_found(job_id, name, list(artifacts))
    location = S3Location.parse(artifacts[name])
    try:
        body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ApiError(
                404,
                "artifact_missing",
                f"job {job_id!r}'s artifact {name!r} is recorded, but its object {artifacts[name]} is missing from "
                "the artifact store (deleted, or the store was wiped); retrain to recreate it",
                "name",
            ) from None
        logger.exception("reading artifact %s of job %s failed", name, job_id)
        raise ApiError(503, "storage_unavailable", "the artifact store did not answer; retry shortly") from None
    except BotoCoreError:
        logger.exception("reading artifact %s of job %s failed", name, job_id)
        raise ApiError(503, "storage_unavailable", "the artifact store did not answer; retry shortly") from None
    media_type = _CONTENT_TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
    return Response(body, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/{job_id}/report",
    summary="A self-contained HTML report: dataset, LR sweep, training curves, confusion matrix, hardest images",
    # Declared by content, not `response_class=HTMLResponse`, which would document the JSON 404 as HTML too.
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **error_responses(404)},
)
def job_report(job_id: str, store: StoreDep, settings: SettingsDep, s3: S3Dep, principal: PrincipalDep) -> HTMLResponse:
    job = _get_job(store, job_id, principal)
    html = render_report(job, store.epochs(job.id), settings.public_url, s3)
    # A running job's report changes with every epoch: never serve a stale copy.
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
