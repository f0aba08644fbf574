"""Which artifact a model id serves: a small pointer object in S3, so replicas need no database.

`<artifact_uri>/models/<model id>.json` -> {"artifact_uri": "s3://…/jobs/<job id>/model.pt"}.
Pointers are what later versions and rollbacks will move; artifacts themselves are never rewritten.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from core.settings import Settings
from core.spec import S3Location


class ModelPointer(BaseModel):
    model_id: str
    artifact_uri: str


class ModelNotFound(LookupError):
    pass


class ArtifactMissing(LookupError):
    """The pointer names an artifact that is gone from the artifact store (deleted, or a store was wiped)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uri = uri


_MISSING = ("NoSuchKey", "404", "NoSuchBucket", "NotFound")


def _pointer_location(settings: Settings, model_id: str) -> tuple[str, str]:
    root = S3Location.parse(settings.artifact_uri)
    return root.bucket, f"{root.prefix}models/{model_id}.json"


def write_pointer(s3: Any, settings: Settings, pointer: ModelPointer) -> None:
    bucket, key = _pointer_location(settings, pointer.model_id)
    s3.put_object(Bucket=bucket, Key=key, Body=pointer.model_dump_json().encode(), ContentType="application/json")


def delete_pointer(s3: Any, settings: Settings, model_id: str) -> None:
    """Undeploy (DELETE, or a deploy that lost a race with a cancel): replicas stop loading the model and drop
    it where it is loaded (serving/replica_models.py); deleting a missing pointer is fine."""
    bucket, key = _pointer_location(settings, model_id)
    s3.delete_object(Bucket=bucket, Key=key)


def read_pointer(s3: Any, settings: Settings, model_id: str) -> ModelPointer:
    bucket, key = _pointer_location(settings, model_id)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            raise ModelNotFound(model_id) from None
        raise
    return ModelPointer.model_validate(json.loads(body))


def read_artifact(s3: Any, artifact_uri: str) -> bytes:
    location = S3Location.parse(artifact_uri)
    try:
        return bytes(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            raise ArtifactMissing(artifact_uri) from None
        raise


def pointer_uri(settings: Settings, model_id: str) -> str:
    bucket, key = _pointer_location(settings, model_id)
    return f"s3://{bucket}/{key}"


def object_exists(s3: Any, uri: str) -> bool:
    location = S3Location.parse(uri)
    try:
        s3.head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            return False
        raise
    return True


class Unavailable(BaseModel):
    """Why a model the store lists cannot answer: an error code and a sentence saying what to do."""

    code: str
    message: str


def unavailable_reason(s3: Any, settings: Settings, model_id: str, artifact_uri: str) -> Unavailable | None:
    """Why a model the store lists as deployed cannot answer (None: it can). Store and objects must agree."""
    if not object_exists(s3, artifact_uri):
        return Unavailable(
            code="model_artifact_missing",
            message=f"its artifact {artifact_uri} is missing from the artifact store; restore the object or retrain",
        )
    pointer = pointer_uri(settings, model_id)
    if not object_exists(s3, pointer):
        return Unavailable(
            code="model_pointer_missing",
            message=f"its pointer {pointer} is missing from the artifact store; redeploy or retrain",
        )
    return None
