from __future__ import annotations

from pathlib import Path

import pytest

from infra.local.sample_data import make_shapes
from jobs.errors import StageError
from jobs.stages.validate import validate_dataset


def test_valid_dataset_lists_classes_counts_and_items(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=3, valid_per_class=2, size=32)
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    assert dataset.summary.classes == ["circle", "square", "triangle"]
    assert dataset.summary.counts["train"] == {"circle": 3, "square": 3, "triangle": 3}
    assert len(dataset.train) == 9 and len(dataset.valid) == 6
    assert {i.label for i in dataset.train} == {0, 1, 2}
    assert dataset.summary.num_skipped == 0


def test_undecodable_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=10, valid_per_class=2, size=32)
    (root / "train" / "circle" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "train" / "square" / "notes.txt").write_text("hello")
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    assert dataset.summary.num_skipped == 2
    reasons = {s.path: s.reason for s in dataset.summary.skipped}
    assert "cannot be decoded" in reasons["train/circle/broken.png"]
    assert "not an image" in reasons["train/square/notes.txt"]
    assert dataset.summary.counts["train"]["circle"] == 10


def test_too_many_bad_files_fail_with_the_list(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=2, valid_per_class=1, size=32)
    for i in range(5):
        (root / "train" / "circle" / f"bad{i}.jpg").write_bytes(b"nope")
    with pytest.raises(StageError) as error:
        validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    assert error.value.code == "too_many_bad_images"
    assert "train/circle/bad0.jpg" in error.value.message and "s3://b/p" in error.value.message


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda root: __import__("shutil").rmtree(root / "train"), "invalid_layout"),
        (lambda root: __import__("shutil").rmtree(root / "valid" / "square"), "class_mismatch"),
        (
            lambda root: [
                __import__("shutil").rmtree(root / s / c) for s in ("train", "valid") for c in ("square", "triangle")
            ],
            "too_few_classes",
        ),
    ],
)
def test_layout_errors_say_what_to_fix(tmp_path: Path, mutate, code: str) -> None:  # type: ignore[no-untyped-def]
    root = make_shapes(tmp_path, train_per_class=2, valid_per_class=1, size=32)
    mutate(root)
    with pytest.raises(StageError) as error:
        validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    assert error.value.code == code
    assert "s3://b/p" in error.value.message


def test_an_image_over_the_pixel_limit_fails_naming_it_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    root = make_shapes(tmp_path, train_per_class=3, valid_per_class=2, size=32)
    Image.new("RGB", (400, 300)).save(root / "train" / "circle" / "huge.png")
    with pytest.raises(StageError) as error:
        validate_dataset(root, "s3://b/p", max_bad_fraction=0.1, max_image_pixels=100_000)
    assert error.value.code == "image_too_large"
    assert "train/circle/huge.png (400x300)" in error.value.message
    assert "100,000 pixels" in error.value.message and "TRAINYARD_MAX_IMAGE_PIXELS" in error.value.message
    assert len(validate_dataset(root, "s3://b/p", 0.1, max_image_pixels=120_000).train) == 10
