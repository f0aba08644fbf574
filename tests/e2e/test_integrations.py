"""Models that leave Trainyard and the integrations around a job, on one real job through the whole stack.

One named job with a `notify_url` runs on the session's Ray stack, with an API configured for a real MLflow
server on loopback (and allowed to call the test's webhook receiver on 127.0.0.1). The MLflow server is stopped
while the job runs and started again once it has succeeded. Then:

- the job succeeded all the same, and its MLflow run caught up: metrics per epoch, the registered version, the
  alias moved through the API;
- exactly one webhook arrived, signed with the tenant's secret;
- the exported ONNX and TorchScript files, run by README.md's snippets in a Python that cannot import
  Trainyard, give the endpoint's top-1 on 50 validation images and its probabilities within 1e-4.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from core.webhooks import WebhookSecrets
from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.jobs import poll, store_of, submit, wait_event, wait_job, wait_phase
from tests.utils.mlflow_server import MlflowServer
from tests.utils.webhook_receiver import WebhookReceiver
from trainyard import Client

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
NAME = "integrations"
IMAGE_SIZE = 64
VALID_PER_CLASS = 17  # 51 validation images: the 50 checked, and one more
JOB = {"name": NAME, "epochs": 1, "freeze_epochs": 2, "batch_size": 8, "image_size": IMAGE_SIZE, "num_workers": 1}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def api(
    ray_stack: LocalStack, mlflow_server: MlflowServer, receiver: WebhookReceiver
) -> Iterator[tuple[LocalStack, httpx.Client]]:
    """The stack's API, with MLflow on and the receiver's loopback address allowed (this module's only)."""
    overrides = {
        "TRAINYARD_MLFLOW_TRACKING_URI": mlflow_server.url,
        "TRAINYARD_MLFLOW_SYNC_INTERVAL_S": "0.5",
        "TRAINYARD_MLFLOW_LOOKBACK_S": "0",  # not the jobs of the session's other modules
        "TRAINYARD_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "TRAINYARD_WEBHOOK_POLL_INTERVAL_S": "0.2",
    }
    saved = dict(ray_stack.config.env_overrides)
    ray_stack.config.env_overrides.update(overrides)
    ray_stack.stop_api()  # an API another module left running has the other settings
    ray_stack.start_api()
    try:
        with ray_stack.api_client() as client:
            yield ray_stack, client
    finally:
        ray_stack.stop_api()
        ray_stack.config.env_overrides.clear()
        ray_stack.config.env_overrides.update(saved)


@pytest.fixture(scope="module")
def valid_images(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The dataset, uploaded: 80 px shapes (resized to 64 to be served), a third of the validation images made
    non-square JPEGs and some of those large enough to decode at a reduced scale, as phone photos do."""
    root = make_shapes(tmp_path_factory.mktemp("data") / "shapes", 12, VALID_PER_CLASS, size=80, seed=3)
    images = []
    for i, path in enumerate(sorted((root / "valid").glob("*/*.png"))):
        if i % 3 == 1:
            size = (300, 260) if i % 2 else (80, 70)
            jpeg = path.with_suffix(".jpg")
            Image.open(path).resize(size, Image.BICUBIC).save(jpeg, quality=90)
            path.unlink()
            path = jpeg
        images.append(path)
    upload_folder(stack.s3_client(), root, "integrations", "shapes")
    return images


@pytest.fixture(scope="module")
def finished(
    api: tuple[LocalStack, httpx.Client],
    mlflow_server: MlflowServer,
    valid_images: list[Path],
    receiver: WebhookReceiver,
) -> dict[str, Any]:
    """The job, run with MLflow stopped from its evaluation until after it succeeded.

    The job waits at the start of `evaluating` (a phase hold) until MLflow is down: a head-only job can
    otherwise end within the seconds MLflow takes to stop."""
    stack, client = api
    store = store_of(stack.database_url)
    mlflow_server.wait_ready()
    hold = Path(stack.config.env_overrides["TRAINYARD_FAULT_HOLDS_DIR"]) / "evaluating"
    hold.touch()
    try:
        job_id = submit(client, "s3://integrations/shapes", notify_url=f"{receiver.url}/hooks?token=t0k3n", **JOB)
        wait_event(store, job_id, lambda e: e.kind == "phase", what="the job starting")
        status = poll(lambda: _tracking(store, job_id), 60, "the MLflow run created")
        wait_phase(store, job_id, ("evaluating",))
        mlflow_server.stop()
    finally:
        hold.unlink()
    stopped_during = store.get_job(job_id)
    assert stopped_during is not None and stopped_during.status.value == "running", "the job ended before the outage"
    job = wait_job(client, job_id, timeout=600)
    warned = poll(lambda: _event(store, job_id, "tracking_unavailable"), 60, "the outage noticed")
    mlflow_server.start()
    mlflow_server.wait_ready()
    mlflow = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    poll(lambda: (_tracking(store, job_id) or {}).get("closed_at"), 120, "the MLflow run caught up", interval=0.5)
    return {"job": job, "run_id": status["run_id"], "warned": warned, "store": store, "mlflow": mlflow}


def _tracking(store: Any, job_id: str) -> dict[str, Any] | None:
    from service.tracking.runs import Runs

    status = Runs(store.engine).status(job_id)
    return status if status and status["run_id"] else None


def _event(store: Any, job_id: str, kind: str) -> Any:
    return next((e for e in store.events(job_id) if e.kind == kind), None)


def test_the_job_succeeds_while_mlflow_is_down_and_its_run_catches_up(finished: dict[str, Any]) -> None:
    job, mlflow, store = finished["job"], finished["mlflow"], finished["store"]
    assert job["status"] == "succeeded", job.get("error")
    assert "did not answer" in finished["warned"].message and "the job is not affected" in finished["warned"].message
    assert _event(store, job["id"], "tracking_resumed") is not None

    run = mlflow.get_run(finished["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == NAME
    assert run.data.tags["trainyard.job_id"] == job["id"]
    assert run.data.params["image_size"] == str(IMAGE_SIZE) and float(run.data.params["chosen_lr"]) > 0
    assert "notify_url" not in run.data.params  # the receiver's token stays out of MLflow
    epochs = job["metrics"]
    history = mlflow.get_metric_history(run.info.run_id, "accuracy")
    assert [(m.step, round(m.value, 5)) for m in history] == [(e["epoch"], e["accuracy"]) for e in epochs]
    assert len(history) >= 2  # the head-only epochs at least: metrics per epoch
    assert len(mlflow.get_metric_history(run.info.run_id, "lr_sweep_loss")) == len(job["lr_sweep"]["losses"])
    assert run.data.metrics["final_accuracy"] == pytest.approx(job["evaluation"]["accuracy"])
    plots = {f.path for f in mlflow.list_artifacts(run.info.run_id, "plots")}
    assert plots == {f"plots/{name}" for name in job["artifacts"] if name.endswith(".png")}
    assert {"report.html", "evaluation.json", "model"} <= {f.path for f in mlflow.list_artifacts(run.info.run_id)}

    (version,) = mlflow.search_model_versions(f"name='{NAME}'")
    assert (version.run_id, version.tags["trainyard.model_id"]) == (run.info.run_id, job["model"]["id"])


def test_an_alias_moved_through_the_api_moves_in_mlflow(
    finished: dict[str, Any], api: tuple[LocalStack, httpx.Client]
) -> None:
    _, client = api
    mlflow = finished["mlflow"]
    moved = client.post(f"/v1/models/{NAME}/aliases/production", json={"version": 1})
    assert moved.status_code == 200, moved.text
    poll(lambda: mlflow.get_registered_model(NAME).aliases.get("production") == "1", 60, "the alias in MLflow")


def test_one_signed_webhook_arrives_for_the_success(finished: dict[str, Any], receiver: WebhookReceiver) -> None:
    job, store = finished["job"], finished["store"]
    wait_event(store, job["id"], lambda e: e.kind == "webhook", what="the delivery recorded")  # (job ended: it waits)
    (request,) = receiver.requests  # the MLflow catch-up took many webhook passes since: still one
    body = json.loads(request.body)
    assert (body["type"], body["data"]["id"], body["data"]["model"]["id"]) == (
        "job.succeeded",
        job["id"],
        job["model"]["id"],
    )
    assert request.path == "/hooks?token=t0k3n"
    secret = WebhookSecrets(store.engine).get("admin")
    namespace: dict[str, Any] = {}
    exec(re.search(r"```python\n(.*?)```", DOCS.read_text().split("## Webhooks", 1)[1], re.DOTALL).group(1), namespace)  # type: ignore[union-attr]
    assert secret is not None and namespace["verify"](secret, request.body, request.headers["trainyard-signature"])


def test_exported_models_run_without_trainyard_and_answer_as_the_endpoint(
    finished: dict[str, Any], api: tuple[LocalStack, httpx.Client], valid_images: list[Path], tmp_path: Path
) -> None:
    stack, client = api
    images = valid_images[:50]
    served = _served_probabilities(client, finished["job"]["model"]["id"], images)
    with Client(stack.config.api_url, stack.api_key) as sdk:
        sdk.export(NAME, tmp_path / "pets.onnx", format="onnx")
        sdk.export(f"{NAME}@1", tmp_path / "pets.torchscript.pt", format="torchscript")
    classes = json.loads((tmp_path / "pets.json").read_text())["classes"]
    assert classes == list(SHAPES)
    expected = np.array([[row[c] for c in classes] for row in served])
    for runner in ("torchscript", "onnx", "onnx-without-torch"):
        answered = np.array(_run_readme(tmp_path, runner, images))
        difference = float(np.abs(answered - expected).max())
        print(f"{runner}: {len(images)} images, same top-1, largest probability difference {difference:.2e}")
        assert (answered.argmax(1) == expected.argmax(1)).all(), runner
        if runner != "onnx-without-torch":  # PIL's resize is within one level of Trainyard's, not bit-identical
            assert difference < 1e-4, (runner, difference)


def _served_probabilities(client: httpx.Client, model_id: str, images: list[Path]) -> list[dict[str, float]]:
    """Every class's probability for each image, from predict:batch (16 images a request)."""
    rows: list[dict[str, float]] = []
    for start in range(0, len(images), 16):
        files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in images[start : start + 16]]
        response = client.post(
            f"/v1/models/{model_id}/predict:batch", params={"top_k": len(SHAPES)}, files=files, timeout=120
        )
        assert response.status_code == 200, response.text
        rows += [{p["label"]: p["probability"] for p in r["predictions"]} for r in response.json()["results"]]
    return rows


def _run_readme(folder: Path, runner: str, images: list[Path]) -> list[list[float]]:
    """README.md's snippets, as written, in a Python that sees torch, onnxruntime, numpy and PIL but not Trainyard:
    no site hooks (so not the editable install), only the site-packages folder itself on its path."""
    section = README.read_text().split("### Taking a model out of Trainyard", 1)[1].split("\n## ", 1)[0]
    prepare, with_torch, with_onnx = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    prepare = prepare.replace('["cat.jpg", "dog.jpg"]', "IMAGES")
    script = "\n".join(
        [
            "import importlib.util, json, sys",
            f"sys.path.append({sysconfig.get_paths()['purelib']!r})",
            f"IMAGES = {[str(p) for p in images]!r}",
            "if sys.argv[1] == 'onnx-without-torch':",
            "    sys.modules['torch'] = None  # `import torch` fails: onnxruntime, numpy and PIL only",
            "found = [m for m in ('core', 'jobs', 'serving', 'service', 'trainyard') if importlib.util.find_spec(m)]",
            "assert not found, f'Trainyard is importable here: {found}'",
            prepare,
            "if sys.argv[1] == 'torchscript':",
            textwrap.indent(with_torch, "    "),
            "else:",
            textwrap.indent(with_onnx, "    "),
            "print(json.dumps(probabilities.tolist()))",
        ]
    )
    (folder / "readme_snippets.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(folder / "readme_snippets.py"), runner],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
