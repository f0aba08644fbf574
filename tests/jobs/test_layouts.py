"""Datasets as users have them: every accepted layout, the automatic split, labels.csv, and every layout error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.local.sample_data import SHAPES, make_shapes
from jobs.errors import StageError
from jobs.stages.validate import validate_dataset

URI = "s3://b/p"


def _validate(root: Path, valid_pct: float = 0.2, seed: int = 0):  # type: ignore[no-untyped-def]
    return validate_dataset(root, URI, max_bad_fraction=0.1, valid_pct=valid_pct, seed=seed)


def _flat(tmp_path: Path, per_class: int = 10) -> Path:
    """<class>/* folders at the top, no splits."""
    source = make_shapes(tmp_path / "src", train_per_class=per_class, valid_per_class=0, size=32)
    root = tmp_path / "flat"
    shutil.copytree(source / "train", root)
    return root


@pytest.mark.parametrize("name", ["valid", "val", "validation"])
def test_each_validation_folder_name_is_taken_and_reported(tmp_path: Path, name: str) -> None:
    root = make_shapes(tmp_path, train_per_class=3, valid_per_class=2, size=32)
    if name != "valid":
        (root / "valid").rename(root / name)
    dataset = _validate(root)
    assert dataset.summary.layout == "folders"
    assert dataset.summary.splits["valid"].source == f"{name}/"
    assert dataset.summary.splits["train"].source == "train/"
    assert len(dataset.valid) == 6 and all(i.path.startswith(f"{name}/") for i in dataset.valid)
    assert dataset.test == [] and "test" not in dataset.summary.splits


def test_two_validation_folders_are_an_error_naming_both(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=3, valid_per_class=2, size=32)
    shutil.copytree(root / "valid", root / "val")
    with pytest.raises(StageError) as error:
        _validate(root)
    assert error.value.code == "invalid_layout"
    assert "valid/ and val/" in error.value.message and URI in error.value.message


def test_test_folder_is_a_held_out_split(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=3, valid_per_class=2, size=32)
    shutil.copytree(root / "valid", root / "test")
    shutil.rmtree(root / "test" / "square")  # a test split may lack a class
    dataset = _validate(root)
    assert dataset.summary.splits["test"].source == "test/"
    assert dataset.summary.counts["test"] == {"circle": 2, "square": 0, "triangle": 2}
    assert len(dataset.test) == 4 and all(i.path.startswith("test/") for i in dataset.test)
    assert not {i.path for i in dataset.test} & {i.path for i in dataset.train + dataset.valid}


def test_test_folder_with_an_unknown_class_is_a_mismatch(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=3, valid_per_class=2, size=32)
    shutil.copytree(root / "valid" / "circle", root / "test" / "hexagon")
    with pytest.raises(StageError) as error:
        _validate(root)
    assert error.value.code == "class_mismatch" and "hexagon" in error.value.message


def test_train_alone_gets_a_seeded_stratified_split(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=10, valid_per_class=0, size=32)
    shutil.rmtree(root / "valid")
    dataset = _validate(root, valid_pct=0.2, seed=3)
    summary = dataset.summary
    assert summary.layout == "folders"
    assert summary.splits["valid"].source == "carved 20% of train/ (stratified, seed 3)"
    assert summary.counts["valid"] == {name: 2 for name in SHAPES}
    assert summary.counts["train"] == {name: 8 for name in SHAPES}
    assert not {i.path for i in dataset.train} & {i.path for i in dataset.valid}
    again = _validate(root, valid_pct=0.2, seed=3)
    other = _validate(root, valid_pct=0.2, seed=4)
    assert again.valid == dataset.valid  # a retry trains on the same split
    assert other.valid != dataset.valid


def test_flat_class_folders_are_split_automatically(tmp_path: Path) -> None:
    dataset = _validate(_flat(tmp_path, per_class=5), valid_pct=0.4)
    assert dataset.summary.layout == "flat"
    assert dataset.summary.classes == list(SHAPES)
    assert dataset.summary.counts["valid"] == {name: 2 for name in SHAPES}
    assert "carved 40% of <class>/ folders at the top" in dataset.summary.splits["valid"].source


def test_every_class_keeps_an_image_on_both_sides(tmp_path: Path) -> None:
    dataset = _validate(_flat(tmp_path, per_class=2), valid_pct=0.05)
    assert dataset.summary.counts["train"] == dataset.summary.counts["valid"] == {name: 1 for name in SHAPES}


def test_a_class_too_small_to_split_names_the_class_and_the_fix(tmp_path: Path) -> None:
    root = _flat(tmp_path, per_class=3)
    for extra in sorted((root / "square").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(StageError) as error:
        _validate(root)
    assert error.value.code == "too_few_images_to_split"
    assert "'square'" in error.value.message and "valid/ folder" in error.value.message


@pytest.mark.parametrize(
    ("setup", "code", "says"),
    [
        (lambda root: (root / "val").mkdir(parents=True), "invalid_layout", "val/ but no train/"),
        (lambda root: (root / "images" / "cat").mkdir(parents=True), "invalid_layout", "s3://b/p/images"),
        (lambda root: root.mkdir() or (root / "a.jpg").write_bytes(b"x"), "invalid_layout", "a.jpg"),
    ],
)
def test_remaining_layout_errors_name_what_was_found(tmp_path: Path, setup, code: str, says: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(StageError) as error:
        _validate(root)
    assert error.value.code == code
    assert says in error.value.message and URI in error.value.message


# --- labels.csv ------------------------------------------------------------------------------------------


def _csv_dataset(tmp_path: Path, per_class: int = 5) -> tuple[Path, list[tuple[str, str]]]:
    """Images in one images/ folder, labels in labels.csv: (path, label) rows, the file not written yet."""
    source = make_shapes(tmp_path / "src", train_per_class=per_class, valid_per_class=0, size=32)
    root = tmp_path / "csv"
    (root / "images").mkdir(parents=True)
    rows = []
    for shape in SHAPES:
        for png in sorted((source / "train" / shape).iterdir()):
            shutil.copy(png, root / "images" / png.name)
            rows.append((f"images/{png.name}", shape))
    return root, rows


def test_labels_csv_without_split_column_is_carved(tmp_path: Path) -> None:
    root, rows = _csv_dataset(tmp_path)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    dataset = _validate(root)
    assert dataset.summary.layout == "labels_csv"
    assert dataset.summary.classes == list(SHAPES)
    assert dataset.summary.splits["train"].source == "the rest of labels.csv"
    assert dataset.summary.splits["valid"].source == "carved 20% of labels.csv (stratified, seed 0)"
    assert dataset.summary.counts["valid"] == {name: 1 for name in SHAPES}
    assert len(dataset.train) + len(dataset.valid) == 15


def test_labels_csv_split_column_decides_the_splits(tmp_path: Path) -> None:
    root, rows = _csv_dataset(tmp_path)
    splits = ["train", "train", "train", "valid", "test"] * 3
    lines = [f"./{p},{label},{split}\n" for (p, label), split in zip(rows, splits, strict=True)]
    (root / "labels.csv").write_text("\ufeffPath,Label,Split\n" + "".join(lines))  # BOM and capitals: Excel
    dataset = _validate(root)
    assert dataset.summary.splits["valid"].source == "labels.csv (split=valid)"
    assert dataset.summary.counts == {
        "train": {name: 3 for name in SHAPES},
        "valid": {name: 1 for name in SHAPES},
        "test": {name: 1 for name in SHAPES},
    }


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("file,class\nimages/a.png,cat\n", "invalid_labels_csv", "missing path, label"),
        ("path,label\n{0},circle\n{1},\n", "invalid_labels_csv", "line 3"),
        ("path,label,split\n{0},circle,holdout\n", "invalid_labels_csv", "line 2: split must be"),
        ("path,label\n{0},circle\nnope/1.png,circle\n../x.png,square\n", "invalid_labels_csv", "2 file(s)"),
        ("path,label\n{0},circle\n{0},square\n", "invalid_labels_csv", "listed twice (first on line 2)"),
        ("path,label\n{0},circle\n{1},circle\n", "too_few_classes", "circle"),
        (
            "path,label,split\n{0},circle,train\n{1},square,valid\n",
            "empty_class",
            "'square' (train) (labels.csv lines 3)",
        ),
    ],
)
def test_labels_csv_errors_give_the_line_and_the_fix(tmp_path: Path, text: str, code: str, says: str) -> None:
    root, rows = _csv_dataset(tmp_path, per_class=2)
    (root / "labels.csv").write_text(text.format(rows[0][0], rows[1][0]))
    with pytest.raises(StageError) as error:
        _validate(root)
    assert error.value.code == code
    assert says in error.value.message, error.value.message


def test_labels_csv_class_whose_images_do_not_decode_is_named_with_its_lines(tmp_path: Path) -> None:
    root, rows = _csv_dataset(tmp_path, per_class=10)
    (root / "images" / "broken.png").write_bytes(b"not a png")
    (root / "labels.csv").write_text(
        "path,label\n" + "".join(f"{p},{label}\n" for p, label in rows) + "images/broken.png,blob\n"
    )
    with pytest.raises(StageError) as error:
        _validate(root)
    assert error.value.code == "empty_class"
    assert "'blob' (train) (labels.csv lines 32)" in error.value.message
