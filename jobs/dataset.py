"""A validated dataset as the stages after validation see it: the items of each split and the summary a job records.

Below the stages on purpose: features, the feature cache, test-time augmentation and the training loop all read
items, and none of them should depend on how validation found them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from jobs.layouts import Layout


class Item(BaseModel):
    path: str  # relative to the dataset root
    label: int


class SkippedFile(BaseModel):
    path: str
    reason: str


class SplitSummary(BaseModel):
    source: str  # where the split came from: "val/", "labels.csv (split column)", "carved 20% of train/ (...)"
    images: int


class DatasetSummary(BaseModel):
    layout: Layout
    classes: list[str]
    splits: dict[str, SplitSummary]  # train, valid and (when there is one) test
    counts: dict[str, dict[str, int]]  # split -> class -> images
    skipped: list[SkippedFile]  # the first 100
    num_skipped: int


class ValidatedDataset(BaseModel):
    root: Path
    summary: DatasetSummary
    train: list[Item]
    valid: list[Item]
    test: list[Item] = []  # held out: evaluated at the end, never used to pick an epoch or an LR
