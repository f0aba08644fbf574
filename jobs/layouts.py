"""The dataset layouts Trainyard accepts, found from what is in the fetched folder.

1. folders: `train/<class>/*`, a validation split named `valid/`, `val/` or `validation/` (torchvision's
   tutorials and ImageNet say `val/`, fastai `valid/`), and an optional held-out `test/<class>/*`;
2. flat: just `<class>/*` folders at the top (no splits; the validation split is carved from them);
3. labels_csv: a `labels.csv` at the top with `path,label` (fastai's `from_csv`), paths relative to the
   prefix, and an optional `split` column (`train`, `valid`, `test`).
Without a validation split, `jobs.stages.validate` carves one. Every error names what was found and the fix.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from jobs.errors import StageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VALID_FOLDERS = ("valid", "val", "validation")  # taken in this order; two at once is an error
TEST_FOLDER = "test"
LABELS_CSV = "labels.csv"
SPLIT_VALUES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
EXPECTED = (
    "expected train/<class>/* (with valid/, val/ or validation/ and an optional test/), "
    "<class>/* folders at the top, or a labels.csv with path,label columns"
)
# How many unknown paths or lines one error message quotes.
QUOTED = 5

Layout = Literal["folders", "flat", "labels_csv"]


class Candidate(BaseModel):
    path: str  # relative to the dataset root
    label: str  # the class name
    line: int | None = None  # the labels.csv line it came from


class FoundLayout(BaseModel):
    layout: Layout
    classes: list[str]
    splits: dict[str, list[Candidate]]  # "train", and "valid" / "test" when the dataset has them
    sources: dict[str, str]  # split -> where it came from, for the dataset summary
    train_source: str

    def describe(self, split: str, name: str) -> str:
        """Where one class of one split lives, in the words of the dataset's layout."""
        if self.layout == "labels_csv":
            return f"label {name!r} ({split})"
        return f"{self.sources[split]}{name}/" if self.layout == "folders" else f"{name}/"


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else []


def _class_dirs(folder: Path) -> list[str]:
    return [p.name for p in _visible(folder) if p.is_dir()]


def _files(folder: Path, root: Path, label: str) -> list[Candidate]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [Candidate(path=str(p.relative_to(root)), label=label) for p in files]


def _found_at_top(root: Path) -> str:
    names = [f"{p.name}/" if p.is_dir() else p.name for p in _visible(root)]
    return ", ".join(names[:10]) + (", …" if len(names) > 10 else "") or "nothing"


def find_layout(root: Path, uri: str) -> FoundLayout:
    if (root / LABELS_CSV).is_file():
        return _labels_csv_layout(root, uri)
    if (root / "train").is_dir():
        return _folders_layout(root, uri)
    return _flat_layout(root, uri)


def _too_few_classes(uri: str, where: str, classes: list[str]) -> StageError:
    return StageError(
        "too_few_classes",
        f"{uri}{where} has {len(classes)} class(es) ({', '.join(classes) or 'none'}); a classifier needs at least 2, "
        "one folder (or label) per class",
    )


def _folders_layout(root: Path, uri: str) -> FoundLayout:
    classes = _class_dirs(root / "train")
    if len(classes) < 2:
        raise _too_few_classes(uri, "/train", classes)
    present = [name for name in VALID_FOLDERS if (root / name).is_dir()]
    if len(present) > 1:
        raise StageError(
            "invalid_layout",
            f"{uri} has {' and '.join(f'{n}/' for n in present)}; keep one validation folder "
            f"(Trainyard takes the first of {', '.join(f'{n}/' for n in VALID_FOLDERS)}), merge or remove the other",
        )
    splits = {"train": [c for name in classes for c in _files(root / "train" / name, root, name)]}
    sources = {"train": "train/"}
    for split, folder in (("valid", present[0] if present else None), ("test", TEST_FOLDER)):
        if folder is None or not (root / folder).is_dir():
            continue
        found = _class_dirs(root / folder)
        unknown = sorted(set(found) - set(classes))
        missing = sorted(set(classes) - set(found)) if split == "valid" else []
        if unknown or missing:
            raise StageError(
                "class_mismatch",
                f"{uri}: {folder}/ must use the class folders of train/; only in train: {missing or 'none'}, "
                f"only in {folder}: {unknown or 'none'}",
            )
        splits[split] = [c for name in found for c in _files(root / folder / name, root, name)]
        sources[split] = f"{folder}/"
    return FoundLayout(layout="folders", classes=classes, splits=splits, sources=sources, train_source="train/")


