"""Where a job's pretrained backbone weights come from: an S3 object, the offline package, the torch cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.backbones import WeightsUnavailable, local_pretrained_weights
from core.spec import S3Location
from jobs.errors import StageError


def resolve_weights(arch: str, weights_uri: str | None, s3: Any, cache_dir: Path) -> Path:
    if weights_uri is None:
        try:
            return local_pretrained_weights(arch)
        except WeightsUnavailable as exc:
            raise StageError("weights_unavailable", str(exc)) from None
    location = S3Location.parse(weights_uri)
    try:
        head = s3.head_object(Bucket=location.bucket, Key=location.key)
        etag = head.get("ETag", "").strip('"')
        target = cache_dir / "weights" / hashlib.sha256(f"{weights_uri}@{etag}".encode()).hexdigest()[:24]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            tmp.write_bytes(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
            os.replace(tmp, target)
    except (ClientError, BotoCoreError):
        raise StageError(
            "weights_unavailable", f"weights_uri {weights_uri} could not be read; check that the object exists"
        ) from None
    return target
