"""The list of images a job trained and validated on, as a CSV artifact (`dataset.csv`: path,label,split).

The driver writes it once the dataset is validated (undecodable files already left out), so the split a job
used is on record exactly, carved or not. A dataset revision (core.revisions) starts from it: the revision's
`labels.csv` is this list with a person's marks applied, in the same columns `jobs.layouts` reads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from pydantic import BaseModel

DATASET_LISTING = "dataset.csv"
COLUMNS = ("path", "label", "split")


class ListedImage(BaseModel):
    path: str  # relative to the dataset's prefix
    label: str
    split: str  # train, valid or test


def listing_csv(images: Iterable[ListedImage]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for image in images:
        writer.writerow((image.path, image.label, image.split))
    return out.getvalue().encode()


def parse_listing(body: bytes) -> list[ListedImage]:
    rows = csv.DictReader(io.StringIO(body.decode("utf-8-sig")))
    return [ListedImage(path=row["path"], label=row["label"], split=row["split"]) for row in rows]
