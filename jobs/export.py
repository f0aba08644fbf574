"""Build a published model's portable files (TorchScript, ONNX, a plain state dict) and their manifest.

The driver builds them with the model it has just published: torch is loaded and the model in memory, so the
exports cost one trace and one ONNX conversion there, once per job, instead of a torch import and the same CPU
in the API process on every download (the API never imports torch; benchmarks/export.py). It announces them at
publish and builds them once the job has succeeded (`export_after_success`). Every format
takes the preprocessed image and answers softmax probabilities, so a user of the file gets what the prediction
endpoint answers; the manifest (`core.exports.ExportManifest`) says how to preprocess, and travels inside the
TorchScript file (an extra file) and the ONNX file (metadata_props) as well as beside them.

Nothing here names an architecture: any backbone of the registry (`core.backbones.BACKBONES`) that traces
exports. A format that fails to build is recorded in the manifest's `errors` and the job goes on: the model
still deploys, and the export route says why that format is missing.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

from core.artifact import ArtifactMeta
from core.exports import (
    FILE_NAMES,
    INPUT_NAME,
    MANIFEST_FILE,
    ONNX_METADATA_KEY,
    OUTPUT_NAME,
    TORCHSCRIPT_EXTRA_FILE,
    ExportFormat,
    ExportManifest,
    Preprocessing,
    TensorSpec,
    export_folder,
)
from core.images import ALPHA_BACKGROUND, DRAFT_MARGIN
from core.store import JobStore

log = logging.getLogger("trainyard.driver")

# 17 is what every onnxruntime of the last years runs, and all the registry's layers export at it.
ONNX_OPSET = 17


class _Probabilities(nn.Module):
    """The classifier with the softmax the prediction endpoint applies, so the files answer what it answers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float().softmax(1)


def describe(meta: ArtifactMeta) -> ExportManifest:
    """The manifest of a model before any file is built (no `files` yet)."""
    size = meta.image_size
    return ExportManifest(
        job_id=meta.job_id,
        arch=meta.arch,
        classes=meta.classes,
        image_size=size,
        input=TensorSpec(
            name=INPUT_NAME, shape=["batch", 3, size, size], meaning="preprocessed RGB images (see preprocessing)"
        ),
        output=TensorSpec(
            name=OUTPUT_NAME,
            shape=["batch", len(meta.classes)],
            meaning="softmax probabilities, one column per class in `classes` order",
        ),
        preprocessing=Preprocessing(
            alpha_background=ALPHA_BACKGROUND,
            jpeg_draft_min_size=size * DRAFT_MARGIN,
            resize_short_side=size,
            center_crop=size,
            mean=meta.normalization.mean,
            std=meta.normalization.std,
        ),
        torch_version=torch.__version__.split("+")[0],
    )


