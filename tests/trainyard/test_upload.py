"""`submit ./folder` uploads to the local stack's S3 server: once, skipping hidden files, resumable."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infra.local.sample_data import make_shapes
from infra.local.stack import LocalStack
from trainyard import Client, InvalidRequest
from trainyard.upload import list_files, upload_folder, upload_prefix

from .conftest import LiveApi


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = make_shapes(tmp_path / "my shapes", train_per_class=2, valid_per_class=1, size=32)
    (root / ".DS_Store").write_bytes(b"finder noise")
    (root / "train" / ".git").mkdir()
    (root / "train" / ".git" / "HEAD").write_text("ref: refs/heads/main")
    return root


@pytest.fixture
def client(stack: LocalStack, client_env: Path, live_api: LiveApi) -> Client:
    """S3 from the stack's state file, as a user's shell next to `trainyard up` would find it; the API's admin key."""
    home = client_env / "stack-home"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"home": str(home), "s3_port": stack.config.s3_port}))
    return Client(url=live_api.url)


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    """The test's own view of the bucket (the client's environment holds no AWS credentials)."""
    return stack.s3_client()


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_upload_once_then_nothing(client: Client, folder: Path, s3: Any) -> None:
    first = client.upload(folder)
    # Under the tenant's own folder (the API's admin key belongs to tenant "admin").
    assert first.uri.startswith("s3://trainyard-uploads/uploads/admin/my-shapes-") and first.uri.endswith("/")
    assert (first.files, first.uploaded, first.skipped) == (9, 9, 0)
    prefix = first.uri.removeprefix("s3://trainyard-uploads/")
    keys = _keys(s3, "trainyard-uploads", prefix)
    assert len(keys) == 9 and not any("/." in k for k in keys)
    assert prefix + "valid/circle/circle_000.png" in keys

    second = client.upload(folder)
    assert (second.uri, second.uploaded, second.skipped, second.bytes_uploaded) == (first.uri, 0, 9, 0)


def test_an_interrupted_upload_resumes(client: Client, folder: Path, s3: Any) -> None:
    first = client.upload(folder)
    prefix = first.uri.removeprefix("s3://trainyard-uploads/")
    s3.delete_object(Bucket="trainyard-uploads", Key=prefix + "train/square/square_001.png")
    again = client.upload(folder)
    assert (again.uri, again.uploaded) == (first.uri, 1)


def test_a_changed_folder_gets_a_new_prefix(folder: Path) -> None:
    before = upload_prefix(folder, list_files(folder))
    image = folder / "train" / "circle" / "circle_000.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert upload_prefix(folder, list_files(folder)) != before


def test_a_missing_folder_is_refused_before_any_request(client: Client, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        client.submit(str(tmp_path / "nope"))
    assert caught.value.status is None and caught.value.field == "dataset"
    assert "s3://bucket/prefix" in caught.value.message


def test_concurrent_first_uploads_share_the_new_bucket(client: Client, tmp_path: Path) -> None:
    # Two `submit`s at once both find the bucket missing; the one that creates it second must not fail.
    folders = [make_shapes(tmp_path / f"set{i}", train_per_class=1, valid_per_class=0, size=16) for i in range(4)]
    root = "s3://fresh-bucket-for-a-race/uploads/admin/"
    with ThreadPoolExecutor(len(folders)) as pool:
        results = list(pool.map(lambda f: upload_folder(f, client.config, root), folders))
    assert [r.uploaded for r in results] == [3, 3, 3, 3]
