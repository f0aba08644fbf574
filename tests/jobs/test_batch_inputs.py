"""What a batch run scores, listed from the local S3 server: images, labels from folders or a manifest, errors."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from infra.local.sample_data import ensure_bucket
from jobs.batch.inputs import list_input
from jobs.errors import StageError

CLASSES = ["cat", "dog"]


def put(s3: Any, keys: dict[str, bytes]) -> str:
    """Upload `keys` under a fresh prefix of bucket `batch-inputs`; returns the prefix's URI."""
    ensure_bucket(s3, "batch-inputs")
    prefix = f"run-{secrets.token_hex(4)}"
    for key, body in keys.items():
        s3.put_object(Bucket="batch-inputs", Key=f"{prefix}/{key}", Body=body)
    return f"s3://batch-inputs/{prefix}"


def test_images_in_class_folders_at_any_depth_are_labelled_and_other_files_skipped(s3: Any) -> None:
    uri = put(s3, {"valid/cat/1.jpg": b"x", "valid/dog/2.PNG": b"x", "dog/more/3.webp": b"x",
                   "notes.txt": b"x", ".hidden/cat/4.jpg": b"x", "dog/.DS_Store": b"x"})  # fmt: skip
    found = list_input(s3, uri, CLASSES, max_objects=100)
    assert [(i.uri.removeprefix(uri), i.label) for i in found.images] == [
        ("/dog/more/3.webp", "dog"), ("/valid/cat/1.jpg", "cat"), ("/valid/dog/2.PNG", "dog"),
    ]  # fmt: skip
    assert found.labelled and found.skipped == 3


def test_one_image_outside_a_class_folder_makes_the_input_unlabelled(s3: Any) -> None:
    found = list_input(s3, put(s3, {"cat/1.jpg": b"x", "misc/2.jpg": b"x"}), CLASSES, max_objects=100)
    assert not found.labelled and all(i.label is None for i in found.images) and len(found.images) == 2


def test_a_manifest_lists_what_is_scored_relative_or_absolute_missing_files_included(s3: Any) -> None:
    uri = put(s3, {"imgs/a.jpg": b"x", "imgs/b.jpg": b"x", "imgs/unlisted.jpg": b"x"})
    manifest = f"path,label\nimgs/a.jpg,cat\n{uri}/imgs/b.jpg,dog\n\nimgs/gone.jpg,cat\n"
    s3.put_object(Bucket="batch-inputs", Key=f"{uri.removeprefix('s3://batch-inputs/')}/labels.csv", Body=manifest)
    for target in (uri, f"{uri}/labels.csv"):
        found = list_input(s3, target, CLASSES, max_objects=100)
        assert [(i.uri.removeprefix(uri), i.label) for i in found.images] == [
            ("/imgs/a.jpg", "cat"), ("/imgs/b.jpg", "dog"), ("/imgs/gone.jpg", "cat"),
        ]  # fmt: skip
        assert found.labelled


def test_a_manifest_without_labels_is_unlabelled_and_a_bad_one_says_which_lines(s3: Any) -> None:
    uri = put(s3, {"list.csv": b"path\na.jpg\nb.jpg\n", "bad.csv": b"path,label\na.jpg,cat\na.jpg,dog\n,cat\n"})
    found = list_input(s3, f"{uri}/list.csv", CLASSES, max_objects=100)
    assert not found.labelled and len(found.images) == 2
    with pytest.raises(StageError) as bad:
        list_input(s3, f"{uri}/bad.csv", CLASSES, max_objects=100)
    assert bad.value.code == "invalid_manifest"
    assert "line 3: a.jpg is listed twice" in bad.value.message and "line 4: no path" in bad.value.message
    with pytest.raises(StageError) as headless:
        list_input(s3, put(s3, {"m.csv": b"file,label\na.jpg,cat\n"}) + "/m.csv", CLASSES, max_objects=100)
    assert headless.value.code == "invalid_manifest" and "`path` column" in headless.value.message


@pytest.mark.parametrize(
    ("uri", "code"),
    [("s3://batch-inputs/nothing-here", "no_images"), ("s3://no-such-bucket-for-batch/x", "bucket_not_found"),
     ("s3://batch-inputs/missing.csv", "input_not_found")],
)  # fmt: skip
def test_inputs_that_hold_nothing_to_score_fail_with_a_reason(s3: Any, uri: str, code: str) -> None:
    ensure_bucket(s3, "batch-inputs")
    with pytest.raises(StageError) as failed:
        list_input(s3, uri, CLASSES, max_objects=100)
    assert failed.value.code == code
