"""The published model: one self-contained file with weights, classes, preprocessing and metrics.

Serving needs nothing else to answer predictions: it rebuilds the architecture from the registry
(random init, no pretrained download) and loads the fine-tuned state dict.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from pydantic import BaseModel

from core.backbones import BACKBONES, Classifier, Normalization, build_classifier

ARTIFACT_NAME = "model.pt"


class ArtifactMeta(BaseModel):
    format_version: int = 1
    job_id: str
    arch: str
    classes: list[str]
    image_size: int
    normalization: Normalization
    metrics: dict[str, Any] = {}


def artifact_meta(job_id: str, arch: str, classes: list[str], image_size: int, metrics: dict[str, Any]) -> ArtifactMeta:
    """The metadata of a model of the registry's `arch`: its preprocessing is the backbone's."""
    return ArtifactMeta(
        job_id=job_id,
        arch=arch,
        classes=classes,
        image_size=image_size,
        normalization=BACKBONES[arch].normalization,
        metrics=metrics,
    )


def dump_artifact(model: Classifier, meta: ArtifactMeta) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"meta": meta.model_dump(mode="json"), "state_dict": state}, buffer)
    return buffer.getvalue()


def load_artifact(data: bytes) -> tuple[ArtifactMeta, Classifier]:
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    meta = ArtifactMeta.model_validate(payload["meta"])
    model = build_classifier(meta.arch, len(meta.classes), weights=None)
    model.load_state_dict(payload["state_dict"])
    return meta, model.eval()
