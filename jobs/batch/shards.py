"""The driver's side of the output: rows gathered per shard, each shard written once it is whole, and the scores.

Rows reach the driver in whatever order the actors finish their blocks; a shard is written as soon as all of
its images have come back, so a run that dies keeps every finished shard and a retry skips them.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from core.batch_output import ResultRow, ShardInfo, decode_shard, encode_shard, put_shard, shard_name
from core.batch_spec import BatchFormat, BatchScores
from core.spec import S3Location

# Images per shard: small inputs still split into a few shards (what a retry can skip), large ones into at most a
# few hundred files.
MIN_SHARD = 256
MAX_SHARD = 4096
TARGET_SHARDS = 256


def shard_size_for(images: int) -> int:
    return min(MAX_SHARD, max(MIN_SHARD, math.ceil(images / TARGET_SHARDS)))


class Tally:
    """Accuracy and the confusion matrix over the labelled rows whose label is one of the model's classes."""

    def __init__(self, classes: list[str]) -> None:
        self.classes = classes
        self._index = {name: i for i, name in enumerate(classes)}
        self.confusion = [[0] * len(classes) for _ in classes]
        self.unknown = 0

    def add(self, row: ResultRow) -> None:
        if row.actual is None or row.prediction is None:
            return  # unlabelled, or not scored (its error is in the row)
        actual = self._index.get(row.actual)
        if actual is None:
            self.unknown += 1
            return
        self.confusion[actual][self._index[row.prediction]] += 1

    def scores(self) -> BatchScores:
        images = sum(map(sum, self.confusion))
        correct = sum(self.confusion[i][i] for i in range(len(self.classes)))
        return BatchScores(
            # Rounded as the evaluate stage rounds its accuracy, so the two compare equal on the same images.
            accuracy=round(correct / images, 5) if images else 0.0,
            correct=correct,
            images=images,
            classes=self.classes,
            confusion_matrix=self.confusion,
            unknown_labels=self.unknown,
        )


class ShardWriter:
    """Gathers result rows per shard and writes each shard to S3 once every one of its images is in."""

    def __init__(
        self, s3: Any, output: S3Location, fmt: BatchFormat, top_k: int, labelled: bool, expected: dict[int, int]
    ) -> None:
        self.s3, self.output, self.fmt, self.top_k, self.labelled = s3, output, fmt, top_k, labelled
        self.expected = expected  # shard -> its number of images, for the shards this attempt writes
        self.gathering: dict[int, list[ResultRow]] = {}
        self.written: list[ShardInfo] = []
        self.rows = 0
        self.errors = 0

    def add(self, batch: pa.Table, tally: Tally) -> int:
        """Take a batch of scored rows; returns how many rows it held."""
        for record in batch.to_pylist():
            row = ResultRow(
                path=record["uri"],
                prediction=record["labels"][0] if record["labels"] else None,
                labels=record["labels"],
                probabilities=record["probabilities"],
                error=record["error"],
                actual=record["label"],
            )
            tally.add(row)
            shard = record["shard"]
            rows = self.gathering.setdefault(shard, [])
            rows.append(row)
            if len(rows) == self.expected[shard]:
                self._write(shard, self.gathering.pop(shard))
        return batch.num_rows

    def _write(self, shard: int, rows: list[ResultRow]) -> None:
        put_shard(self.s3, self.output, shard, self.fmt, encode_shard(rows, self.fmt, self.top_k, self.labelled))
        self.written.append(ShardInfo(name=shard_name(shard, self.fmt), rows=len(rows)))
        self.rows += len(rows)
        self.errors += sum(1 for row in rows if row.error)

    @property
    def complete(self) -> bool:
        return not self.gathering and len(self.written) == len(self.expected)


def read_back(s3: Any, output: S3Location, name: str, fmt: BatchFormat) -> list[ResultRow]:
    """The rows of a shard an earlier attempt wrote."""
    body = s3.get_object(Bucket=output.bucket, Key=f"{output.prefix}{name}")["Body"].read()
    return decode_shard(body, fmt)
