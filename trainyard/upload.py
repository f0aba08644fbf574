"""Uploading a local dataset folder to S3, so `submit ./folder` works like `submit s3://…`.

The destination is ``<upload uri>/<folder name>-<fingerprint>/``, where the API says its tenant's uploads go
(``GET /v1/me``: ``s3://trainyard-uploads/uploads/<tenant>/`` by default). The fingerprint hashes each
file's relative path, size and modification time (nanoseconds) rather than its bytes: it costs one `stat`
per file instead of reading the whole dataset, and any edit, addition or removal changes it. A file merely
touched gets a new prefix and is uploaded again: wasteful, never wrong. Inside the prefix, files already
there with the same size are skipped, so a second submit of an unchanged folder uploads nothing and an
interrupted upload resumes where it stopped. Hidden files and folders (``.DS_Store``, ``.git/``) are skipped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trainyard.config import ClientConfig
from trainyard.errors import InvalidRequest, Unavailable

# Parallel PUTs: small files are latency-bound on real S3 (a local S3 server is CPU-bound either way).
UPLOAD_THREADS = 8


class LocalFile(BaseModel):
    path: Path
    key: str  # relative POSIX path under the folder
    size: int
    mtime_ns: int


class UploadResult(BaseModel):
    uri: str
    files: int
    uploaded: int
    skipped: int
    bytes_uploaded: int


def list_files(folder: Path) -> list[LocalFile]:
    """Every regular, non-hidden file under `folder`, sorted by relative path."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        stat = path.stat()
        files.append(LocalFile(path=path, key=relative.as_posix(), size=stat.st_size, mtime_ns=stat.st_mtime_ns))
    return files


def fingerprint(files: list[LocalFile]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.key}\t{f.size}\t{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def upload_prefix(folder: Path, files: list[LocalFile]) -> str:
    """The folder's own name under the tenant's upload location: ``<name>-<fingerprint>/``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-.") or "dataset"
    return f"{name}-{fingerprint(files)}/"


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> (bucket, ``some/prefix/``)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client(config: ClientConfig) -> Any:
    session = boto3.Session()
    credentials: dict[str, str] = {}
    if session.get_credentials() is None and config.local_s3_key is not None:
        key = config.local_s3_key.get_secret_value()
        credentials = {"aws_access_key_id": key, "aws_secret_access_key": key}
    return session.client(
        "s3",
        endpoint_url=config.s3_endpoint_url,
        region_name=session.region_name or "us-east-1",
        config=Config(max_pool_connections=UPLOAD_THREADS, retries={"max_attempts": 5, "mode": "adaptive"}),
        **credentials,
    )


def _ensure_bucket(s3: Any, bucket: str, *, may_create: bool) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
    if not may_create:
        raise InvalidRequest(
            f"the upload bucket {bucket!r} does not exist; the API's operator creates it, or names another with "
            "TRAINYARD_UPLOAD_URI on the API",
            code="bucket_not_found",
            field="upload_uri",
        )
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        # Another upload (a second `submit` at the same moment) created it between our check and now.
        if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _existing_sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        sizes.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return sizes


def dataset_files(folder: Path) -> list[LocalFile]:
    """The files to upload, or an `InvalidRequest` for a folder that is missing or empty (before any request)."""
    if not folder.is_dir():
        raise InvalidRequest(
            f"{str(folder)!r} is neither an s3:// URI nor a local folder; pass s3://bucket/prefix or a folder path",
            code="dataset_not_found",
            field="dataset",
        )
    files = list_files(folder)
    if not files:
        raise InvalidRequest(
            f"the folder {str(folder)!r} holds no files (hidden ones are skipped); point at the dataset folder",
            code="empty_dataset",
            field="dataset",
        )
    return files


def upload_folder(
    folder: Path,
    config: ClientConfig,
    root_uri: str,
    *,
    files: list[LocalFile] | None = None,
    progress: bool = False,
    console: Console | None = None,
) -> UploadResult:
    """Upload `folder` (its `files`, listed if not given) under `root_uri`, the tenant's upload location."""
    files = dataset_files(folder) if files is None else files
    bucket, root = _split(root_uri)
    prefix = root + upload_prefix(folder, files)
    uri = f"s3://{bucket}/{prefix}"
    s3 = s3_client(config)
    try:
        # Only on an S3-compatible development server; on AWS a bucket is a decision (region, policy, cost).
        _ensure_bucket(s3, bucket, may_create=config.s3_endpoint_url is not None)
        existing = _existing_sizes(s3, bucket, prefix)
        todo = [f for f in files if existing.get(prefix + f.key) != f.size]
        total = sum(f.size for f in todo)
        show = _Reporter(console or Console(), uri, len(files), len(todo), total) if progress else None
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            futures = [pool.submit(_put, s3, bucket, prefix + f.key, f.path, show) for f in todo]
            for future in futures:
                future.result()
        if show is not None:
            show.close()
    except (ClientError, BotoCoreError) as e:
        where = config.s3_endpoint_url or "AWS S3"
        raise Unavailable(
            f"uploading {folder} to {uri} failed ({e}); check that {where} is reachable and that your AWS "
            "credentials may write to that bucket",
            code="upload_failed",
        ) from None
    return UploadResult(
        uri=uri, files=len(files), uploaded=len(todo), skipped=len(files) - len(todo), bytes_uploaded=total
    )


def _put(s3: Any, bucket: str, key: str, path: Path, show: _Reporter | None) -> None:
    callback: Callable[[int], None] | None = show.advance if show else None
    s3.upload_file(str(path), bucket, key, Callback=callback)


class _Reporter:
    """A byte-level progress bar on a terminal; a start and an end line otherwise."""

    def __init__(self, console: Console, uri: str, files: int, todo: int, total: int) -> None:
        self.console = console
        summary = f"{todo} of {files} files ({total / 1e6:.1f} MB) to upload to {uri}"
        if todo < files:
            summary += f"; {files - todo} already there"
        console.print(summary, markup=False, highlight=False)
        self._bar: Progress | None = None
        if console.is_terminal and todo:
            self._bar = Progress(
                TextColumn("uploading"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._bar.add_task("upload", total=total)
            self._bar.start()
        self._todo = todo

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self.console.print(f"uploaded {self._todo} files", markup=False, highlight=False)
