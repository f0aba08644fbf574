"""The exports the publish stage builds: every backbone of the registry, in every format, answers as the model does.

The models are random-init (no pretrained download) at 32 px: what is checked is the conversion, not accuracy.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from core.artifact import artifact_meta
from core.backbones import BACKBONES, build_classifier
from core.exports import (
    INPUT_NAME,
    ONNX_METADATA_KEY,
    TORCHSCRIPT_EXTRA_FILE,
    ExportFormat,
    ExportManifest,
    building,
    export_folder,
)
from core.spec import JobParams, Phase, S3Location
from core.store import JobStore
from jobs.export import announce_exports, build_exports, describe, export_after_success
from tests.utils.schema import migrated

CLASSES = ["cat", "dog", "fox"]
SIZE = 32


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_backbone_exports_to_files_that_answer_as_the_model_does(arch: str) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, len(CLASSES), weights=None).eval()
    manifest, built = build_exports(model, artifact_meta("job-1", arch, CLASSES, SIZE, {}))

    assert manifest.errors == {}
    assert set(built) == set(manifest.files) == set(ExportFormat)
    x = torch.randn(3, 3, SIZE, SIZE)  # a batch of 3: the files take any batch size, not just the traced one
    with torch.no_grad():
        expected = model(x).softmax(1).numpy()

    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    scripted = torch.jit.load(io.BytesIO(built[ExportFormat.torchscript]), _extra_files=extra)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, atol=1e-5)

    session = onnxruntime.InferenceSession(built[ExportFormat.onnx], providers=["CPUExecutionProvider"])
    (answered,) = session.run(None, {INPUT_NAME: x.numpy()})
    np.testing.assert_allclose(answered, expected, atol=1e-5)

    state = torch.load(io.BytesIO(built[ExportFormat.state_dict]), weights_only=True)
    fresh = build_classifier(arch, len(CLASSES), weights=None).eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        np.testing.assert_allclose(fresh(x).softmax(1).numpy(), expected, atol=1e-6)

    # The files carry what the sidecar says about their input and output.
    for embedded in (extra[TORCHSCRIPT_EXTRA_FILE], session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY]):
        carried = ExportManifest.model_validate(json.loads(embedded))
        assert carried.classes == CLASSES and carried.arch == arch
        assert carried.preprocessing == manifest.preprocessing and carried.input == manifest.input
    normalization = BACKBONES[arch].normalization
    assert (manifest.preprocessing.mean, manifest.preprocessing.std) == (normalization.mean, normalization.std)
    assert manifest.preprocessing.resize_short_side == manifest.preprocessing.center_crop == SIZE
    assert manifest.output.shape == ["batch", len(CLASSES)]


def test_efficientnet_lite_says_it_takes_tensorflow_style_scaling() -> None:
    manifest = describe(artifact_meta("job-1", "efficientnet_lite0", ["a", "b"], SIZE, {}))
    # (x - 127) / 128 on 0-255 pixels, written as the 0-1 mean and std that the formula in the JSON applies.
    mean, std = manifest.preprocessing.mean[0], manifest.preprocessing.std[0]
    assert (255 * mean, 255 * std) == pytest.approx((127, 128))


class _Unexportable(nn.Module):
    """Traces, but has an op the ONNX exporter does not know (SVD): one format fails, the others still build."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3))
        return self.linear(pooled) + torch.linalg.svdvals(pooled.T @ pooled).sum()


def test_a_format_that_fails_is_recorded_and_the_others_are_still_built() -> None:
    manifest, built = build_exports(_Unexportable(), artifact_meta("job-1", "resnet18", ["a", "b"], SIZE, {}))
    assert set(built) == {ExportFormat.torchscript, ExportFormat.state_dict} == set(manifest.files)
    assert ExportFormat.onnx in manifest.errors and manifest.onnx_opset is None
    assert manifest.errors[ExportFormat.onnx]  # names the exception, for the export route's 404


def test_exports_live_beside_the_artifact() -> None:
    assert export_folder("s3://art/jobs/job-1/model.pt").uri == "s3://art/jobs/job-1/export/"
    assert export_folder("s3://art/root/jobs/job-1/model.pt").uri == "s3://art/root/jobs/job-1/export/"


def test_exports_are_announced_at_publish_and_built_after_the_job_succeeded(s3: Any, tmp_path: Path) -> None:
    store = migrated_store(tmp_path)
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/pets"))
    store.set_phase(job.id, Phase.publishing, 0.9)
    meta = artifact_meta(job.id, "resnet18", CLASSES, SIZE, {})
    artifact_uri = f"s3://trainyard-artifacts/jobs/{job.id}/model.pt"
    folder = export_folder(artifact_uri)

    announce_exports(s3, artifact_uri, meta)
    announced = read_manifest(s3, folder.uri)
    assert announced.building_since is not None and building(announced.building_since) and announced.files == {}

    assert store.succeed(job.id, None)
    torch.manual_seed(0)
    export_after_success(store, s3, artifact_uri, build_classifier("resnet18", len(CLASSES), None), meta)
    built = read_manifest(s3, folder.uri)
    assert built.building_since is None and set(built.files) == set(ExportFormat)
    (event,) = [e for e in store.events(job.id) if e.kind == "exported"]  # written after the job ended
    assert event.data is not None and set(event.data["formats"]) == set(ExportFormat)

    elsewhere = "s3://no-such-bucket-for-exports/jobs/x/model.pt"  # S3 refuses: recorded, never raised
    export_after_success(store, s3, elsewhere, build_classifier("resnet18", len(CLASSES), None), meta)
    failed = [e for e in store.events(job.id) if e.kind == "exported"][-1]
    assert "could not be written" in failed.message and "NoSuchBucket" in failed.message


def migrated_store(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'trainyard.db'}"
    migrated(url)
    return JobStore.from_url(url)


def read_manifest(s3: Any, folder_uri: str) -> ExportManifest:
    folder = S3Location.parse(folder_uri)
    return ExportManifest.model_validate_json(
        s3.get_object(Bucket=folder.bucket, Key=f"{folder.prefix}preprocessing.json")["Body"].read()
    )
