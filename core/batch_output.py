"""What a batch run writes under its `output_uri`: shards of result rows, then a manifest (and `_SUCCESS`).

    part-00000.jsonl … part-NNNNN.jsonl   one row per image, sorted by path within a shard
    manifest.json                         the run's outcome: succeeded, failed or cancelled, shards, scores
    _SUCCESS                              empty, only when the run succeeded (Spark's and Hadoop's convention)

Shard `i` holds the images `i * shard_size …` of the run's sorted image list (`core.batch_spec.BatchPlan`), so a
retry finds the shards an earlier attempt wrote by name and skips them. S3 writes an object whole or not at all:
a shard that exists is complete.

Columns: `path` (the image's s3:// URI), `prediction` (the top label), `labels` and `probabilities` (the top-k,
most probable first), `error` (why the file could not be scored, else null) and, for labelled input, `actual`.
CSV has no lists: there the top-k are columns `label_1, probability_1, …`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from core.batch_spec import BatchFormat, BatchScores
from core.spec import S3Location
from core.store.batch import BatchRecord

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
_SHARD = re.compile(r"^part-(\d{5})\.(jsonl|csv|parquet)$")
_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class ResultRow(BaseModel):
    path: str
    prediction: str | None
    labels: list[str]
    probabilities: list[float]
    error: str | None
    actual: str | None = None


class ShardInfo(BaseModel):
    name: str
    rows: int | None = None


class Manifest(BaseModel):
    run_id: str
    status: str
    attempt: int
    model_id: str
    input_uri: str
    format: BatchFormat
    top_k: int
    images: int | None
    rows: int | None
    errors: int | None
    shards: list[ShardInfo]
    scores: BatchScores | None = None
    message: str | None = None
    written_at: datetime


def shard_name(index: int, fmt: BatchFormat) -> str:
    return f"part-{index:05d}.{fmt}"


def encode_shard(rows: list[ResultRow], fmt: BatchFormat, top_k: int, labelled: bool) -> bytes:
    """The shard's bytes in `fmt`; rows are sorted by path so the same input always gives the same file."""
    ordered = sorted(rows, key=lambda r: r.path)
    exclude = None if labelled else {"actual"}
    if fmt == "jsonl":
        return "".join(r.model_dump_json(exclude=exclude) + "\n" for r in ordered).encode()
    if fmt == "csv":
        return _csv(ordered, top_k, labelled)
    columns = {
        "path": pa.array([r.path for r in ordered], pa.string()),
        "prediction": pa.array([r.prediction for r in ordered], pa.string()),
        "labels": pa.array([r.labels for r in ordered], pa.list_(pa.string())),
        "probabilities": pa.array([r.probabilities for r in ordered], pa.list_(pa.float64())),
        "error": pa.array([r.error for r in ordered], pa.string()),
    }
    if labelled:
        columns["actual"] = pa.array([r.actual for r in ordered], pa.string())
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def _csv(rows: list[ResultRow], top_k: int, labelled: bool) -> bytes:
    ranks = [f"{name}_{i}" for i in range(1, top_k + 1) for name in ("label", "probability")]
    header = ["path", "prediction", *ranks, "error", *(["actual"] if labelled else [])]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        top: list[Any] = []
        for i in range(top_k):
            has = i < len(row.labels)
            top += [row.labels[i] if has else "", row.probabilities[i] if has else ""]
        tail = [row.actual or ""] if labelled else []
        writer.writerow([row.path, row.prediction or "", *top, row.error or "", *tail])
    return text.getvalue().encode()


