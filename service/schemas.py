"""What the API answers with. The request body of POST /v1/jobs is `core.spec.JobParams` itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.cost import JobCost
from core.revisions import Mark, RevisionRecord
from core.spec import JobParams, JobStatus, JobWaiting, Phase
from core.store import EventRecord, JobError, JobRecord, ModelRecord
from service.errors import ErrorInfo


def predict_url(public_url: str, model_id: str) -> str:
    return f"{public_url.rstrip('/')}/v1/models/{model_id}/predict"


def artifact_url(public_url: str, job_id: str, name: str) -> str:
    return f"{public_url.rstrip('/')}/v1/jobs/{job_id}/artifacts/{name}"


class ModelRef(BaseModel):
    id: str
    predict_url: str


class JobPublic(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    phase: Phase | None = Field(description="the pipeline stage while running")
    progress: float = Field(ge=0, le=1)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    params: JobParams
    dataset: dict[str, Any] | None = Field(
        description="layout, classes, splits (where each came from), per-split per-class counts and skipped files"
    )
    lr_sweep: dict[str, Any] | None = Field(description="suggested_lr and the loss curve")
    metrics: list[dict[str, Any]] = Field(description="one entry per epoch: train_loss, valid_loss, accuracy …")
    best: dict[str, Any] | None = Field(description="best epoch, its metric and checkpoint URI")
    evaluation: dict[str, Any] | None
    training: dict[str, Any] | None
    artifacts: dict[str, str] = Field(description="name -> URL of the job's files: plots and the model artifact")
    model: ModelRef | None = Field(description="set once the model is deployed")
    error: JobError | None = Field(description="set when the job failed")
    waiting: JobWaiting | None = Field(
        default=None, description="set while the job's Ray work waits for resources (nodes scaling up)"
    )
    cost: JobCost | None = Field(
        default=None, description="CPU- and GPU-seconds its Ray work held so far, and their estimated price"
    )
    attempt: int = Field(default=1, ge=1, description="1 for the first run; POST /v1/jobs/{id}/retry adds one")

    @classmethod
    def build(cls, job: JobRecord, epochs: list[dict[str, Any]], public_url: str) -> JobPublic:
        model = ModelRef(id=job.model_id, predict_url=predict_url(public_url, job.model_id)) if job.model_id else None
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            phase=job.phase,
            progress=job.progress,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            params=job.params,
            dataset=job.dataset,
            lr_sweep=job.lr_sweep,
            metrics=epochs,
            best=job.best,
            evaluation=job.evaluation,
            training=job.training,
            artifacts={name: artifact_url(public_url, job.id, name) for name in job.artifacts or {}},
            model=model,
            error=job.error,
            waiting=_waiting_now(job.waiting) if job.waiting else None,
            cost=JobCost.model_validate(job.cost) if job.cost else None,
            attempt=job.attempt,
        )


def _waiting_now(stored: dict[str, Any]) -> JobWaiting:
    """The stored wait with waited_s as of now: the store is written when the reason changes, not every second."""
    waiting = JobWaiting.model_validate(stored)
    since = waiting.since if waiting.since.tzinfo else waiting.since.replace(tzinfo=UTC)
    waited = (datetime.now(UTC) - since).total_seconds()
    return waiting.model_copy(update={"waited_s": round(max(waiting.waited_s, waited), 1)})


class JobList(BaseModel):
    jobs: list[JobPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class ModelTraffic(BaseModel):
    """Predictions this API process relayed for the version since it started (Prometheus has the totals)."""

    requests: int = 0
    errors: int = Field(default=0, description="answers other than 200: bad images, model server trouble")


class ModelPublic(BaseModel):
    id: str
    name: str | None = Field(default=None, description="the training job's `name`; versions share it")
    version: int | None = Field(default=None, description="1, 2, … per name, one per job; null for unnamed jobs")
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at this version")
    traffic: ModelTraffic = Field(default_factory=ModelTraffic)
    job_id: str
    arch: str
    classes: list[str]
    metrics: dict[str, Any] | None
    created_at: datetime
    predict_url: str
    available: bool = Field(description="false when the model's objects are gone and it cannot answer")
    unavailable_reason: str | None = Field(default=None, description="why it cannot answer, and what to do")

    @classmethod
    def build(
        cls,
        model: ModelRecord,
        public_url: str,
        unavailable_reason: str | None = None,
        aliases: list[str] | None = None,
        traffic: ModelTraffic | None = None,
    ) -> ModelPublic:
        return cls(
            id=model.id,
            name=model.name,
            version=model.version,
            aliases=aliases or [],
            traffic=traffic or ModelTraffic(),
            job_id=model.job_id,
            arch=model.arch,
            classes=model.classes,
            metrics=model.metrics,
            created_at=model.created_at,
            predict_url=predict_url(public_url, model.id),
            available=unavailable_reason is None,
            unavailable_reason=unavailable_reason,
        )


class ModelList(BaseModel):
    models: list[ModelPublic]


class AliasMove(BaseModel):
    """Body of POST /v1/models/{name}/aliases/{alias}: the version to point at, by number or by model id."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 2}, {"model_id": "mdl-…"}]})

    version: int | None = Field(default=None, ge=1, description="a version number of the model name")
    model_id: str | None = Field(default=None, min_length=1, description="or the id of one of its versions")

    @model_validator(mode="after")
    def _exactly_one(self) -> AliasMove:
        if (self.version is None) == (self.model_id is None):
            raise ValueError('give exactly one of "version" or "model_id", e.g. {"version": 2}')
        return self


