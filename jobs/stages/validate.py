"""Stage 2: check the image-folder layout and that every image decodes.

Undecodable or non-image files are skipped and counted; too many of them fail the job with the list,
because a dataset that is mostly broken is a mistake the user wants to hear about, not silently train on.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from pydantic import BaseModel

from jobs.errors import StageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "valid")


class Item(BaseModel):
    path: str  # relative to the dataset root
    label: int


class SkippedFile(BaseModel):
    path: str
    reason: str


class DatasetSummary(BaseModel):
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    skipped: list[SkippedFile]  # the first 100
    num_skipped: int


class ValidatedDataset(BaseModel):
    root: Path
    summary: DatasetSummary
    train: list[Item]
    valid: list[Item]


def _check_image(path: Path) -> str | None:
    """None if the file decodes as an image, else why not."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'!r})"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, enough to prove it is intact
            image.load()
    except Exception as exc:  # PIL raises a zoo of types for corrupt files
        return f"cannot be decoded ({type(exc).__name__})"
    return None


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def validate_dataset(root: Path, uri: str, max_bad_fraction: float) -> ValidatedDataset:
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        found = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
        raise StageError(
            "invalid_layout",
            f"{uri} must contain train/<class>/ and valid/<class>/ folders; missing {', '.join(missing)}/ "
            f"(found at the top: {', '.join(found[:10]) or 'nothing'})",
        )
    classes = _class_dirs(root / "train")
    valid_classes = _class_dirs(root / "valid")
    if len(classes) < 2:
        raise StageError(
            "too_few_classes",
            f"{uri}/train has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classifier needs "
            "at least 2, one folder per class: train/<class>/*",
        )
    if classes != valid_classes:
        only_train = sorted(set(classes) - set(valid_classes))
        only_valid = sorted(set(valid_classes) - set(classes))
        raise StageError(
            "class_mismatch",
            f"{uri}: train and valid must have the same class folders; only in train: {only_train or 'none'}, "
            f"only in valid: {only_valid or 'none'}",
        )

    items: dict[str, list[Item]] = {split: [] for split in SPLITS}
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    skipped: list[SkippedFile] = []
    total = 0
    for split in SPLITS:
        for label, name in enumerate(classes):
            files = sorted(p for p in (root / split / name).rglob("*") if p.is_file() and not p.name.startswith("."))
            good = 0
            for path in files:
                total += 1
                rel = str(path.relative_to(root))
                reason = _check_image(path)
                if reason is None:
                    items[split].append(Item(path=rel, label=label))
                    good += 1
                else:
                    skipped.append(SkippedFile(path=rel, reason=reason))
            counts[split][name] = good

    if total and len(skipped) / total > max_bad_fraction:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:20])
        raise StageError(
            "too_many_bad_images",
            f"{len(skipped)} of {total} files in {uri} are not usable images (limit {max_bad_fraction:.0%}): {listed}",
        )
    empty = [f"{split}/{name}" for split in SPLITS for name, n in counts[split].items() if n == 0]
    if empty:
        raise StageError("empty_class", f"{uri}: these class folders have no usable images: {', '.join(empty)}")
    return ValidatedDataset(
        root=root,
        summary=DatasetSummary(classes=classes, counts=counts, skipped=skipped[:100], num_skipped=len(skipped)),
        train=items["train"],
        valid=items["valid"],
    )
