"""A batch run's shards in each format: one row per image, sorted, read back exactly as written."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from core.batch_output import ResultRow, decode_shard, encode_shard, shard_name

ROWS = [
    ResultRow(path="s3://in/b.png", prediction="cat", labels=["cat", "dog"], probabilities=[0.9, 0.1], error=None,
              actual="dog"),
    ResultRow(path="s3://in/a.png", prediction=None, labels=[], probabilities=[], error="not a decodable image",
              actual="cat"),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_shard_reads_back_as_written_sorted_by_path(fmt: str) -> None:
    data = encode_shard(ROWS, fmt, top_k=2, labelled=True)  # type: ignore[arg-type]
    assert decode_shard(data, fmt) == sorted(ROWS, key=lambda r: r.path)  # type: ignore[arg-type]


def test_each_format_has_the_documented_columns() -> None:
    lines = encode_shard(ROWS, "jsonl", top_k=2, labelled=False).decode().splitlines()
    assert [json.loads(line) for line in lines][1] == {
        "path": "s3://in/b.png", "prediction": "cat", "labels": ["cat", "dog"], "probabilities": [0.9, 0.1],
        "error": None,
    }  # fmt: skip
    header = next(csv.reader(io.StringIO(encode_shard(ROWS, "csv", top_k=2, labelled=True).decode())))
    assert header == ["path", "prediction", "label_1", "probability_1", "label_2", "probability_2", "error", "actual"]
    table = pq.read_table(io.BytesIO(encode_shard(ROWS, "parquet", top_k=2, labelled=False)))
    assert table.column_names == ["path", "prediction", "labels", "probabilities", "error"]
    assert table.num_rows == 2


def test_shard_names_sort_in_shard_order() -> None:
    names = [shard_name(i, "parquet") for i in (0, 9, 10, 12345)]
    assert names == sorted(names) and names[0] == "part-00000.parquet"
