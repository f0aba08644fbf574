"""The single-machine default keeps what it made: a full stop and start of the stack loses nothing.

This module runs its own stack (its own home folder and ports), because it stops and starts every part of
it: the S3-compatible server, Ray (and so Serve) and the API, and kills Ray's head outright: Serve then comes
back by itself, through the API's reconciler. One small job is trained once; everything
after that is about what survives.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.artifact import ARTIFACT_NAME
from core.spec import S3Location
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.stack import driver_log, keep_ray_logs
from tests.utils.stack import own_stack as running_stack

pytestmark = pytest.mark.e2e

JOB = {"epochs": 1, "freeze_epochs": 1, "batch_size": 8, "image_size": 32, "num_workers": 1, "lr": 0.01}
# The models that outlive restarts: what survives is the point, not how they were trained. At 64 px three head-only
# epochs classify these shapes perfectly, so these jobs keep the head-only model and start no Ray Train run.
HEAD_ONLY_JOB = JOB | {"image_size": 64, "freeze_epochs": 3}


def _s3(stack: LocalStack) -> Any:
    return stack.s3_client()


def _wait(api: httpx.Client, job_id: str, timeout: float = 420) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s: {job}")


def _restart(stack: LocalStack) -> dict[str, Any]:
    """`trainyard down`, then `up` on the same home folder and ports."""
    keep_ray_logs(stack)
    stack.down()
    assert not stack._alive("s3") and not stack.ray_ready()
    stack.start_s3()
    stack.start_ray()
    stack.start_api()
    return stack.restore_serving()


def _predict(api: httpx.Client, model_id: str, image: bytes) -> httpx.Response:
    return api.post(f"/v1/models/{model_id}/predict", content=image, headers={"content-type": "image/png"}, timeout=120)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("restart-home")) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(own_stack: LocalStack) -> Iterator[httpx.Client]:
    with own_stack.api_client() as client:
        yield client


def test_a_restart_keeps_datasets_artifacts_and_deployed_models(
    own_stack: LocalStack, api: httpx.Client, tmp_path: Path
) -> None:
    data = make_shapes(tmp_path / "shapes", train_per_class=10, valid_per_class=4, size=64)
    upload_folder(_s3(own_stack), data, "restart", "shapes")
    first = api.post("/v1/jobs", json={"dataset_uri": "s3://restart/shapes", **HEAD_ONLY_JOB}).json()
    job = _wait(api, first["id"])
    assert job["status"] == "succeeded", (job["error"], driver_log(own_stack, job["id"]))
    model_id = job["model"]["id"]
    image = next((data / "valid" / "circle").iterdir()).read_bytes()
    before = _predict(api, model_id, image)
    assert before.status_code == 200, before.text
    plot_name = next(name for name in job["artifacts"] if name.endswith(".png"))
    plot = api.get(f"/v1/jobs/{job['id']}/artifacts/{plot_name}")
    assert plot.status_code == 200

    report = _restart(own_stack)

    assert report["models"] == 1 and report["unavailable"] == {}
    began = time.perf_counter()
    after = _predict(api, model_id, image)
    first_prediction_s = time.perf_counter() - began
    print(f"first prediction after a restart: {first_prediction_s:.2f} s (Serve restored in "
          f"{report['serving_started_s']} s)")  # fmt: skip
    assert after.status_code == 200, after.text
    assert after.json()["predictions"][0] == before.json()["predictions"][0]
    assert api.get(f"/v1/jobs/{job['id']}/artifacts/{plot_name}").content == plot.content
    listed = {m["id"]: m for m in api.get("/v1/models").json()["models"]}
    assert listed[model_id]["available"] is True

    # The dataset outlived the restart too: a new job on the same URI, nothing uploaded again.
    second = api.post("/v1/jobs", json={"dataset_uri": "s3://restart/shapes", **HEAD_ONLY_JOB}).json()
    again = _wait(api, second["id"])
    assert again["status"] == "succeeded", (again["error"], driver_log(own_stack, again["id"]))


def test_a_killed_ray_head_brings_every_model_back_by_itself(own_stack: LocalStack, api: httpx.Client) -> None:
    """No `trainyard up`: the API's reconciler sees listed models without a Serve application and restores it."""
    models = [m["id"] for m in api.get("/v1/models").json()["models"]]
    assert len(models) >= 2, "runs after the restart test, which deploys two models"
    image = make_png()
    assert all(_predict(api, model_id, image).status_code == 200 for model_id in models)
    restores_before = _restores(api)

    killed_at = time.monotonic()
    assert own_stack.kill_ray() > 0
    assert api.get("/readyz").status_code == 200  # still in rotation: reads answer from the store
    assert api.get("/v1/jobs").status_code == 200
    assert api.get("/readyz").json()["degraded"] == ["ray", "serve"]
    own_stack.start_ray()
    back_at = time.monotonic()
    answered: dict[str, float] = {}
    serve_said: list[str] = []  # what /readyz said of Serve meanwhile, in order, without repeats
    deadline = back_at + 60
    while len(answered) < len(models) and time.monotonic() < deadline:
        said = api.get("/readyz").json()["checks"]["serve"]
        serve_said += [said] if not serve_said or serve_said[-1] != said else []
        for model_id in set(models) - set(answered):
            if _predict(api, model_id, image).status_code == 200:
                answered[model_id] = time.monotonic() - back_at
        time.sleep(0.5)
    took = ", ".join(f"{s:.1f}" for s in sorted(answered.values()))
    print(f"Ray head killed and started again ({back_at - killed_at:.1f} s); predictions back after {took} s; "
          f"/readyz said serve: {serve_said}")  # fmt: skip
    assert set(answered) == set(models), f"not every listed model answered within 60 s: {answered}"
    assert {"down", "restoring"} & set(serve_said), serve_said
    assert _restores(api) == restores_before + 1  # the reconciler's one restore, not `trainyard up`
    assert api.get("/readyz/strict").status_code == 200


