"""The MLflow mirror against a real `mlflow server` on loopback: what a job's run holds, the registered versions
and their aliases, and what an outage does. The jobs progress as their drivers record them: through the store.

The real pipeline with a real job (and the server stopped mid-job) is tests/e2e/test_integrations.py.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from PIL import Image

from core.settings import Settings
from core.spec import JobParams, Phase
from core.store import JobRecord, JobStore, ModelRecord
from service.tracking.mirror import Mirror
from tests.utils.mlflow_server import MlflowServer
from tests.utils.schema import migrated

BUCKET = "trainyard-artifacts"
SWEEP = {
    "suggested_lr": 0.01,
    "chosen_lr": 0.01,
    "method": "valley",
    "lrs": [1e-5, 1e-4, 1e-3],
    "losses": [1.1, 0.9, 0.6],
}
EVALUATION = {
    "accuracy": 0.9,
    "loss": 0.31,
    "classes": ["cat", "dog"],
    "confusion_matrix": [[5, 0], [1, 4]],
    "per_class": {
        "cat": {"precision": 0.83, "recall": 1.0, "support": 5},
        "dog": {"precision": 1.0, "recall": 0.8, "support": 5},
    },
    "most_wrong": [],
    "least_certain": [],
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'trainyard.db'}"
    migrated(url)
    store = JobStore.from_url(url)
    yield store
    store.engine.dispose()


@pytest.fixture
def mlflow(mlflow_server: MlflowServer) -> MlflowClient:
    mlflow_server.wait_ready()
    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


def mirror_of(store: JobStore, uri: str, tmp_path: Path, **settings: Any) -> Mirror:
    return Mirror(
        store, Settings(home=tmp_path, database_url=str(store.engine.url), mlflow_tracking_uri=uri, **settings)
    )


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def running_job(store: JobStore, s3: Any, name: str | None, tenant: str = "admin") -> JobRecord:
    """A job in training, as its driver leaves it: the sweep done, its plot written, two head-only epochs."""
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/pets", name=name, epochs=3), tenant=tenant)
    store.set_phase(job.id, Phase.training, 0.4)
    store.set_result(job.id, "lr_sweep", SWEEP)
    s3.put_object(Bucket=BUCKET, Key=f"jobs/{job.id}/lr_sweep.png", Body=png())
    store.set_result(job.id, "artifacts", {"lr_sweep.png": f"s3://{BUCKET}/jobs/{job.id}/lr_sweep.png"})
    for epoch, accuracy in ((1, 0.7), (2, 0.8)):
        store.add_epoch(
            job.id,
            {"epoch": epoch, "stage": "frozen", "train_loss": 1 - accuracy, "valid_loss": 0.5, "accuracy": accuracy},
        )
    found = store.get_job(job.id)
    assert found is not None
    return found


def succeed(store: JobStore, s3: Any, job: JobRecord, exports_built: bool = True) -> str:
    """The rest of the job: a third epoch, the evaluation, the model and its exports (or, with `exports_built`
    false, the exports announced and not yet there, as in the seconds after a job succeeded), deployed; returns
    the model id."""
    store.add_epoch(
        job.id, {"epoch": 3, "stage": "unfrozen", "train_loss": 0.1, "valid_loss": 0.3, "accuracy": 0.9, "seconds": 4.2}
    )
    store.set_result(job.id, "evaluation", EVALUATION)
    prefix = f"jobs/{job.id}"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/model.pt", Body=b"trainyard weights")
    write_exports(s3, job, built=exports_built)
    artifacts = {"lr_sweep.png": f"s3://{BUCKET}/{prefix}/lr_sweep.png", "model.pt": f"s3://{BUCKET}/{prefix}/model.pt"}
    store.set_result(job.id, "artifacts", artifacts)
    model_id = job.id.replace("job-", "mdl-")
    record = ModelRecord(
        id=model_id,
        job_id=job.id,
        artifact_uri=artifacts["model.pt"],
        arch="resnet18",
        classes=["cat", "dog"],
        created_at=datetime.now(UTC),
        name=job.name,
    )
    assert store.succeed_with_model(job.id, record)
    return model_id


def write_exports(s3: Any, job: JobRecord, built: bool = True) -> None:
    """The model's exports as the driver writes them: built, or (`built` false) announced and not there yet."""
    folder = f"jobs/{job.id}/export"
    manifest: dict[str, Any] = {"classes": ["cat", "dog"], "files": {}, "building_since": datetime.now(UTC).isoformat()}
    if built:
        s3.put_object(Bucket=BUCKET, Key=f"{folder}/model.onnx", Body=b"onnx bytes")
        manifest = {"classes": ["cat", "dog"], "files": {"onnx": "model.onnx"}, "onnx_version": "1.23.2"}
    s3.put_object(Bucket=BUCKET, Key=f"{folder}/preprocessing.json", Body=json.dumps(manifest).encode())


