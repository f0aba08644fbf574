"""Batch predictions: score a whole S3 prefix with one model version, as a Ray job on Ray Data.

A run is a resource of its own, scoped to its tenant like jobs (another tenant's id answers 404): submit it
against a model, follow its progress and events, cancel or retry it. Its Ray submission id is the run id
(plus `-attemptN` for retries), so the reconciler checks it as it checks jobs.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from core.batch_output import holds_objects, write_ending
from core.batch_spec import BatchParams
from core.s3 import S3_UNREACHABLE
from core.settings import Settings
from core.spec import JobStatus, S3Location
from core.store import JobStore
from core.store.batch import BatchRecord, BatchStore
from core.tenancy import Tenancy
from service.auth import Principal, PrincipalDep, TenancyDep
from service.batch_schemas import BatchPredictionRun, BatchPredictionRunList
from service.dataset_access import check_uri_access
from service.deps import BatchStoreDep, LauncherDep, S3Dep, SettingsDep, StoreDep
from service.errors import ApiError, error_responses
from service.launcher import Launcher, LauncherUnavailable, RayJobState, ray_submission_id
from service.model_refs import resolve_model
from service.notify import admit_notify_url
from service.schemas import EventList
from service.sse import EVENTS_RESPONSES, After, LastEventId, Stream, events_answer
from service.submission import submit_if_claimed

logger = logging.getLogger(__name__)

router = APIRouter(tags=["batch predictions"])
# The previous attempt's driver has ended (or Ray lost it): a new one cannot collide with it.
_ENDED = {RayJobState.failed, RayJobState.stopped, RayJobState.succeeded, RayJobState.missing}


def _not_found(run_id: str) -> ApiError:
    return ApiError(
        404,
        "batch_prediction_not_found",
        f"no batch prediction with id {run_id!r}; list them with GET /v1/batch-predictions",
        "batch_id",
    )


def _get_run(batches: BatchStore, run_id: str, principal: Principal) -> BatchRecord:
    run = batches.get(run_id)
    # Another tenant's run answers exactly like a missing one: ids cannot be probed across tenants.
    if run is None or not principal.owns(run.tenant):
        raise _not_found(run_id)
    return run


def _public(run: BatchRecord, store: JobStore, settings: Settings) -> BatchPredictionRun:
    return BatchPredictionRun.build(run, store.get_model(run.model_id), settings.public_url)


def default_output(settings: Settings, tenant: str, run_id: str) -> str:
    """Under the artifact store, in the tenant's own folder."""
    return S3Location.parse(settings.artifact_uri).child("tenants", tenant, "batch-predictions", run_id).uri


def _check_output_empty(s3: Any, uri: str) -> None:
    location = S3Location.parse(uri)
    try:
        taken = holds_objects(s3, location)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise ApiError(
                400,
                "output_bucket_not_found",
                f"output_uri: the bucket {location.bucket!r} does not exist; create it, or leave output_uri out to "
                "write under the service's artifact store",
                "output_uri",
            ) from None
        raise
    except (*S3_UNREACHABLE, BotoCoreError):
        raise ApiError(
            503, "storage_unavailable", "the object store did not answer; retry shortly", headers={"Retry-After": "5"}
        ) from None
    if taken:
        raise ApiError(
            409,
            "output_not_empty",
            f"output_uri: {uri} already holds objects; a run writes its shards and manifest into an empty prefix, so "
            "choose a new one (or leave output_uri out for a fresh one under the artifact store)",
            "output_uri",
        )


def _store_new_run(
    ref: str,
    params: BatchParams,
    store: JobStore,
    batches: BatchStore,
    settings: Settings,
    tenancy: Tenancy,
    principal: Principal,
    s3: Any,
) -> BatchRecord:
    model = resolve_model(store, ref, principal)
    check_uri_access(params.input_uri, "input_uri", principal, settings, tenancy)
    admit_notify_url(str(params.notify_url) if params.notify_url else None, principal.tenant, settings, store)
    run_id = BatchStore.new_id()
    if params.output_uri is not None:
        check_uri_access(params.output_uri, "output_uri", principal, settings, tenancy)
        _check_output_empty(s3, params.output_uri)
    else:
        params = params.model_copy(update={"output_uri": default_output(settings, principal.tenant, run_id)})
    return batches.create(run_id, params, model.id, ref, principal.tenant)


def _submit(batches: BatchStore, launcher: Launcher, run: BatchRecord) -> None:
    """Hand the run to Ray now; while Ray does not answer it stays queued and the reconciler submits it later."""
    try:
        submit_if_claimed(batches, launcher, run.id, run.attempt)
    except LauncherUnavailable as e:
        logger.warning("batch run %s stays queued until Ray answers: %s", run.id, e)
    except Exception:
        logger.exception("submitting batch run %s failed; it stays queued and will be retried", run.id)


