"""Stage 2: find the dataset's layout, check that every image decodes, and settle the splits.

Datasets arrive as users have them (see `jobs.layouts`): `train/` with `valid/`, `val/` or `validation/`
(and an optional held-out `test/`), `train/` alone, class folders at the top, or a `labels.csv`. Without a
validation split, a seeded, stratified `valid_pct` of the training images becomes one, and the summary says so.

Undecodable or non-image files are skipped and counted; too many of them fail the job with the list,
because a dataset that is mostly broken is a mistake the user wants to hear about, not silently train on.
"""

from __future__ import annotations

import random
import warnings
from collections import defaultdict
from pathlib import Path

from PIL import Image

from core.limits import MAX_IMAGE_PIXELS
from jobs.dataset import DatasetSummary, Item, SkippedFile, SplitSummary, ValidatedDataset
from jobs.errors import StageError
from jobs.layouts import IMAGE_SUFFIXES, Candidate, FoundLayout, find_layout

# At most this many lines of a labels.csv are quoted in one error message.
QUOTED_LINES = 5


def _check_image(path: Path) -> str | None:
    """None if the file decodes as an image, else why not."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'!r})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    too_large = f"too large to decode (over {MAX_IMAGE_PIXELS:,} pixels)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                # Checked before decoding: a few KB of PNG can claim gigapixels (a decompression bomb), and
                # PIL alone only warns up to twice its limit.
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    return f"{too_large}: {image.width}×{image.height}"
                image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, enough to prove it is intact
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return too_large
    except Exception as exc:  # PIL raises a zoo of types for corrupt files
        return f"cannot be decoded ({type(exc).__name__})"
    return None


def _pixels(path: Path) -> tuple[int, int] | None:
    """The image's size from its header (nothing decoded), or None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # unreadable files are _check_image's to report
        return None


def _check_dimensions(root: Path, paths: list[str], uri: str, max_pixels: int) -> None:
    too_large = []
    for rel in paths:
        size = _pixels(root / rel)
        if size is not None and size[0] * size[1] > max_pixels:
            too_large.append(f"{rel} ({size[0]}x{size[1]})")
    if too_large:
        listed = "; ".join(too_large[:10]) + (" …" if len(too_large) > 10 else "")
        raise StageError(
            "image_too_large",
            f"{len(too_large)} image(s) in {uri} exceed {max_pixels:,} pixels, the limit per image "
            f"(TRAINYARD_MAX_IMAGE_PIXELS): {listed}; resize them (training uses image_size pixels anyway), "
            "or ask the operator to raise the limit",
        )


def carve_validation(
    items: list[Item], classes: list[str], valid_pct: float, seed: int, source: str
) -> tuple[list[Item], list[Item]]:
    """Split `items` into (train, valid): `valid_pct` of each class, at least one image on each side.

    Stratified by hand rather than with scikit-learn's `train_test_split`, which neither guarantees both
    sides of every class an image nor is a runtime dependency here. Seeded: a retry gets the same split.
    """
    by_class: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_class[item.label].append(item)
    rng = random.Random(seed)
    valid_paths: set[str] = set()
    for label, name in enumerate(classes):
        members = sorted(by_class[label], key=lambda i: i.path)
        if len(members) < 2:
            raise StageError(
                "too_few_images_to_split",
                f"class {name!r} in {source} has {len(members)} usable image(s); the automatic {valid_pct:.0%} "
                "validation split needs at least 2 per class so both sides keep one: add images to that class, "
                "or provide the validation images yourself (a valid/ folder, or a split column in labels.csv)",
            )
        rng.shuffle(members)
        take = min(len(members) - 1, max(1, round(len(members) * valid_pct)))
        valid_paths.update(item.path for item in members[:take])
    return [i for i in items if i.path not in valid_paths], [i for i in items if i.path in valid_paths]


def _lines(candidates: list[Candidate]) -> str:
    numbers = [str(c.line) for c in candidates if c.line is not None][:QUOTED_LINES]
    more = "…" if len(candidates) > QUOTED_LINES else ""
    return f" (labels.csv lines {', '.join(numbers)}{more})" if numbers else ""


def validate_dataset(
    root: Path,
    uri: str,
    max_bad_fraction: float,
    valid_pct: float = 0.2,
    seed: int = 0,
    max_image_pixels: int | None = None,
) -> ValidatedDataset:
    """With `max_image_pixels`, an image larger than that (read from its header) fails the job before decoding."""
    found: FoundLayout = find_layout(root, uri)
    if max_image_pixels is not None:
        # Checked before any decode: a decompression bomb must not be expanded to find out it is one.
        paths = [c.path for candidates in found.splits.values() for c in candidates]
        _check_dimensions(root, paths, uri, max_image_pixels)
    classes = found.classes
    label_of = {name: index for index, name in enumerate(classes)}

    items: dict[str, list[Item]] = {split: [] for split in found.splits}
    unusable: dict[tuple[str, str], list[Candidate]] = defaultdict(list)  # (split, class) -> skipped candidates
    skipped: list[SkippedFile] = []
    total = 0
    for split, candidates in found.splits.items():
        for candidate in candidates:
            total += 1
            reason = _check_image(root / candidate.path)
            if reason is None:
                items[split].append(Item(path=candidate.path, label=label_of[candidate.label]))
            else:
                skipped.append(SkippedFile(path=candidate.path, reason=reason))
                unusable[(split, candidate.label)].append(candidate)

    if total and len(skipped) / total > max_bad_fraction:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:20])
        raise StageError(
            "too_many_bad_images",
            f"{len(skipped)} of {total} files in {uri} are not usable images (limit {max_bad_fraction:.0%}): {listed}",
        )

    counts = {split: {name: 0 for name in classes} for split in items}
    for split, split_items in items.items():
        for item in split_items:
            counts[split][classes[item.label]] += 1
    # Every class needs training images, and an explicit validation split needs every class too (as folders
    # require); a held-out test split may lack some.
    required = [split for split in ("train", "valid") if split in items]
    empty = [(split, name) for split in required for name in classes if counts[split][name] == 0]
    if empty:
        rows_of = defaultdict(list)  # a labels.csv class without usable images: quote where it was named
        for candidates in found.splits.values():
            for candidate in candidates:
                rows_of[candidate.label].append(candidate)
        where = ", ".join(
            f"{found.describe(split, name)}{_lines(unusable[(split, name)] or rows_of[name])}"
            for split, name in empty[:10]
        )
        raise StageError(
            "empty_class",
            f"{uri}: these classes have no usable images: {where}; add images or remove the class",
        )

    sources = dict(found.sources)
    if "valid" not in items:
        items["train"], items["valid"] = carve_validation(items["train"], classes, valid_pct, seed, found.train_source)
        sources["valid"] = f"carved {valid_pct:.0%} of {found.train_source} (stratified, seed {seed})"
        sources["train"] = f"the rest of {found.train_source}"
        for split in ("train", "valid"):
            counts[split] = {name: 0 for name in classes}
            for item in items[split]:
                counts[split][classes[item.label]] += 1

    order = [split for split in ("train", "valid", "test") if split in items]
    return ValidatedDataset(
        root=root,
        summary=DatasetSummary(
            layout=found.layout,
            classes=classes,
            splits={split: SplitSummary(source=sources[split], images=len(items[split])) for split in order},
            counts={split: counts[split] for split in order},
            skipped=skipped[:100],
            num_skipped=len(skipped),
        ),
        train=items["train"],
        valid=items["valid"],
        test=items.get("test", []),
    )
