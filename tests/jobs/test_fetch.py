from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.dataset_cache import DatasetLimits, fetch_dataset
from jobs.errors import StageError
from jobs.paths import safe_relative_path


def _put(s3: Any, bucket: str, files: dict[str, bytes]) -> None:
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_second_fetch_downloads_nothing_and_picks_up_changes(s3: Any, cache_dir: Path) -> None:
    _put(s3, "fetch-a", {"ds/train/a/1.png": b"one", "ds/train/b/2.png": b"two", "ds/valid/a/3.png": b"three"})
    first = fetch_dataset(s3, "s3://fetch-a/ds", cache_dir)
    assert (first.objects, first.downloaded) == (3, 3)
    assert (first.root / "train/b/2.png").read_bytes() == b"two"

    second = fetch_dataset(s3, "s3://fetch-a/ds/", cache_dir)
    assert (second.root, second.downloaded) == (first.root, 0)

    s3.put_object(Bucket="fetch-a", Key="ds/train/b/2.png", Body=b"changed")
    s3.delete_object(Bucket="fetch-a", Key="ds/valid/a/3.png")
    third = fetch_dataset(s3, "s3://fetch-a/ds", cache_dir)
    assert third.downloaded == 1
    assert (third.root / "train/b/2.png").read_bytes() == b"changed"
    assert not (third.root / "valid/a/3.png").exists()


def test_keys_that_escape_the_cache_are_skipped(permissive_s3: Any, cache_dir: Path) -> None:
    s3 = permissive_s3
    _put(
        s3,
        "fetch-b",
        {"ds/train/a/ok.png": b"ok", "ds/../../../../escape.png": b"x", "ds/train//double.png": b"x"},
    )
    result = fetch_dataset(s3, "s3://fetch-b/ds", cache_dir)
    assert result.objects == 1
    assert set(result.unsafe_keys) == {"ds/../../../../escape.png", "ds/train//double.png"}
    written = {p.name for p in cache_dir.rglob("*") if p.is_file()}
    assert "escape.png" not in written and "double.png" not in written
    assert not any(p.name == "escape.png" for p in cache_dir.parent.rglob("escape.png"))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("p/a/b.png", "a/b.png"),
        ("p/../x", None),
        ("p/a/./b", None),
        ("p/", None),
        ("p/a\\..\\b", None),
    ],
)
def test_safe_relative_path(key: str, expected: str | None) -> None:
    result = safe_relative_path(key, "p/")
    assert (str(result) if result else None) == expected


def test_missing_bucket_names_the_uri(s3: Any, cache_dir: Path) -> None:
    with pytest.raises(StageError) as error:
        fetch_dataset(s3, "s3://fetch-no-such-bucket/x", cache_dir)
    assert error.value.code == "bucket_not_found"
    assert "s3://fetch-no-such-bucket/x/" in error.value.message


def test_empty_prefix_names_the_uri(s3: Any, cache_dir: Path) -> None:
    _put(s3, "fetch-c", {"other/file.png": b"x"})
    with pytest.raises(StageError) as error:
        fetch_dataset(s3, "s3://fetch-c/ds", cache_dir)
    assert error.value.code == "empty_dataset"
    assert "s3://fetch-c/ds/" in error.value.message


def test_a_dataset_over_the_object_or_byte_limit_fails_before_downloading(s3: Any, cache_dir: Path) -> None:
    _put(s3, "fetch-limits", {f"ds/train/a/{i}.png": b"x" * 100 for i in range(5)})
    with pytest.raises(StageError) as too_many:
        fetch_dataset(s3, "s3://fetch-limits/ds", cache_dir, DatasetLimits(max_objects=4, max_bytes=10**9))
    assert too_many.value.code == "dataset_too_large"
    assert "more than 4 objects" in too_many.value.message and "TRAINYARD_MAX_DATASET_OBJECTS" in too_many.value.message
    with pytest.raises(StageError) as too_big:
        fetch_dataset(s3, "s3://fetch-limits/ds", cache_dir, DatasetLimits(max_objects=5, max_bytes=499))
    assert "TRAINYARD_MAX_DATASET_BYTES" in too_big.value.message and "dataset_uri" in too_big.value.message
    assert not any(cache_dir.rglob("*.png"))  # refused before a single download
    within = fetch_dataset(s3, "s3://fetch-limits/ds", cache_dir, DatasetLimits(max_objects=5, max_bytes=500))
    assert within.downloaded == 5


def test_an_s3_that_does_not_answer_fails_the_fetch_naming_s3(cache_dir: Path) -> None:
    import boto3

    from core.s3 import client_config
    from infra.local.stack import LOOPBACK, free_port

    # Nothing listens on a freshly freed port: every try is refused, as when the S3 server is down.
    unreachable = boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{free_port()}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=client_config(compatible_server=True, max_attempts=2),
    )
    with pytest.raises(StageError) as failed:
        fetch_dataset(unreachable, "s3://somewhere/ds", cache_dir)
    assert failed.value.code == "storage_unavailable"
    assert "the object store (S3" in failed.value.message and "listing s3://somewhere/ds" in failed.value.message


def test_etags_digest_changes_only_when_an_object_does(s3: Any, cache_dir: Path) -> None:
    _put(s3, "fetch-digest", {"ds/train/a/1.png": b"one", "ds/train/b/2.png": b"two"})
    first = fetch_dataset(s3, "s3://fetch-digest/ds", cache_dir)
    assert fetch_dataset(s3, "s3://fetch-digest/ds", cache_dir).etags_digest == first.etags_digest
    s3.put_object(Bucket="fetch-digest", Key="ds/train/b/2.png", Body=b"changed")
    assert fetch_dataset(s3, "s3://fetch-digest/ds", cache_dir).etags_digest != first.etags_digest