def _restores(api: httpx.Client) -> float:
    line = next(x for x in api.get("/metrics").text.splitlines() if x.startswith("trainyard_serve_restores_total "))
    return float(line.split()[-1])


def test_models_whose_objects_are_gone_are_reported_unavailable_never_a_500(
    own_stack: LocalStack, api: httpx.Client
) -> None:
    models = api.get("/v1/models").json()["models"]
    assert len(models) >= 2, "runs after the restart test, which deploys two models"
    no_artifact, no_pointer = models[0], models[1]
    s3 = _s3(own_stack)
    # Where publish put it (the API shows artifacts as its own URLs, not as S3 URIs).
    artifact_uri = f"s3://trainyard-artifacts/jobs/{no_artifact['job_id']}/{ARTIFACT_NAME}"
    s3.delete_object(Bucket="trainyard-artifacts", Key=f"jobs/{no_artifact['job_id']}/{ARTIFACT_NAME}")
    s3.delete_object(Bucket="trainyard-artifacts", Key=f"models/{no_pointer['id']}.json")

    listed = {m["id"]: m for m in api.get("/v1/models").json()["models"]}
    assert listed[no_artifact["id"]]["available"] is False
    assert artifact_uri in listed[no_artifact["id"]]["unavailable_reason"]
    assert listed[no_pointer["id"]]["available"] is False
    assert "pointer" in listed[no_pointer["id"]]["unavailable_reason"]

    report = _restart(own_stack)  # the replicas forget the models they held; the drift is reported at start-up
    assert set(report["unavailable"]) == {no_artifact["id"], no_pointer["id"]}

    image = make_png()
    gone = _predict(api, no_artifact["id"], image)
    assert gone.status_code == 410, gone.text
    assert gone.json()["error"]["code"] == "model_artifact_missing" and artifact_uri in gone.text
    unpointed = _predict(api, no_pointer["id"], image)
    assert unpointed.status_code == 410, unpointed.text
    assert unpointed.json()["error"]["code"] == "model_pointer_missing"
    artifact = api.get(f"/v1/jobs/{no_artifact['job_id']}/artifacts/{ARTIFACT_NAME}")
    assert artifact.status_code == 404 and artifact.json()["error"]["code"] == "artifact_missing"