@router.post(
    "/v1/models/{ref}/batch-predictions",
    status_code=202,
    summary="Score every image under an S3 prefix (or in a CSV manifest) with this model, as a Ray job",
    responses=error_responses(400, 403, 404, 409, 503),
)
def create_batch_prediction(
    ref: str,
    params: BatchParams,
    response: Response,
    store: StoreDep,
    batches: BatchStoreDep,
    settings: SettingsDep,
    tenancy: TenancyDep,
    principal: PrincipalDep,
    launcher: LauncherDep,
    s3: S3Dep,
) -> BatchPredictionRun:
    run = _store_new_run(ref, params, store, batches, settings, tenancy, principal, s3)
    response.headers["Location"] = f"/v1/batch-predictions/{run.id}"
    _submit(batches, launcher, run)
    return _public(batches.get(run.id) or run, store, settings)


@router.get("/v1/batch-predictions", summary="List batch prediction runs, newest first", responses=error_responses())
def list_batch_predictions(
    store: StoreDep,
    batches: BatchStoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    status: Annotated[JobStatus | None, Query(description="only runs with this status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor from the previous page")] = None,
) -> BatchPredictionRunList:
    before = batches.get(cursor) if cursor is not None else None
    if cursor is not None and (before is None or not principal.owns(before.tenant)):
        raise ApiError(
            422,
            "validation_error",
            f"cursor: unknown cursor {cursor!r}; pass the next_cursor of the previous page, or omit it for the first",
            "cursor",
        )
    runs = batches.list_runs(principal.scope, status, limit, before)
    next_cursor = runs[-1].id if len(runs) == limit else None
    return BatchPredictionRunList(
        batch_predictions=[_public(r, store, settings) for r in runs], next_cursor=next_cursor
    )


@router.get(
    "/v1/batch-predictions/{batch_id}",
    summary="One batch prediction run: status, progress, scores, cost",
    responses=error_responses(404),
)
def get_batch_prediction(
    batch_id: str, store: StoreDep, batches: BatchStoreDep, settings: SettingsDep, principal: PrincipalDep
) -> BatchPredictionRun:
    return _public(_get_run(batches, batch_id, principal), store, settings)


@router.post(
    "/v1/batch-predictions/{batch_id}/cancel",
    summary="Cancel a batch run (idempotent): its actors are freed and its manifest says cancelled",
    responses=error_responses(404),
)
def cancel_batch_prediction(
    batch_id: str,
    store: StoreDep,
    batches: BatchStoreDep,
    launcher: LauncherDep,
    settings: SettingsDep,
    s3: S3Dep,
    principal: PrincipalDep,
) -> BatchPredictionRun:
    run = _get_run(batches, batch_id, principal)
    # Only the request that actually cancels stops the driver and writes the manifest.
    if not run.status.terminal and batches.cancel(batch_id):
        try:
            launcher.stop(ray_submission_id(batch_id, run.attempt))
        except LauncherUnavailable as e:
            logger.warning("batch run %s is cancelled, but its driver could not be stopped now: %s", batch_id, e)
        run = _get_run(batches, batch_id, principal)
        try:
            write_ending(s3, run, "cancelled", "cancelled through the API")
        except (ClientError, BotoCoreError):
            logger.warning("batch run %s is cancelled, but its manifest could not be written", batch_id, exc_info=True)
    return _public(run, store, settings)


@router.post(
    "/v1/batch-predictions/{batch_id}/retry",
    status_code=202,
    summary="Run a failed or cancelled batch run again; shards already written are skipped",
    responses=error_responses(404, 409, 503),
)
def retry_batch_prediction(
    batch_id: str,
    store: StoreDep,
    batches: BatchStoreDep,
    launcher: LauncherDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> BatchPredictionRun:
    run = _get_run(batches, batch_id, principal)
    if run.status not in (JobStatus.failed, JobStatus.cancelled):
        raise ApiError(
            409,
            "batch_prediction_not_retryable",
            f"batch run {batch_id!r} is {run.status.value}; only a failed or cancelled run can be retried",
            "batch_id",
        )
    previous = launcher.state(ray_submission_id(batch_id, run.attempt))
    if previous is RayJobState.unreachable:
        raise ApiError(
            503,
            "ray_unavailable",
            "the Ray cluster is not answering, so the run's previous driver cannot be confirmed stopped; retry shortly",
            headers={"Retry-After": "10"},
        )
    if previous not in _ENDED:
        raise ApiError(
            409,
            "previous_attempt_running",
            f"attempt {run.attempt} of batch run {batch_id!r} is still stopping on the Ray cluster; retry shortly",
            "batch_id",
        )
    retried = batches.retry(batch_id)
    if retried is None:
        raise ApiError(409, "batch_prediction_not_retryable", f"batch run {batch_id!r} was retried by another request")
    _submit(batches, launcher, retried)
    return _public(batches.get(batch_id) or retried, store, settings)


@router.get(
    "/v1/batch-predictions/{batch_id}/events",
    summary="The run's event log; with ?stream=true a Server-Sent-Events stream until the run ends",
    response_model=EventList,
    responses={**EVENTS_RESPONSES, **error_responses(404)},
)
def batch_prediction_events(
    batch_id: str,
    request: Request,
    batches: BatchStoreDep,
    principal: PrincipalDep,
    after: After = 0,
    stream: Stream = False,
    last_event_id: LastEventId = None,
) -> EventList | StreamingResponse:
    _get_run(batches, batch_id, principal)

    def status() -> JobStatus | None:
        run = batches.get(batch_id)
        return run.status if run else None

    return events_answer(status, lambda last: batches.events(batch_id, last), request, after, stream, last_event_id)
