"""Paths a job writes to: where its files go in the artifact store, and which dataset paths are safe to write.

Dataset keys and labels.csv paths are untrusted input; only plain relative paths below the dataset's folder are
written, so nothing lands outside the cache.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from core.settings import Settings
from core.spec import S3Location

# S3 keys may hold parts of any length; most filesystems refuse names over 255 bytes (NAME_MAX), and the
# download's temporary name adds a few more.
MAX_NAME_BYTES = 200


def safe_relative_path(key: str, prefix: str) -> PurePosixPath | None:
    """The key's path below the prefix, or None if it is not a plain relative path (.., absolute, empty parts)
    or has a part too long to be a file name here."""
    rel = key[len(prefix) :]
    if not rel or rel.endswith("/") or "\\" in rel or "\x00" in rel:
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") or len(part.encode()) > MAX_NAME_BYTES for part in parts):
        return None
    return PurePosixPath(*parts)


def artifact_location(settings: Settings, job_id: str) -> S3Location:
    """The job's folder in the artifact store: its checkpoints, plots, report files and model."""
    return S3Location.parse(settings.artifact_uri).child("jobs", job_id)