def build_exports(model: nn.Module, meta: ArtifactMeta) -> tuple[ExportManifest, dict[ExportFormat, bytes]]:
    """Every format's bytes (those that built) and the manifest that lists them."""
    manifest = describe(meta)
    # Contiguous and in eval mode: the layout a file's user feeds, and no dropout.
    model = model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    example = torch.zeros(1, 3, meta.image_size, meta.image_size)
    built: dict[ExportFormat, bytes] = {
        ExportFormat.state_dict: _save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    }
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated upstream; both are
        # what plain `torch.jit.load` and every onnxruntime load today.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # Two notes of the exporter's on what it did not need to do (no Python signature on a traced graph, a
        # strided slice it leaves unfolded): noise in the driver's log.
        warnings.filterwarnings("ignore", message="no signature found", category=UserWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        try:
            traced = torch.jit.trace(_Probabilities(model).eval(), example, check_trace=False)
        except Exception as e:  # tracing runs the backbone's own Python: anything it raises means "not traceable"
            manifest.errors[ExportFormat.torchscript] = manifest.errors[ExportFormat.onnx] = _reason(e)
        else:
            embedded = _embedded(manifest)
            for export_format, build in ((ExportFormat.torchscript, _torchscript), (ExportFormat.onnx, _onnx)):
                try:
                    built[export_format] = build(traced, example, embedded)
                except Exception as e:
                    manifest.errors[export_format] = _reason(e)
    if ExportFormat.onnx in built:
        import onnx

        manifest.onnx_opset, manifest.onnx_version = ONNX_OPSET, onnx.__version__
    manifest.files = {f: FILE_NAMES[f] for f in ExportFormat if f in built}
    return manifest, built


@dataclass
class Exported:
    manifest: ExportManifest
    seconds: float

    def event(self) -> tuple[str, dict[str, Any]]:
        """The job event that records it: message and data."""
        formats = ", ".join(self.manifest.files)
        message = f"exported as {formats} in {self.seconds:.1f}s"
        if self.manifest.errors:
            message += "; not built: " + "; ".join(f"{f}: {why}" for f, why in self.manifest.errors.items())
        data = {"formats": list(self.manifest.files), "errors": dict(self.manifest.errors), "seconds": self.seconds}
        return message, data


def publish_exports(s3: Any, artifact_uri: str, model: nn.Module, meta: ArtifactMeta) -> Exported:
    """Build the exports and write them with their manifest to the export folder beside `artifact_uri`."""
    started = time.monotonic()
    manifest, built = build_exports(model, meta)
    write_exports(s3, artifact_uri, manifest, built)
    for export_format, reason in manifest.errors.items():
        log.warning("the %s export of job %s could not be built: %s", export_format, meta.job_id, reason)
    return Exported(manifest, round(time.monotonic() - started, 3))


def announce_exports(s3: Any, artifact_uri: str, meta: ArtifactMeta) -> None:
    """At publish: say the exports are coming (the manifest, no files yet), so that a download asked for between
    the job's success and the files is told to wait, not that there are none."""
    manifest = describe(meta)
    manifest.building_since = datetime.now(UTC)
    write_exports(s3, artifact_uri, manifest, {})


def export_after_success(store: JobStore, s3: Any, artifact_uri: str, model: nn.Module, meta: ArtifactMeta) -> None:
    """Build and write the exports once the job has succeeded, and record it as the job's `exported` event.

    Off the job's critical path: the ~3 s of tracing and converting an EfficientNet-Lite0 (benchmarks/export.py)
    would have doubled the time from the last epoch to a deployed model. Nothing here can fail the job: a
    failure is logged and recorded, and the files can be built again with `python -m jobs.export`.
    """
    try:
        message, data = publish_exports(s3, artifact_uri, model, meta).event()
    except Exception as e:  # S3 gone, a backbone the exporters choke on: the job has its model all the same
        log.exception("the exports of job %s could not be written", meta.job_id)
        message, data = f"the exports could not be written ({_reason(e)})", {"error": _reason(e)}
    store.record_event(meta.job_id, "exported", message, data)


def write_exports(s3: Any, artifact_uri: str, manifest: ExportManifest, built: dict[ExportFormat, bytes]) -> None:
    """The files first, the manifest last: a manifest in the store means every file it lists is there."""
    folder = export_folder(artifact_uri)
    for export_format, body in built.items():
        key = f"{folder.prefix}{FILE_NAMES[export_format]}"
        s3.put_object(Bucket=folder.bucket, Key=key, Body=body, ContentType="application/octet-stream")
    body = manifest.model_dump_json(indent=2, exclude_none=True).encode()
    key = f"{folder.prefix}{MANIFEST_FILE}"
    s3.put_object(Bucket=folder.bucket, Key=key, Body=body, ContentType="application/json")


def _save(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _torchscript(traced: torch.jit.ScriptModule, example: torch.Tensor, embedded: str) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: embedded})
    return buffer.getvalue()


def _onnx(traced: torch.jit.ScriptModule, example: torch.Tensor, embedded: str) -> bytes:
    import onnx

    buffer = io.BytesIO()
    # The TorchScript-based exporter (dynamo=False): it converts the graph just traced, where the
    # torch.export-based one needs onnxscript and traces the model again.
    torch.onnx.export(
        traced,
        (example,),
        buffer,  # type: ignore[arg-type]  # typed for paths; the TorchScript-based exporter writes to files too
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=ONNX_OPSET,
    )
    proto = onnx.load_model_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {ONNX_METADATA_KEY: embedded})
    return bytes(proto.SerializeToString())


def _embedded(manifest: ExportManifest) -> str:
    """The manifest as the files carry it: what the file expects and answers (the list of formats built is the
    sidecar's business: a file cannot know, when it is written, whether the next one will build)."""
    return manifest.model_dump_json(exclude={"files", "errors", "onnx_opset", "onnx_version"}, exclude_none=True)


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}"


def main(argv: list[str] | None = None) -> int:
    """Build the exports of models published before exports existed: `python -m jobs.export s3://…/model.pt …`.

    Run it where the job drivers run (the same TRAINYARD_* environment and S3 credentials).
    """
    import sys

    from core.artifact import load_artifact
    from core.s3 import s3_client
    from core.spec import S3Location

    uris = argv if argv is not None else sys.argv[1:]
    if not uris:
        print("usage: python -m jobs.export s3://<artifact bucket>/…/jobs/<job id>/model.pt …", file=sys.stderr)
        return 2
    s3 = s3_client()
    for uri in uris:
        location = S3Location.parse(uri)
        meta, model = load_artifact(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
        print(f"{uri}: {publish_exports(s3, uri, model, meta).event()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