def decode_shard(data: bytes, fmt: BatchFormat) -> list[ResultRow]:
    """Rows of a shard written by `encode_shard` (a retry scores the shards an earlier attempt wrote)."""
    if fmt == "jsonl":
        return [ResultRow.model_validate_json(line) for line in data.decode().splitlines() if line]
    if fmt == "parquet":
        return [ResultRow.model_validate(r) for r in pq.read_table(io.BytesIO(data)).to_pylist()]
    rows = []
    for record in csv.DictReader(io.StringIO(data.decode())):
        ranks = range(1, sum(1 for key in record if key.startswith("label_")) + 1)
        labels = [record[f"label_{i}"] for i in ranks if record[f"label_{i}"]]
        probabilities = [float(record[f"probability_{i}"]) for i in ranks if record[f"probability_{i}"]]
        rows.append(
            ResultRow(
                path=record["path"],
                prediction=record["prediction"] or None,
                labels=labels,
                probabilities=probabilities,
                error=record["error"] or None,
                actual=record.get("actual") or None,
            )
        )
    return rows


def put(s3: Any, output: S3Location, name: str, body: bytes, content_type: str = "application/octet-stream") -> None:
    s3.put_object(Bucket=output.bucket, Key=f"{output.prefix}{name}", Body=body, ContentType=content_type)


def put_shard(s3: Any, output: S3Location, index: int, fmt: BatchFormat, body: bytes) -> None:
    put(s3, output, shard_name(index, fmt), body, _CONTENT_TYPES[fmt])


def _keys(s3: Any, output: S3Location) -> Iterable[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=output.bucket, Prefix=output.prefix):
        for item in page.get("Contents", []):
            yield item["Key"][len(output.prefix) :]


def written_shards(s3: Any, output: S3Location, fmt: BatchFormat) -> dict[int, str]:
    """Shard index -> name of every shard of format `fmt` already under `output`."""
    found = {}
    for name in _keys(s3, output):
        match = _SHARD.match(name)
        if match and match.group(2) == fmt:
            found[int(match.group(1))] = name
    return found


def holds_objects(s3: Any, output: S3Location) -> bool:
    answer = s3.list_objects_v2(Bucket=output.bucket, Prefix=output.prefix, MaxKeys=1)
    return bool(answer.get("Contents"))


def clear_outcome(s3: Any, output: S3Location) -> None:
    """Remove an earlier attempt's manifest and `_SUCCESS`: until this attempt ends, the output says nothing."""
    s3.delete_objects(
        Bucket=output.bucket, Delete={"Objects": [{"Key": f"{output.prefix}{n}"} for n in (MANIFEST, SUCCESS)]}
    )


def write_manifest(s3: Any, output: S3Location, manifest: Manifest) -> None:
    """The manifest, then `_SUCCESS` when the run succeeded: a reader that sees `_SUCCESS` sees a whole output."""
    put(s3, output, MANIFEST, manifest.model_dump_json(indent=2).encode(), "application/json")
    if manifest.status == "succeeded":
        put(s3, output, SUCCESS, b"")


def now() -> datetime:
    return datetime.now(UTC)


def read_manifest(s3: Any, output: S3Location) -> Manifest:
    body = s3.get_object(Bucket=output.bucket, Key=f"{output.prefix}{MANIFEST}")["Body"].read()
    return Manifest.model_validate(json.loads(body))


def manifest_of(
    run: BatchRecord,
    status: str,
    shards: list[ShardInfo],
    *,
    rows: int | None = None,
    errors: int | None = None,
    scores: BatchScores | None = None,
    message: str | None = None,
) -> Manifest:
    return Manifest(
        run_id=run.id,
        status=status,
        attempt=run.attempt,
        model_id=run.model_id,
        input_uri=run.params.input_uri,
        format=run.params.format,
        top_k=run.params.top_k,
        images=run.images_total,
        rows=rows,
        errors=errors,
        shards=sorted(shards, key=lambda s: s.name),
        scores=scores,
        message=message,
        written_at=now(),
    )


def write_ending(s3: Any, run: BatchRecord, status: str, message: str) -> None:
    """The manifest of a run that did not succeed (cancelled, failed), naming the shards written so far."""
    output = S3Location.parse(run.output_uri)
    written = written_shards(s3, output, run.params.format)
    shards = [ShardInfo(name=name) for name in written.values()]
    write_manifest(s3, output, manifest_of(run, status, shards, message=message))