def run_of(mlflow: MlflowClient, job_id: str) -> Any:
    (run,) = mlflow.search_runs(
        [mlflow.get_experiment_by_name("trainyard").experiment_id], f"tags.`trainyard.job_id` = '{job_id}'"
    )
    return run


def kinds(store: JobStore, job_id: str) -> list[str]:
    return [e.kind for e in store.events(job_id) if e.kind.startswith("tracking")]


def test_a_job_becomes_a_run_as_it_goes_and_its_model_a_registered_version(
    store: JobStore, s3: Any, mlflow: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    name = f"pets-{secrets.token_hex(3)}"
    job = running_job(store, s3, name)
    mirror = mirror_of(store, mlflow_server.url, tmp_path)
    mirror.run_once()

    run = run_of(mlflow, job.id)  # while the job trains: what it has so far
    assert run.info.status == "RUNNING" and run.info.run_name == name
    assert run.data.params["epochs"] == "3" and run.data.params["lr_sweep.method"] == "range_test"
    assert run.data.params["chosen_lr"] == "0.01"
    assert [(m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "accuracy")] == [(1, 0.7), (2, 0.8)]
    assert [m.value for m in mlflow.get_metric_history(run.info.run_id, "lr_sweep_loss")] == SWEEP["losses"]

    model_id = succeed(store, s3, job)
    mirror.run_once()
    run = run_of(mlflow, job.id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "accuracy")] == [1, 2, 3]  # not logged twice
    assert run.data.metrics["final_accuracy"] == 0.9 and run.data.metrics["epoch_seconds"] == 4.2
    files = {f.path for f in mlflow.list_artifacts(run.info.run_id)}
    assert {"plots", "report.html", "evaluation.json", "model"} <= files
    assert {f.path for f in mlflow.list_artifacts(run.info.run_id, "model")} == {
        "model/MLmodel", "model/model.onnx", "model/preprocessing.json", "model/requirements.txt"
    }  # fmt: skip
    (version,) = mlflow.search_model_versions(f"name='{name}'")
    assert version.run_id == run.info.run_id and version.tags["trainyard.model_id"] == model_id
    assert version.tags["trainyard.version"] == "1"
    assert mlflow.get_registered_model(name).tags["trainyard.tenant"] == "admin"
    assert kinds(store, job.id) == ["tracking"]
    mirror.run_once()
    assert len(mlflow.search_model_versions(f"name='{name}'")) == 1  # a closed run is left alone


def test_an_outage_warns_the_job_once_and_its_run_catches_up(
    store: JobStore, s3: Any, mlflow: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path, closed_port: int
) -> None:
    job = running_job(store, s3, f"pets-{secrets.token_hex(3)}")
    down = mirror_of(store, f"http://127.0.0.1:{closed_port}", tmp_path)
    down.run_once()
    succeed(store, s3, job)  # the job goes on, and ends, while MLflow is down
    status = down.runs.status(job.id)
    assert status is not None and status["failures"] == 1 and status["last_error"] == "connection refused"
    (warning,) = [e for e in store.events(job.id) if e.kind == "tracking_unavailable"]
    assert "did not answer (connection refused)" in warning.message and "the job is not affected" in warning.message

    # MLflow answers again (the next API's mirror, after the backoff): the run catches up with everything.
    with store.engine.begin() as conn:  # no need to wait out the 5 s backoff in a test
        conn.exec_driver_sql("UPDATE mlflow_runs SET next_try_at = NULL")
    back = mirror_of(store, mlflow_server.url, tmp_path)
    back.run_once()
    run = run_of(mlflow, job.id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "accuracy")] == [1, 2, 3]
    assert len(mlflow.search_model_versions(f"name='{job.name}'")) == 1
    assert kinds(store, job.id) == ["tracking_unavailable", "tracking_resumed", "tracking"]


