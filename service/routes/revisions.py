"""Dataset revisions of a job (see service.revisions): mark its images, get a new dataset, retrain on it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from core.revisions import RevisionStore
from core.store import JobRecord, JobStore
from service.auth import Principal, PrincipalDep, TenancyDep
from service.deps import DispatcherDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import error_responses, job_not_found
from service.revisions import apply_marks, read_listing, write_revision
from service.routes.jobs import launch, store_new_job
from service.schemas import RevisionList, RevisionPublic, RevisionRequest

router = APIRouter(prefix="/v1/jobs", tags=["revisions"])


def _owned_job(store: JobStore, job_id: str, principal: Principal) -> JobRecord:
    job = store.get_job(job_id)
    if job is None or not principal.owns(job.tenant):  # another tenant's job: as if it did not exist
        raise job_not_found(job_id)
    return job


@router.post(
    "/{job_id}/revisions",
    status_code=201,
    summary="Mark a job's images fine, relabelled or excluded: a new dataset revision, and optionally a retrain",
    responses=error_responses(400, 403, 404, 409, 413, 503),
)
async def create_revision(
    job_id: str,
    body: RevisionRequest,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    s3: S3Dep,
    metrics: MetricsDep,
    principal: PrincipalDep,
    tenancy: TenancyDep,
    dispatcher: DispatcherDep,
) -> RevisionPublic:
    job = await asyncio.to_thread(_owned_job, store, job_id, principal)
    images = await asyncio.to_thread(read_listing, s3, job)
    revised = apply_marks(images, body.marks, (job.dataset or {}).get("classes") or sorted({i.label for i in images}))
    tenant = job.tenant or principal.tenant
    record = await asyncio.to_thread(write_revision, s3, settings, job, tenant, body.marks, revised)
    await asyncio.to_thread(RevisionStore(store.engine).add, record)
    response.headers["Location"] = f"/v1/jobs/{job_id}/revisions"
    retrain_id = None
    if body.retrain:
        params = job.params.model_copy(update={"dataset_uri": record.dataset_uri})
        retrain, _ = await asyncio.to_thread(store_new_job, params, None, store, settings, tenancy, principal)
        metrics.jobs_submitted.inc()
        await launch(dispatcher, store, retrain, principal)
        retrain_id = retrain.id
    return RevisionPublic.build(record, retrain_id)


@router.get(
    "/{job_id}/revisions",
    summary="The revisions made from a job's images, and the revision the job itself trained on",
    responses=error_responses(404),
)
def list_revisions(job_id: str, store: StoreDep, principal: PrincipalDep) -> RevisionList:
    job = _owned_job(store, job_id, principal)
    revisions = RevisionStore(store.engine)
    trained_on = revisions.trained_on(job.params.dataset_uri, job.tenant)
    return RevisionList(
        revisions=[RevisionPublic.build(r) for r in revisions.of_job(job_id)],
        trained_on=RevisionPublic.build(trained_on) if trained_on else None,
    )
