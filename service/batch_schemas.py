"""What the batch prediction routes answer with. The request body is `core.batch_spec.BatchParams` itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.batch_spec import BatchParams, BatchPhase, BatchPlan, BatchScores
from core.cost import JobCost
from core.spec import JobStatus
from core.store import ModelRecord
from core.store.batch import BatchError, BatchRecord


def batch_url(public_url: str, run_id: str) -> str:
    return f"{public_url.rstrip('/')}/v1/batch-predictions/{run_id}"


class BatchModel(BaseModel):
    id: str
    ref: str = Field(description="the model as the request named it: an id, a name, name@alias or name@version")
    name: str | None = None
    version: int | None = None


class BatchProgress(BaseModel):
    images_done: int = Field(description="images scored and written so far (shards kept from earlier attempts too)")
    images_total: int | None = Field(description="images to score; null until the input is listed")
    fraction: float = Field(ge=0, le=1)


class BatchPredictionRun(BaseModel):
    id: str
    url: str
    status: JobStatus
    phase: BatchPhase | None = Field(description="while running: listing, predicting or finishing")
    model: BatchModel
    params: BatchParams = Field(description="as submitted, with output_uri resolved")
    progress: BatchProgress
    plan: BatchPlan | None = Field(description="the input's images and shards, once listed")
    scores: BatchScores | None = Field(description="accuracy and confusion matrix, for labelled input")
    result: dict[str, Any] | None = Field(
        description="rows, errors (files that could not be scored), shards, manifest_uri and timing, once done"
    )
    error: BatchError | None = Field(description="set when the run failed: code, message and phase")
    cost: JobCost | None = Field(description="CPU- and GPU-seconds the model actors held, and their estimated price")
    attempt: int = Field(ge=1, description="1 for the first run; each retry adds one")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def build(cls, run: BatchRecord, model: ModelRecord | None, public_url: str) -> BatchPredictionRun:
        total = run.images_total
        return cls(
            id=run.id,
            url=batch_url(public_url, run.id),
            status=run.status,
            phase=run.phase,
            model=BatchModel(
                id=run.model_id,
                ref=run.model_ref,
                name=model.name if model else None,
                version=model.version if model else None,
            ),
            params=run.params,
            progress=BatchProgress(
                images_done=run.images_done,
                images_total=total,
                fraction=round(min(1.0, run.images_done / total), 4) if total else 0.0,
            ),
            plan=run.plan,
            scores=run.scores,
            result=run.result,
            error=run.error,
            cost=JobCost.model_validate(run.cost) if run.cost else None,
            attempt=run.attempt,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )


class BatchPredictionRunList(BaseModel):
    batch_predictions: list[BatchPredictionRun]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
