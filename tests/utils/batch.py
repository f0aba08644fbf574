"""Helpers for end-to-end tests of batch predictions: inputs in S3, waiting for a run, its rows, Ray's task records."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from core.batch_output import ResultRow, decode_shard, written_shards
from core.spec import S3Location
from infra.local.sample_data import ensure_bucket
from infra.local.stack import LocalStack
from tests.utils.jobs import TERMINAL, poll


def upload_tree(s3: Any, root: Path, uri: str) -> list[str]:
    """Every file under `root` to `uri`/<relative path>, eight at a time; returns the objects' URIs, sorted."""
    location = S3Location.parse(uri)
    ensure_bucket(s3, location.bucket)
    files = sorted(p for p in root.rglob("*") if p.is_file())

    def put(path: Path) -> str:
        key = f"{location.prefix}{path.relative_to(root).as_posix()}"
        s3.put_object(Bucket=location.bucket, Key=key, Body=path.read_bytes())
        return f"s3://{location.bucket}/{key}"

    with ThreadPoolExecutor(8) as pool:
        return sorted(pool.map(put, files))


def submit_run(api: httpx.Client, model: str, input_uri: str, **body: Any) -> dict[str, Any]:
    answer = api.post(f"/v1/models/{model}/batch-predictions", json={"input_uri": input_uri, **body})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def wait_run(api: httpx.Client, run_id: str, timeout: float = 300) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/v1/batch-predictions/{run_id}").json()
        return run if run["status"] in TERMINAL else None

    return poll(ended, timeout, f"batch run {run_id} ending", interval=0.5)


def rows_of(s3: Any, run: dict[str, Any]) -> list[ResultRow]:
    """Every row the run wrote, in shard order."""
    output = S3Location.parse(run["params"]["output_uri"])
    rows: list[ResultRow] = []
    for _, name in sorted(written_shards(s3, output, run["params"]["format"]).items()):
        body = s3.get_object(Bucket=output.bucket, Key=f"{output.prefix}{name}")["Body"].read()
        rows += decode_shard(body, run["params"]["format"])
    return rows


def ray_tasks(stack: LocalStack, submission_id: str) -> list[dict[str, Any]]:
    """Ray's task records (the state API) of the Ray job a submission started: name, node_id, state …"""
    headers = {"Authorization": f"Bearer {stack.config.ray_token_file.read_text().strip()}"}
    base = stack.config.dashboard_url
    job = httpx.get(f"{base}/api/jobs/{submission_id}", headers=headers, timeout=10).raise_for_status().json()
    response = httpx.get(
        f"{base}/api/v0/tasks",
        params={
            "detail": "1",
            "limit": "10000",
            "filter_keys": "job_id",
            "filter_predicates": "=",
            "filter_values": job["job_id"],
        },
        headers=headers,
        timeout=30,
    ).raise_for_status()
    return list(response.json()["data"]["result"]["result"])