class AliasPublic(BaseModel):
    name: str
    alias: str
    model_id: str
    version: int | None


class EventPublic(BaseModel):
    id: int = Field(description="increasing; pass the last one seen as ?after=")
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None = None

    @classmethod
    def build(cls, event: EventRecord) -> EventPublic:
        return cls.model_validate(event.model_dump())


class EventList(BaseModel):
    events: list[EventPublic]


class FeedEvent(EventPublic):
    """An event of any of the caller's jobs, as GET /v1/events lists and streams them."""

    job_id: str

    @classmethod
    def build(cls, event: EventRecord) -> FeedEvent:
        return cls.model_validate(event.model_dump())


class FeedEventList(BaseModel):
    events: list[FeedEvent]
    last_event_id: int = Field(description="the newest event id seen; pass it as ?after= to continue")


class Prediction(BaseModel):
    label: str
    probability: float


class PredictionList(BaseModel):
    predictions: list[Prediction]
    # Which model and version answered, and where the time went (see docs/api.md): set by the model server.
    model_id: str | None = None
    model_version: str | None = None
    batch_size: int | None = None
    timing_ms: dict[str, float] | None = None


class ImagePredictions(BaseModel):
    predictions: list[Prediction]


class BatchPredictionList(BaseModel):
    """`predict:batch`: one result per image, in the order of the request's file parts."""

    results: list[ImagePredictions]
    model_id: str
    model_version: str
    batch_size: int
    timing_ms: dict[str, float]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready, or degraded: the store answers and `degraded` names what does not")
    checks: dict[str, str] = Field(
        description="store, ray: ok or unreachable; serve: ok, idle (no model listed), deploying, restoring, "
        "down, unreachable or unknown"
    )
    degraded: list[str] = Field(default_factory=list, description="the checks that are not fine")


class NotReady(BaseModel):
    """GET /readyz's 503: the standard error, plus the state of each dependency."""

    error: ErrorInfo
    checks: dict[str, str]


# --- dataset revisions (service.revisions) ---

MAX_MARKS = 1000


class RevisionRequest(BaseModel):
    """Body of POST /v1/jobs/{id}/revisions."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "marks": [
                        {"path": "valid/cat/cat_012.jpg", "action": "relabel", "label": "dog"},
                        {"path": "train/dog/dog_003.jpg", "action": "exclude"},
                    ],
                    "retrain": True,
                }
            ]
        },
    )

    marks: list[Mark] = Field(min_length=1, max_length=MAX_MARKS, description="one mark per image, each path once")
    retrain: bool = Field(
        default=False, description="also submit a job on the revision with the marked job's parameters"
    )


class RevisionChanges(BaseModel):
    relabelled: int
    excluded: int
    fine: int

    @classmethod
    def of(cls, marks: list[Mark]) -> RevisionChanges:
        return cls(
            relabelled=sum(m.action == "relabel" for m in marks),
            excluded=sum(m.action == "exclude" for m in marks),
            fine=sum(m.action == "fine" for m in marks),
        )


class RevisionPublic(BaseModel):
    id: str
    job_id: str = Field(description="the job whose images were marked")
    base_dataset_uri: str = Field(description="that job's dataset, never modified")
    dataset_uri: str = Field(description="the revised dataset (labels.csv + copies of the images it lists)")
    marks: list[Mark]
    changes: RevisionChanges
    images: int
    created_at: datetime
    retrain_job_id: str | None = Field(default=None, description="the job submitted on it, when `retrain` was asked")

    @classmethod
    def build(cls, record: RevisionRecord, retrain_job_id: str | None = None) -> RevisionPublic:
        return cls(
            **record.model_dump(exclude={"tenant"}),
            changes=RevisionChanges.of(record.marks),
            retrain_job_id=retrain_job_id,
        )


class RevisionList(BaseModel):
    revisions: list[RevisionPublic] = Field(description="revisions made from this job's images, newest first")
    trained_on: RevisionPublic | None = Field(
        description="the revision this job's dataset_uri is, if any: its job_id is the job it revises"
    )