def make_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_objects_written_before_the_s3_server_is_killed_survive_it(own_stack: LocalStack, tmp_path: Path) -> None:
    s3 = _s3(own_stack)
    data = make_shapes(tmp_path / "more", train_per_class=3, valid_per_class=1, size=32)
    upload_folder(s3, data, "restart", "killed")
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="restart", Prefix="killed/")["Contents"]}

    os.kill(own_stack.config.pids["s3"], signal.SIGKILL)
    own_stack.config.pids.pop("s3")
    own_stack.start_s3()

    after = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="restart", Prefix="killed/")["Contents"]}
    assert after == before
    for key in before:
        local = data / key.removeprefix("killed/")
        assert s3.get_object(Bucket="restart", Key=key)["Body"].read() == local.read_bytes()


def _objects(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_a_job_outlives_its_s3_server_killed_during_training(
    own_stack: LocalStack, api: httpx.Client, tmp_path: Path
) -> None:
    s3 = _s3(own_stack)
    upload_folder(s3, make_shapes(tmp_path / "s", train_per_class=10, valid_per_class=4, size=32), "restart", "kill")
    # Every epoch runs (no early stopping), so the outage below lands in training, as this test means it to.
    body = {"dataset_uri": "s3://restart/kill", **JOB, "epochs": 3, "patience": None}
    job_id = api.post("/v1/jobs", json=body).json()["id"]
    deadline = time.monotonic() + 300
    while not any(m["stage"] == "unfrozen" for m in api.get(f"/v1/jobs/{job_id}").json()["metrics"]):
        assert time.monotonic() < deadline, "no unfrozen epoch was checkpointed within 300 s"
        time.sleep(0.2)
    dataset = _objects(s3, "restart", "kill/")
    written = _objects(s3, "trainyard-artifacts", f"jobs/{job_id}/")
    assert any("/checkpoints/" in key for key in written)

    os.kill(own_stack.config.pids.pop("s3"), signal.SIGKILL)
    time.sleep(8)  # down long enough for the next checkpoint upload to meet it
    own_stack.start_s3()
    job = _wait(api, job_id)

    assert _objects(s3, "restart", "kill/") == dataset
    now = _objects(s3, "trainyard-artifacts", f"jobs/{job_id}/")
    # Checkpoints are written once; Ray Train prunes old ones by design (num_to_keep) and rewrites only its own
    # bookkeeping (checkpoint_manager_snapshot.json). Every checkpoint file it kept is what was written.
    payload = {k: v for k, v in written.items() if "/checkpoint_" in k and not k.endswith("snapshot.json")}
    assert payload, written
    assert {k: now[k] for k in payload if k in now} == {k: v for k, v in payload.items() if k in now}
    # Directory markers (keys ending in "/") are the S3 filesystem's own, made again as Ray Train resumes.
    changed = {k: (v, now.get(k)) for k, v in written.items() if "/checkpoints/" not in k and not k.endswith("/")}
    assert {k: pair for k, pair in changed.items() if pair[0] != pair[1]} == {}, "objects changed or gone (was, now)"
    if job["status"] == "failed":
        assert job["error"]["code"] == "storage_unavailable", job["error"]
        assert "S3" in job["error"]["message"] and job["error"]["phase"] == "training"
    else:
        assert job["status"] == "succeeded", job
        best = S3Location.parse(job["best"]["checkpoint_uri"])
        assert s3.head_object(Bucket=best.bucket, Key=best.key)["ContentLength"] > 0
    print(f"S3 killed mid-training: the job {job['status']} ({(job.get('error') or {}).get('code')})")
