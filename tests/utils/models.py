"""Deployed models without training: a store row alone (`deployed_job`), or one Serve can load (`publish_version`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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


def publish_version(
    s3: Any, store: JobStore, name: str, classes: list[str], answer: str, exports: bool = False
) -> ModelRecord:
    """A job of `name` that deployed a model always answering `answer`: artifact, pointer and store row (and with
    `exports`, its TorchScript, ONNX and state-dict files, as a job's driver writes them after success).

    An untrained EfficientNet-Lite0 (32 px) whose head is zeroed and given a bias, so it answers `answer` with
    probability ~1 whatever the image: versions that disagree make an alias move visible in the next answer.
    """
    import torch

    from core.backbones import build_classifier
    from core.settings import get_settings
    from jobs.stages.publish import publish_model
    from serving.registry import ModelPointer, write_pointer

    settings = get_settings()
    job, _ = store.create_job(JobParams(dataset_uri="s3://e2e/none", name=name, image_size=32), tenant="admin")
    model_id = job.id.replace("job-", "mdl-", 1)
    # Ended at once, so a running API's dispatcher never hands this made-up job to Ray (a driver start each).
    assert store.succeed(job.id, model_id)
    model = build_classifier("efficientnet_lite0", len(classes), weights=None).eval()
    linear = model.head[1]
    assert isinstance(linear, torch.nn.Linear)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(-10.0)
        linear.bias[classes.index(answer)] = 10.0
    uri = publish_model(s3, settings, job.id, model, "efficientnet_lite0", classes, 32, {"accuracy": 0.5})
    write_pointer(s3, settings, ModelPointer(model_id=model_id, artifact_uri=uri))
    if exports:
        from core.artifact import artifact_meta
        from jobs.export import publish_exports

        meta = artifact_meta(job.id, "efficientnet_lite0", classes, 32, {"accuracy": 0.5})
        assert not publish_exports(s3, uri, model, meta).manifest.errors
    record = ModelRecord(
        id=model_id,
        job_id=job.id,
        artifact_uri=uri,
        arch="efficientnet_lite0",
        classes=classes,
        metrics={"accuracy": 0.5},
        created_at=datetime.now(UTC),
        name=name,
    )
    return store.add_model(record)
