"""A succeeded job with a deployed model, as the driver leaves them in the store (no Ray, no artifact objects)."""

from __future__ import annotations

from datetime import UTC, datetime

from core.spec import JobParams
from core.store import JobStore, ModelRecord


def deployed_job(store: JobStore, name: str | None = "pets", tenant: str = "admin") -> ModelRecord:
    """Store a job of `name` that succeeded and deployed a model; returns the model (its `job_id` is the job)."""
    job, _ = store.create_job(JobParams(dataset_uri=f"s3://bucket/{name or 'data'}", name=name), tenant=tenant)
    model = ModelRecord(
        id=job.id.replace("job-", "mdl-", 1),
        job_id=job.id,
        artifact_uri=f"s3://trainyard-artifacts/jobs/{job.id}/model.pt",
        arch="efficientnet_lite0",
        classes=["cat", "dog"],
        metrics={"accuracy": 0.9412},
        created_at=datetime.now(UTC),
        name=name,
    )
    assert store.succeed_with_model(job.id, model)
    return model
