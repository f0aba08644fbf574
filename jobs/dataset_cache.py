"""The fetching phase, and every node's copy of the dataset: bring it from S3 into a local cache keyed by ETag.

A second job (or a second Ray Train worker on the same node) on unchanged data downloads nothing.
Keys are untrusted input: any key that would land outside the dataset's cache folder is skipped
(`jobs.paths.safe_relative_path`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from core.s3 import S3_UNREACHABLE
from core.spec import S3Location
from jobs.errors import StageError
from jobs.failures import storage_unavailable
from jobs.paths import safe_relative_path

MANIFEST = ".trainyard-manifest.json"
# Real S3 rewards parallel GETs; the local server is CPU-bound either way.
DOWNLOAD_THREADS = 16


class DatasetLimits(BaseModel):
    """Per-job bounds on what one dataset may hold (settings `max_dataset_objects`, `max_dataset_bytes`)."""

    max_objects: int
    max_bytes: int


class FetchResult(BaseModel):
    root: Path
    objects: int
    downloaded: int
    bytes_downloaded: int
    unsafe_keys: list[str]
    seconds: float
    # sha256 over every (relative path, ETag) fetched: changes whenever any object does (the feature cache's key).
    etags_digest: str = ""


def dataset_cache_dir(cache_dir: Path, location: S3Location) -> Path:
    digest = hashlib.sha256(location.uri.encode()).hexdigest()[:16]
    return cache_dir / "datasets" / digest


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root.parent / f"{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _too_many(location: S3Location, limit: int) -> StageError:
    return StageError(
        "dataset_too_large",
        f"{location.uri} holds more than {limit} objects, the limit per job (TRAINYARD_MAX_DATASET_OBJECTS); "
        "point dataset_uri at a smaller prefix, or ask the operator to raise the limit",
    )


def _list_objects(s3: Any, location: S3Location, max_objects: int | None = None) -> list[dict[str, Any]]:
    """Every object under the prefix; stops listing as soon as there are more than `max_objects`."""
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.prefix)
        objects: list[dict[str, Any]] = []
        for page in pages:
            objects.extend(page.get("Contents", []))
            if max_objects is not None and len(objects) > max_objects:
                # A typo'd prefix can be a whole bucket: do not list millions of keys to say no.
                raise _too_many(location, max_objects)
        return objects
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise StageError(
                "bucket_not_found", f"the bucket '{location.bucket}' of {location.uri} does not exist"
            ) from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StageError(
                "access_denied",
                f"access to {location.uri} was denied; grant the service s3:ListBucket and s3:GetObject",
            ) from None
        raise StageError("s3_error", f"listing {location.uri} failed with S3 error {code or 'unknown'}") from None
    except S3_UNREACHABLE as exc:
        raise storage_unavailable(f"listing {location.uri}", exc) from None
    except BotoCoreError as exc:
        raise StageError("s3_error", f"listing {location.uri} failed ({type(exc).__name__}: {exc})") from None


def _check_size(location: S3Location, objects: list[dict[str, Any]], limits: DatasetLimits) -> None:
    total = sum(int(obj.get("Size", 0)) for obj in objects)
    if total > limits.max_bytes:
        raise StageError(
            "dataset_too_large",
            f"{location.uri} holds {total / 1e9:.2f} GB, more than the limit of {limits.max_bytes / 1e9:.2f} GB per "
            "job (TRAINYARD_MAX_DATASET_BYTES); point dataset_uri at a smaller prefix, shrink the images, or ask "
            "the operator to raise the limit",
        )


def fetch_dataset(s3: Any, uri: str, cache_dir: Path, limits: DatasetLimits | None = None) -> FetchResult:
    """Download the dataset under `uri` into the cache; with `limits`, refuse one too large before downloading."""
    started = time.monotonic()
    location = S3Location.parse(uri)
    objects = _list_objects(s3, location, limits.max_objects if limits else None)
    if limits is not None:
        _check_size(location, objects, limits)
    if not objects:
        raise StageError(
            "empty_dataset",
            f"no objects under {location.uri}; upload images as train/<class>/* (and valid/<class>/*), "
            "as <class>/* folders, or with a labels.csv (path,label) under that prefix",
        )
    root = dataset_cache_dir(cache_dir, location)
    wanted: dict[str, tuple[str, str]] = {}  # relative path -> (key, etag)
    unsafe: list[str] = []
    for obj in objects:
        rel = safe_relative_path(obj["Key"], location.prefix)
        if rel is None:
            if not obj["Key"].endswith("/"):  # "folder" placeholder objects are normal, not suspicious
                unsafe.append(obj["Key"])
            continue
        wanted[str(rel)] = (obj["Key"], obj.get("ETag", "").strip('"'))

    with _locked(root):
        manifest_path = root / MANIFEST
        manifest: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        todo = [
            (rel, key, etag)
            for rel, (key, etag) in wanted.items()
            if manifest.get(rel) != etag or not (root / rel).is_file()
        ]

        def download(item: tuple[str, str, str]) -> int:
            rel, key, _ = item
            target = (root / rel).resolve()
            if not target.is_relative_to(root.resolve()):  # belt and braces after safe_relative_path
                raise StageError("unsafe_key", f"refusing to write {key!r} outside the cache")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # get_object().read() is ~2x faster than download_file for small images.
                body = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "unknown")
                raise StageError("s3_error", f"downloading s3://{location.bucket}/{key} failed ({code})") from None
            except S3_UNREACHABLE as exc:
                raise storage_unavailable(f"downloading s3://{location.bucket}/{key}", exc) from None
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            tmp.write_bytes(body)
            os.replace(tmp, target)
            return len(body)

        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            sizes = list(pool.map(download, todo))

        # Objects deleted from S3 since the last fetch disappear from the local view too.
        for gone in set(manifest) - set(wanted):
            (root / gone).unlink(missing_ok=True)
        manifest = {path: etag for path, (_, etag) in wanted.items()}
        tmp_manifest = manifest_path.with_suffix(".tmp")
        tmp_manifest.write_text(json.dumps(manifest))
        os.replace(tmp_manifest, manifest_path)

    return FetchResult(
        root=root,
        objects=len(wanted),
        downloaded=len(todo),
        bytes_downloaded=sum(sizes),
        unsafe_keys=unsafe[:20],
        seconds=round(time.monotonic() - started, 3),
        etags_digest=hashlib.sha256(json.dumps(sorted(manifest.items())).encode()).hexdigest(),
    )
