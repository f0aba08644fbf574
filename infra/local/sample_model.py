"""An untrained model in a stack's store and artifact store, for measuring and testing what only needs *a* model.

Batch predictions' throughput and their agreement across nodes do not depend on what the weights learned, so
the benchmark and the multi-node test publish one of these (seconds) instead of training one (minutes). It is a
real artifact (`core.artifact`), listed as a real model version of a finished job, seeded: the same `seed`
gives the same weights in every stack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import torch

from core.artifact import ARTIFACT_NAME, ArtifactMeta, dump_artifact
from core.backbones import BACKBONES, build_classifier
from core.settings import Settings
from core.spec import JobParams, S3Location
from core.store import JobStore, ModelRecord, new_id


def publish_untrained_model(
    store: JobStore,
    s3: Any,
    settings: Settings,
    classes: list[str],
    *,
    image_size: int = 64,
    arch: str = "efficientnet_lite0",
    seed: int = 0,
    name: str = "untrained",
    tenant: str | None = "admin",
) -> ModelRecord:
    """A model with random weights (seeded) published as the result of a finished job of `tenant`."""
    params = JobParams.model_validate({"dataset_uri": "s3://sample-model/none", "name": name, "arch": arch})
    job, _ = store.create_job(params, tenant=tenant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(arch, len(classes), weights=None).eval()
    meta = ArtifactMeta(
        job_id=job.id, arch=arch, classes=classes, image_size=image_size, normalization=BACKBONES[arch].normalization
    )
    # Where a job publishes its model: <artifact_uri>/jobs/<job id>/model.pt.
    location = S3Location.parse(settings.artifact_uri).child("jobs", job.id)
    s3.put_object(Bucket=location.bucket, Key=f"{location.prefix}{ARTIFACT_NAME}", Body=dump_artifact(model, meta))
    uri = f"s3://{location.bucket}/{location.prefix}{ARTIFACT_NAME}"
    record = ModelRecord(
        id=new_id("mdl"),
        job_id=job.id,
        artifact_uri=uri,
        arch=arch,
        classes=classes,
        created_at=datetime.now(UTC),
        name=name,
    )
    assert store.succeed_with_model(job.id, record), job.id
    found = store.get_model(record.id)
    assert found is not None
    return found
