"""Stage 6: write the self-contained model artifact (weights, classes, preprocessing, metrics) to S3."""

from __future__ import annotations

from typing import Any

from core.artifact import ARTIFACT_NAME, ArtifactMeta, dump_artifact
from core.backbones import BACKBONES, Classifier
from core.settings import Settings
from jobs.paths import artifact_location


def publish_model(
    s3: Any,
    settings: Settings,
    job_id: str,
    model: Classifier,
    arch: str,
    classes: list[str],
    image_size: int,
    metrics: dict[str, Any],
) -> str:
    meta = ArtifactMeta(
        job_id=job_id,
        arch=arch,
        classes=classes,
        image_size=image_size,
        normalization=BACKBONES[arch].normalization,
        metrics=metrics,
    )
    location = artifact_location(settings, job_id)
    key = f"{location.prefix}{ARTIFACT_NAME}"
    s3.put_object(Bucket=location.bucket, Key=key, Body=dump_artifact(model, meta))
    return f"s3://{location.bucket}/{key}"