def test_aliases_follow_trainyard_and_a_move_follows_on_the_next_pass(
    store: JobStore, s3: Any, mlflow: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    name = f"pets-{secrets.token_hex(3)}"
    mirror = mirror_of(store, mlflow_server.url, tmp_path)
    first, second = (succeed(store, s3, running_job(store, s3, name)) for _ in range(2))
    store.set_alias(name, "production", first, "admin")  # moved before MLflow heard of it: the first pass mirrors it
    mirror.run_once()
    registered = mlflow.get_registered_model(name)
    assert registered.aliases == {"production": "1"}  # `latest` is MLflow's own (models:/name/latest)
    assert [v.version for v in mlflow.search_model_versions(f"name='{name}'")] == ["2", "1"]

    store.set_alias(name, "production", second, "admin")
    mirror.alias_moved("admin", name)  # what POST /v1/models/{name}/aliases/{alias} calls
    mirror.run_once()
    assert mlflow.get_registered_model(name).aliases == {"production": "2"}


def test_a_name_of_another_tenant_and_an_unnamed_job_are_not_registered_and_say_why(
    store: JobStore, s3: Any, mlflow: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    name = f"shared-{secrets.token_hex(3)}"
    mirror = mirror_of(store, mlflow_server.url, tmp_path)
    ours = running_job(store, s3, name, tenant="team-a")
    theirs = running_job(store, s3, name, tenant="team-b")
    unnamed = running_job(store, s3, None)
    for job in (ours, theirs, unnamed):
        succeed(store, s3, job)
        mirror.run_once()
    assert [v.tags["trainyard.job_id"] for v in mlflow.search_model_versions(f"name='{name}'")] == [ours.id]
    (refused,) = [e for e in store.events(theirs.id) if e.kind == "tracking_skipped"]
    assert "belongs to another tenant ('team-a')" in refused.message and "{tenant}.{name}" in refused.message
    (unnamed_event,) = [e for e in store.events(unnamed.id) if e.kind == "tracking_skipped"]
    assert "has no `name`" in unnamed_event.message
    assert all(run_of(mlflow, job.id).info.status == "FINISHED" for job in (theirs, unnamed))  # runs all the same

    per_tenant = mirror_of(store, mlflow_server.url, tmp_path, mlflow_model_name="{tenant}.{name}")
    again = running_job(store, s3, name, tenant="team-b")
    succeed(store, s3, again)
    per_tenant.run_once()
    assert len(mlflow.search_model_versions(f"name='team-b.{name}'")) == 1


def test_a_retried_job_reopens_its_run_and_ends_it_again(
    store: JobStore, s3: Any, mlflow: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    job = running_job(store, s3, f"pets-{secrets.token_hex(3)}")
    mirror = mirror_of(store, mlflow_server.url, tmp_path)
    store.fail(job.id, "driver_died", "the driver process died during training")
    mirror.run_once()
    assert run_of(mlflow, job.id).info.status == "FAILED"
    assert mlflow.search_model_versions(f"name='{job.name}'") == []

    retried = store.retry(job.id)  # attempt 2, on the same run
    assert retried is not None
    store.set_phase(job.id, Phase.training, 0.5)
    mirror.run_once()
    assert run_of(mlflow, job.id).info.status == "RUNNING"
    succeed(store, s3, job)
    mirror.run_once()
    run = run_of(mlflow, job.id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "accuracy")] == [1, 2, 3]
    assert len(mlflow.search_model_versions(f"name='{job.name}'")) == 1


def test_the_model_is_logged_once_its_exports_are_built(
    store: JobStore, s3: Any, mlflow: MlflowClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    job = running_job(store, s3, f"pets-{secrets.token_hex(3)}")
    mirror = mirror_of(store, mlflow_server.url, tmp_path)
    succeed(store, s3, job, exports_built=False)
    mirror.run_once()
    run = run_of(mlflow, job.id)
    assert run.info.status == "RUNNING" and "model" not in {f.path for f in mlflow.list_artifacts(run.info.run_id)}
    assert mlflow.search_model_versions(f"name='{job.name}'") == []

    write_exports(s3, job)  # the driver has built them
    mirror.run_once()
    assert run_of(mlflow, job.id).info.status == "FINISHED"
    assert len(mlflow.search_model_versions(f"name='{job.name}'")) == 1