def _flat_layout(root: Path, uri: str) -> FoundLayout:
    split_folders = [name for name in (*VALID_FOLDERS, TEST_FOLDER) if (root / name).is_dir()]
    if split_folders:
        raise StageError(
            "invalid_layout",
            f"{uri} has {', '.join(f'{n}/' for n in split_folders)} but no train/ (found at the top: "
            f"{_found_at_top(root)}); put the training images in train/<class>/, or drop the split folders and "
            "keep only <class>/ folders at the top for an automatic validation split",
        )
    classes = _class_dirs(root)
    if len(classes) == 1:
        raise StageError(
            "invalid_layout",
            f"{uri} holds one folder, {classes[0]}/ (found at the top: {_found_at_top(root)}); if the classes "
            f"are inside it, use {uri.rstrip('/')}/{classes[0]} as dataset_uri; else {EXPECTED}",
        )
    if not classes:
        raise StageError(
            "invalid_layout", f"{uri} has no folders (found at the top: {_found_at_top(root)}); {EXPECTED}"
        )
    splits = {"train": [c for name in classes for c in _files(root / name, root, name)]}
    source = "<class>/ folders at the top"
    return FoundLayout(layout="flat", classes=classes, splits=splits, sources={"train": source}, train_source=source)


def _labels_csv_layout(root: Path, uri: str) -> FoundLayout:
    # Here, not at the top: jobs.paths reads the settings (pydantic-settings), which the torch-only training code
    # that reads validated items (benchmarks/gpu_check.py on a GPU machine) does without.
    from jobs.paths import safe_relative_path

    where = f"{uri.rstrip('/')}/{LABELS_CSV}"
    try:
        text = (root / LABELS_CSV).read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except UnicodeDecodeError:
        raise StageError("invalid_labels_csv", f"{where} is not UTF-8 text; save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [name for name in ("path", "label") if name not in header]
    if missing:
        raise StageError(
            "invalid_labels_csv",
            f"{where} line 1 must be a header naming the columns path,label (and optionally split); "
            f"missing {', '.join(missing)} (found: {', '.join(header) or 'an empty file'})",
        )
    column = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    rows: list[tuple[Candidate, str]] = []
    seen: dict[str, int] = {}
    unknown: list[str] = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines, often at the end
        cells = {name: (row[i].strip() if i < len(row) else "") for name, i in column.items()}
        if not cells["path"] or not cells["label"]:
            raise StageError("invalid_labels_csv", f"{where} line {line}: every row needs a path and a label")
        split = SPLIT_VALUES.get(cells.get("split", "train").lower())
        if split is None:
            raise StageError(
                "invalid_labels_csv",
                f"{where} line {line}: split must be train, valid or test, got {cells['split']!r}",
            )
        rel = safe_relative_path(cells["path"].removeprefix("./"), "")
        if rel is None or not (root / rel).is_file():
            unknown.append(f"line {line}: {cells['path']}")
            continue
        if str(rel) in seen:
            raise StageError(
                "invalid_labels_csv", f"{where} line {line}: {rel} is listed twice (first on line {seen[str(rel)]})"
            )
        seen[str(rel)] = line
        rows.append((Candidate(path=str(rel), label=cells["label"], line=line), split))
    if unknown:
        raise StageError(
            "invalid_labels_csv",
            f"{where} names {len(unknown)} file(s) that are not in {uri}: {'; '.join(unknown[:QUOTED])}"
            f"{'; …' if len(unknown) > QUOTED else ''}. Paths are relative to the prefix, e.g. images/cat_001.jpg "
            f"for {uri.rstrip('/')}/images/cat_001.jpg",
        )
    classes = sorted({c.label for c, _ in rows})
    if len(classes) < 2:
        raise _too_few_classes(uri, f"/{LABELS_CSV}", classes)
    splits: dict[str, list[Candidate]] = {}
    for candidate, split in rows:
        splits.setdefault(split, []).append(candidate)
    splits.setdefault("train", [])
    has_split = "split" in column
    source = f"{LABELS_CSV} (split=train)" if has_split else LABELS_CSV
    sources = {split: f"{LABELS_CSV} (split={split})" for split in splits} | {"train": source}
    return FoundLayout(layout="labels_csv", classes=classes, splits=splits, sources=sources, train_source=source)
