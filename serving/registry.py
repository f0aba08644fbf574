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


def _pointer_location(settings: Settings, model_id: str) -> tuple[str, str]:
    root = S3Location.parse(settings.artifact_uri)
    return root.bucket, f"{root.prefix}models/{model_id}.json"


def write_pointer(s3: Any, settings: Settings, pointer: ModelPointer) -> None:
    bucket, key = _pointer_location(settings, pointer.model_id)
    s3.put_object(Bucket=bucket, Key=key, Body=pointer.model_dump_json().encode(), ContentType="application/json")


def read_pointer(s3: Any, settings: Settings, model_id: str) -> ModelPointer:
    bucket, key = _pointer_location(settings, model_id)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ModelNotFound(model_id) from None
        raise
    return ModelPointer.model_validate(json.loads(body))


def read_artifact(s3: Any, artifact_uri: str) -> bytes:
    location = S3Location.parse(artifact_uri)
    return bytes(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
