"""What the store hands out: plain pydantic records of jobs, events and models, never rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from core.spec import JobParams, JobStatus, Phase

ResultField = Literal["dataset", "lr_sweep", "training", "best", "evaluation", "artifacts", "cost"]


class JobError(BaseModel):
    code: str
    message: str
    phase: Phase | None = None


class JobRecord(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    phase: Phase | None
    progress: float
    params: JobParams
    dataset: dict[str, Any] | None = None
    lr_sweep: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    artifacts: dict[str, str] | None = None
    model_id: str | None = None
    error: JobError | None = None
    waiting: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    attempt: int = 1
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    tenant: str | None = None
    launched_at: datetime | None = None


class EventRecord(BaseModel):
    id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None = None


class LoggedEvent(EventRecord):
    """An event with the job it belongs to, as read across all jobs (metrics fold the whole log)."""

    job_id: str


class ModelRecord(BaseModel):
    id: str
    job_id: str
    artifact_uri: str
    arch: str
    classes: list[str]
    metrics: dict[str, Any] | None = None
    created_at: datetime
    tenant: str | None = None
    name: str | None = None
    version: int | None = None


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""
