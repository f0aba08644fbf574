"""Batch predictions with a trained model on the shared stack: `trainyard predict MODEL ./folder` on the validation
images of the session's finished job runs one batch, whose accuracy and confusion matrix must be the evaluate
stage's, and whose rows must be what the deployed endpoint answers for the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from core.s3 import s3_client
from core.spec import S3Location
from tests.utils.jobs import FinishedJob
from trainyard.cli import app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished(finished_job: FinishedJob) -> dict[str, Any]:
    """A trained, deployed model and its job (its evaluation is what the batch run must agree with): the session's
    finished job, only read here."""
    assert finished_job.job["status"] == "succeeded", finished_job.job["error"]
    return finished_job.job


def download(uri: str, folder: Path) -> list[Path]:
    s3, location = s3_client(), S3Location.parse(uri)
    paths = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.prefix):
        for item in page.get("Contents", []):
            path = folder / item["Key"].removeprefix(location.prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=location.bucket, Key=item["Key"])["Body"].read())
            paths.append(path)
    return paths


def test_a_folder_runs_as_one_batch_with_the_evaluate_stage_scores_and_the_endpoints_answers(
    stack_api: httpx.Client, finished: dict[str, Any], tmp_path: Path
) -> None:
    model_id = finished["model"]["id"]
    valid = tmp_path / "valid"
    images = download(f"{finished['params']['dataset_uri']}/valid/", valid)
    assert len(images) == finished["evaluation"]["images"] > 8, "more than a handful: a batch run"

    result = CliRunner().invoke(app, ["predict", model_id, str(valid), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert sorted(a["image"] for a in printed["results"]) == sorted(str(p) for p in images)

    run = stack_api.get("/v1/batch-predictions", params={"limit": 1}).json()["batch_predictions"][0]
    assert run["status"] == "succeeded" and run["model"]["id"] == model_id, run["error"]
    evaluation = finished["evaluation"]
    assert run["scores"]["accuracy"] == evaluation["accuracy"]
    assert run["scores"]["confusion_matrix"] == evaluation["confusion_matrix"]
    assert run["scores"]["classes"] == evaluation["classes"]

    for answer in printed["results"][:3]:
        served = stack_api.post(f"/v1/models/{model_id}/predict", content=Path(answer["image"]).read_bytes())
        assert served.status_code == 200, served.text
        top = served.json()["predictions"]
        assert [p["label"] for p in top] == [p["label"] for p in answer["predictions"]]
        for mine, theirs in zip(answer["predictions"], top, strict=True):
            assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4)
