"""`trainyard batch-predict` and `trainyard batch-predictions …` against the real API (Ray played by FakeLauncher)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner, Result

from core.spec import JobParams
from core.store import ModelRecord, new_id
from core.store.batch import BatchStore
from trainyard import Client
from trainyard.cli import app
from trainyard.cli.exit_codes import ExitCode

from .conftest import LiveApi

runner = CliRunner()


def _trainyard(api: LiveApi, *args: str) -> Result:
    return runner.invoke(app, ["--url", api.url, *args])


def add_model(api: LiveApi) -> str:
    job, _ = api.store.create_job(JobParams(dataset_uri="s3://bucket/pets", name="pets"), tenant="admin")
    model = ModelRecord(
        id=new_id("mdl"), job_id=job.id, artifact_uri="s3://trainyard-artifacts/m.pt", arch="efficientnet_lite0",
        classes=["cat", "dog"], created_at=datetime.now(UTC), name="pets",
    )  # fmt: skip
    assert api.store.succeed_with_model(job.id, model)
    return model.id


def test_every_batch_command_prints_json_and_the_run_goes_to_ray(live_api: LiveApi) -> None:
    model_id = add_model(live_api)
    submitted = _trainyard(live_api, "batch-predict", "pets", "s3://photos/new", "--top-k", "1", "--json")
    assert submitted.exit_code == 0, submitted.output
    run = json.loads(submitted.stdout)
    assert (run["status"], run["model"]["id"], run["params"]["top_k"]) == ("queued", model_id, 1)
    assert live_api.launcher.submitted == [run["id"]]
    for args in (("list",), ("list", "--status", "queued"), ("status", run["id"]), ("cancel", run["id"])):
        result = _trainyard(live_api, "batch-predictions", *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.stdout)
    assert json.loads(_trainyard(live_api, "batch-predictions", "status", run["id"], "--json").stdout)["status"] == (
        "cancelled"
    )


def test_waiting_for_a_failed_run_exits_1_and_an_unknown_run_exits_3(live_api: LiveApi) -> None:
    add_model(live_api)
    run = Client(url=live_api.url).batch_predict("pets", "s3://photos/new")
    BatchStore(live_api.store).fail(run.id, "no_images", "s3://photos/new holds no images")
    waited = _trainyard(live_api, "batch-predictions", "wait", run.id)
    assert waited.exit_code == ExitCode.JOB_FAILED
    assert "no_images: s3://photos/new holds no images" in waited.stdout
    unknown = _trainyard(live_api, "batch-predictions", "status", "bp-nope")
    assert unknown.exit_code == ExitCode.REFUSED and "no batch prediction with id 'bp-nope'" in unknown.stderr


def test_predict_refuses_a_folder_beside_files(live_api: LiveApi, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    result = _trainyard(live_api, "predict", "pets", str(tmp_path), str(image))
    assert result.exit_code == ExitCode.USAGE and "one folder, or image files" in result.stderr
