"""Models leaving Trainyard: the exported files (TorchScript, ONNX, a state dict) and the JSON beside them.

The files are built once per job by its driver (`jobs.export`: announced at publish, built in the seconds after
the job succeeded) and kept beside the model's artifact; these routes stream them from the artifact store in
chunks, so a download costs the API neither torch nor the file's size in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from core.exports import (
    FILE_NAMES,
    MANIFEST_FILE,
    ExportFormat,
    ExportManifest,
    building,
    download_name,
    export_folder,
)
from core.store import ModelRecord
from service.auth import PrincipalDep
from service.deps import S3Dep, StoreDep
from service.errors import ApiError, error_responses
from service.model_refs import resolve_model

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])

CHUNK_BYTES = 1024 * 1024
RETRY_AFTER_S = 5
_MISSING = ("NoSuchKey", "404", "NotFound")

FormatQuery = Annotated[
    ExportFormat,
    Query(
        description="torchscript: `torch.jit.load` it; onnx: `onnxruntime.InferenceSession` it; state_dict: the "
        "weights alone, for the architecture's own code"
    ),
]


@router.get(
    "/{model_id}/export",
    summary="Download the model as a file that runs without Trainyard (TorchScript, ONNX or a state dict)",
    responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(404, 503)},
    response_class=StreamingResponse,
)
def export_model(
    model_id: str, store: StoreDep, s3: S3Dep, principal: PrincipalDep, format: FormatQuery = ExportFormat.onnx
) -> StreamingResponse:
    model = resolve_model(store, model_id, principal)
    folder = export_folder(model.artifact_uri)
    try:
        found = s3.get_object(Bucket=folder.bucket, Key=f"{folder.prefix}{FILE_NAMES[format]}")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in _MISSING:
            raise _storage_unavailable(model) from None
        raise _not_exported(s3, model, format) from None
    except BotoCoreError:
        raise _storage_unavailable(model) from None
    filename = download_name(model.id, model.name, model.version, format)
    headers = {
        "Content-Length": str(found["ContentLength"]),
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Trainyard-Model-Id": model.id,
    }
    if model.version is not None:
        headers["Trainyard-Model-Version"] = str(model.version)
    return StreamingResponse(_chunks(found["Body"]), media_type="application/octet-stream", headers=headers)


@router.get(
    "/{model_id}/export/preprocessing",
    summary="What the exported files expect: input shape, preprocessing (size, normalisation), class names",
    responses=error_responses(404, 503),
)
def export_preprocessing(model_id: str, store: StoreDep, s3: S3Dep, principal: PrincipalDep) -> ExportManifest:
    model = resolve_model(store, model_id, principal)
    manifest = _manifest(s3, model)
    if manifest is None:
        raise _never_exported(model)
    return manifest.model_copy(update={"model_id": model.id, "name": model.name, "version": model.version})


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def _manifest(s3: Any, model: ModelRecord) -> ExportManifest | None:
    folder = export_folder(model.artifact_uri)
    try:
        body = s3.get_object(Bucket=folder.bucket, Key=f"{folder.prefix}{MANIFEST_FILE}")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            return None
        raise _storage_unavailable(model) from None
    except BotoCoreError:
        raise _storage_unavailable(model) from None
    return ExportManifest.model_validate(json.loads(body))


def _not_exported(s3: Any, model: ModelRecord, export_format: ExportFormat) -> ApiError:
    """Why the file is missing: being built (the job succeeded moments ago), never built (an older model, or a
    driver stopped while building), or this format failed to build."""
    manifest = _manifest(s3, model)
    if manifest is None:
        return _never_exported(model)
    if manifest.building_since is not None:
        if building(manifest.building_since):
            return ApiError(
                503,
                "export_building",
                f"the exports of model {model.id!r} are being built (its job succeeded moments ago); retry in "
                f"{RETRY_AFTER_S} seconds",
                "format",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return _never_exported(model)
    built = ", ".join(manifest.files) or "none"
    reason = manifest.errors.get(export_format)
    why = f"could not be built when it was published ({reason})" if reason else "is missing from the artifact store"
    return ApiError(
        404, "export_not_available", f"the {export_format} export of model {model.id!r} {why}; built: {built}", "format"
    )


def _never_exported(model: ModelRecord) -> ApiError:
    return ApiError(
        404,
        "export_not_available",
        f"model {model.id!r} has no exports (published before Trainyard exported models, or its job's driver stopped "
        "while building them): retrain it, or ask an operator to build them with `python -m jobs.export` on its "
        "artifact",
        "model_id",
    )


def _storage_unavailable(model: ModelRecord) -> ApiError:
    logger.exception("reading the exports of model %s failed", model.id)
    return ApiError(503, "storage_unavailable", "the artifact store did not answer; retry shortly")
