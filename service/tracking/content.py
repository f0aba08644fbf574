"""What a job's record becomes in its MLflow run: parameters, metrics and files.

Every function takes an `MlflowClient` and raises what it raises; `service.tracking.mirror` decides what a
failure means. Metric names: per epoch `train_loss`, `valid_loss`, `accuracy`, `epoch_seconds`,
`images_per_second`, `image_size` (step = the epoch); the LR sweep's curve as `lr_sweep_loss` and
`lr_sweep_lr` (step = the sweep's step); the evaluation as `final_accuracy`, `final_loss` and, when the job
had them, `final_tta_accuracy`, `final_test_accuracy`, `final_test_loss`.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from core.spec import JobStatus
from core.store import JobRecord

TAG_JOB = "trainyard.job_id"
TAG_TENANT = "trainyard.tenant"
TAG_MODEL = "trainyard.model_id"
TAG_VERSION = "trainyard.version"
EPOCH_METRICS = {
    "train_loss": "train_loss",
    "valid_loss": "valid_loss",
    "accuracy": "accuracy",
    "seconds": "epoch_seconds",
    "images_per_second": "images_per_second",
    "image_size": "image_size",
}
RUN_STATUS = {JobStatus.succeeded: "FINISHED", JobStatus.failed: "FAILED", JobStatus.cancelled: "KILLED"}
# MLflow's own batch limit is 1000 metrics per call.
BATCH = 1000


def millis(at: datetime | None) -> int:
    return int((at.timestamp() if at is not None else time.time()) * 1000)


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested job parameters as MLflow's flat string params (`lr_sweep.method`); unset ones are left out."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat |= flat_params(value, f"{prefix}{key}.")
        elif value is not None:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def start_run(client: Any, experiment_id: str, job: JobRecord, public_url: str) -> str:
    url = f"{public_url.rstrip('/')}/v1/jobs/{job.id}"
    tags = {TAG_JOB: job.id, TAG_TENANT: job.tenant or "", "trainyard.url": url}
    started = millis(job.started_at or job.created_at)
    run = client.create_run(experiment_id, start_time=started, tags=tags, run_name=job.name or job.id)
    return str(run.info.run_id)


def log_params(client: Any, run_id: str, job: JobRecord) -> None:
    from mlflow.entities import Param

    # notify_url is not a training parameter, and its path or query can hold the receiver's token.
    training = job.params.model_dump(mode="json", exclude={"notify_url"})
    params = [Param(k, v) for k, v in flat_params(training).items()]
    for i in range(0, len(params), 100):  # MLflow's limit per call
        client.log_batch(run_id, params=params[i : i + 100])


def log_metrics(client: Any, run_id: str, values: list[tuple[str, float, int, int]]) -> None:
    """(key, value, timestamp ms, step) rows, in batches."""
    from mlflow.entities import Metric

    metrics = [Metric(key, float(value), at, step) for key, value, at, step in values]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH])


def epoch_rows(epochs: list[dict[str, Any]], times: dict[int, int]) -> list[tuple[str, float, int, int]]:
    """Each epoch's numbers at its step, timed when the job recorded it (`times`: epoch -> ms)."""
    rows = []
    for epoch in epochs:
        step = int(epoch["epoch"])
        at = times.get(step, millis(None))
        rows += [(name, epoch[key], at, step) for key, name in EPOCH_METRICS.items() if epoch.get(key) is not None]
    return rows


def lr_sweep_rows(sweep: dict[str, Any], at: int) -> list[tuple[str, float, int, int]]:
    lrs, losses = sweep.get("lrs") or [], sweep.get("losses") or []
    rows = []
    for step, (lr, loss) in enumerate(zip(lrs, losses, strict=False)):
        rows += [("lr_sweep_lr", lr, at, step), ("lr_sweep_loss", loss, at, step)]
    return rows


def lr_sweep_params(sweep: dict[str, Any]) -> dict[str, str]:
    chosen = {k: sweep.get(k) for k in ("chosen_lr", "suggested_lr")} | {"lr_sweep_result": sweep.get("method")}
    return {k: str(v) for k, v in chosen.items() if v is not None}


def evaluation_rows(evaluation: dict[str, Any], at: int) -> list[tuple[str, float, int, int]]:
    found = {
        "final_accuracy": evaluation.get("accuracy"),
        "final_loss": evaluation.get("loss"),
        "final_tta_accuracy": (evaluation.get("tta") or {}).get("accuracy"),
        "final_test_accuracy": (evaluation.get("test") or {}).get("accuracy"),
        "final_test_loss": (evaluation.get("test") or {}).get("loss"),
    }
    return [(k, v, at, 0) for k, v in found.items() if isinstance(v, int | float)]


def log_bytes(client: Any, run_id: str, body: bytes, name: str, folder: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="trainyard-mlflow-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(body)
        client.log_artifact(run_id, str(path), folder)


def log_model_files(client: Any, run_id: str, files: dict[str, bytes], manifest: dict[str, Any] | None) -> None:
    """The run's `model/` folder: the ONNX export as an MLflow model (`mlflow.pyfunc.load_model` runs it with
    onnxruntime) and its preprocessing JSON; Trainyard's own artifact when the model has no ONNX export."""
    from mlflow import pyfunc
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="trainyard-mlflow-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        for name, body in files.items():
            (folder / name).write_bytes(body)
        if manifest is not None:
            (folder / "preprocessing.json").write_text(json.dumps(manifest, indent=2))
        if "model.onnx" in files:
            model = Model(run_id=run_id, artifact_path="model")
            pyfunc.add_to_model(model, loader_module="mlflow.onnx", data="model.onnx")
            version = (manifest or {}).get("onnx_version")
            providers = ["CPUExecutionProvider"]
            model.add_flavor("onnx", onnx_version=version, data="model.onnx", providers=providers, code=None)
            model.save(str(folder / "MLmodel"))
            (folder / "requirements.txt").write_text("onnx\nonnxruntime\nnumpy\n")
        client.log_artifacts(run_id, str(folder), "model")


def log_lr_sweep(client: Any, run_id: str, job: JobRecord) -> None:
    """The sweep's loss curve (step by step) and what it chose, as parameters."""
    from mlflow.entities import Param

    sweep = job.lr_sweep or {}
    log_metrics(client, run_id, lr_sweep_rows(sweep, millis(job.started_at)))
    client.log_batch(run_id, params=[Param(k, v) for k, v in lr_sweep_params(sweep).items()])


def log_evaluation(client: Any, run_id: str, job: JobRecord) -> None:
    """The final numbers as metrics, and the whole evaluation (confusion matrix, per class) as evaluation.json."""
    log_metrics(client, run_id, evaluation_rows(job.evaluation or {}, millis(job.finished_at)))
    client.log_dict(run_id, job.evaluation or {}, "evaluation.json")
