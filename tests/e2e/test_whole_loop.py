"""The whole loop on the real stack: S3 server, Ray head, the API over HTTP, Ray Train DDP, Ray Serve.

One real training job carries most assertions (it is the expensive part); the jobs meant to fail run
beside it. The API is restarted while the main job trains, and must lose nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.spec import S3Location
from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack

pytestmark = pytest.mark.e2e

TRAIN_REQUEST = {
    "epochs": 2,
    "freeze_epochs": 2,
    "batch_size": 8,
    "image_size": 64,
    "num_workers": 2,
    "patience": None,  # every epoch runs, so both unfrozen epochs can be asserted (early stopping: test_time_to_model)
}


@pytest.fixture(scope="module")
def api_stack(ray_stack: LocalStack) -> Iterator[LocalStack]:
    ray_stack.start_api()
    yield ray_stack
    ray_stack.stop_api()


@pytest.fixture(scope="module")
def api(api_stack: LocalStack) -> Iterator[httpx.Client]:
    with api_stack.api_client() as client:
        yield client


@pytest.fixture(scope="module")
def datasets(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from core.s3 import s3_client

    s3 = s3_client()
    root = tmp_path_factory.mktemp("data")
    upload_folder(s3, make_shapes(root / "shapes", train_per_class=24, valid_per_class=12, size=64), "e2e", "shapes")
    # A validation folder without train/ is a layout Trainyard cannot read (train/ alone is fine: it splits it).
    only_valid = root / "only-valid" / "valid" / "a"
    only_valid.mkdir(parents=True)
    make_shapes(root / "tmp", 2, 0, size=32)
    for i, png in enumerate(sorted((root / "tmp" / "train" / "circle").iterdir())):
        (only_valid / f"{i}.png").write_bytes(png.read_bytes())
    upload_folder(s3, root / "only-valid", "e2e", "no-train")
    return {
        "good": "s3://e2e/shapes",
        "missing_bucket": "s3://no-such-bucket-here/data",
        "empty_prefix": "s3://e2e/nothing-here",
        "bad_layout": "s3://e2e/no-train",
    }


def _wait(api: httpx.Client, job_id: str, timeout: float, until: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = api.get(f"/v1/jobs/{job_id}").json()
        except httpx.TransportError:  # the API is being restarted
            time.sleep(0.5)
            continue
        if job["status"] in until or job.get("phase") in until:
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {until} within {timeout}s: {job}")


@pytest.fixture(scope="module")
def finished(api_stack: LocalStack, api: httpx.Client, datasets: dict[str, str]) -> dict[str, Any]:
    """Submit the main job and the failing ones, restart the API mid-training, wait for all of them."""
    main = api.post("/v1/jobs", json={"dataset_uri": datasets["good"], "name": "e2e", **TRAIN_REQUEST})
    assert main.status_code == 202, main.text
    assert main.headers["location"] == f"/v1/jobs/{main.json()['id']}"
    failing = {
        name: api.post("/v1/jobs", json={"dataset_uri": datasets[name], **TRAIN_REQUEST}).json()["id"]
        for name in ("missing_bucket", "empty_prefix", "bad_layout")
    }
    for name, extra in (("gpu_on_cpu_cluster", {"use_gpu": True}), ("too_many_workers", {"num_workers": 3})):
        body = {"dataset_uri": datasets["good"], **TRAIN_REQUEST, **extra}
        failing[name] = api.post("/v1/jobs", json=body).json()["id"]
    job_id = main.json()["id"]
    to_cancel = api.post("/v1/jobs", json={"dataset_uri": datasets["good"], **TRAIN_REQUEST}).json()["id"]
    _wait(api, to_cancel, 300, until=("fetching", "validating", "lr_sweep", "training", "failed", "succeeded"))
    cancels = [api.post(f"/v1/jobs/{to_cancel}/cancel") for _ in range(2)]

    training = _wait(api, job_id, 300, until=("training", "succeeded", "failed"))
    assert training["status"] == "running", training
    api_stack.stop_api()
    api_stack.start_api()  # a new API process, same store: the job must carry on untouched
    after_restart = api.get(f"/v1/jobs/{job_id}").json()
    # Still running, or (its last epochs are short) finished while the API was down: never failed or restarted
    # by the new API; test_job_succeeds_* checks the run's epochs and events happened once.
    assert after_restart["status"] in ("running", "succeeded"), after_restart["error"]

    done = _wait(api, job_id, 600, until=("succeeded", "failed", "cancelled"))
    failed = {name: _wait(api, jid, 300, until=("succeeded", "failed", "cancelled")) for name, jid in failing.items()}
    events = api.get(f"/v1/jobs/{job_id}/events").json()["events"]
    cancelled = {"responses": cancels, "job": api.get(f"/v1/jobs/{to_cancel}").json()}
    return {"job": done, "failed": failed, "events": events, "cancelled": cancelled}


def test_job_succeeds_with_sweep_metrics_and_best_checkpoint(finished: dict[str, Any], stack: LocalStack) -> None:
    job = finished["job"]
    assert job["status"] == "succeeded", job.get("error")
    assert job["progress"] == 1.0
    sweep = job["lr_sweep"]
    assert 1e-6 < sweep["suggested_lr"] < 1.0
    assert len(sweep["lrs"]) == len(sweep["losses"]) >= 20
    assert sweep["lrs"] == sorted(sweep["lrs"])
    epochs = job["metrics"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert [e["stage"] for e in epochs] == ["frozen", "frozen", "unfrozen", "unfrozen"]
    for row in epochs:
        assert {"train_loss", "valid_loss", "accuracy"} <= row.keys()
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]  # the head learned on its features

    best = job["best"]
    assert best["value"] == max(e["accuracy"] for e in epochs if e["epoch"] >= 2)
    from core.s3 import s3_client

    location = S3Location.parse(best["checkpoint_uri"])
    assert s3_client().head_object(Bucket=location.bucket, Key=location.key)["ContentLength"] > 1_000_000

    # Three classes: chance is 33%. The generated shapes are easy for a pretrained backbone.
    assert job["evaluation"]["accuracy"] >= 0.9
    assert sum(map(sum, job["evaluation"]["confusion_matrix"])) == 36
    assert job["dataset"]["classes"] == list(SHAPES)
    assert job["model"]["id"] and job["model"]["predict_url"].endswith(f"/v1/models/{job['model']['id']}/predict")


def test_plots_and_model_are_served_as_artifacts(finished: dict[str, Any], api: httpx.Client) -> None:
    job = finished["job"]
    names = {"lr_sweep.png", "training_curves.png", "confusion_matrix.png", "model.pt"}
    assert set(job["artifacts"]) == names
    for name in names - {"model.pt"}:
        response = api.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(b"\x89PNG") and len(response.content) > 5000


def test_both_ddp_ranks_trained_on_disjoint_shards(finished: dict[str, Any]) -> None:
    job = finished["job"]
    assert job["training"]["world_size"] == 2
    shards = [e for e in finished["events"] if e["kind"] == "ddp_shards"]
    assert shards, "no DDP shard record"
    ranks = shards[0]["data"]["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    first, second = (set(r["shard"]) for r in ranks)
    assert len(first) == len(second) == 36  # 72 training images split evenly
    assert not first & second


def test_failed_jobs_name_phase_and_uri(finished: dict[str, Any], datasets: dict[str, str]) -> None:
    failed = finished["failed"]
    expected = {
        "missing_bucket": ("fetching", "bucket_not_found"),
        "empty_prefix": ("fetching", "empty_dataset"),
        "bad_layout": ("validating", "invalid_layout"),
    }
    for name, (phase, code) in expected.items():
        job = failed[name]
        assert job["status"] == "failed", (name, job)
        assert job["error"]["phase"] == phase, (name, job["error"])
        assert job["error"]["code"] == code
        uri = datasets[name]
        assert S3Location.parse(uri).bucket in job["error"]["message"]
        assert "Traceback" not in job["error"]["message"]


def test_jobs_the_cluster_cannot_fit_fail_at_once(finished: dict[str, Any]) -> None:
    gpu, workers = finished["failed"]["gpu_on_cpu_cluster"], finished["failed"]["too_many_workers"]
    assert (gpu["status"], gpu["error"]["phase"], gpu["error"]["code"]) == ("failed", "validating", "not_enough_gpus")
    assert "set use_gpu=false" in gpu["error"]["message"]
    assert (workers["error"]["code"], workers["error"]["phase"]) == ("not_enough_cpus", "validating")
    assert "num_workers=3" in workers["error"]["message"] and "has 2" in workers["error"]["message"]


def test_prediction_on_held_out_images(finished: dict[str, Any], api: httpx.Client, tmp_path: Path) -> None:
    model_id = finished["job"]["model"]["id"]
    held_out = make_shapes(tmp_path, train_per_class=0, valid_per_class=3, size=64, seed=999)
    correct = 0
    for shape in SHAPES:
        for image in sorted((held_out / "valid" / shape).iterdir()):
            response = api.post(f"/v1/models/{model_id}/predict?top_k=3", content=image.read_bytes())
            assert response.status_code == 200, response.text
            predictions = response.json()["predictions"]
            assert [p["label"] for p in predictions] != [] and len(predictions) == 3
            assert predictions == sorted(predictions, key=lambda p: -p["probability"])
            assert abs(sum(p["probability"] for p in predictions) - 1) < 1e-3
            correct += predictions[0]["label"] == shape
    assert correct >= 8, f"{correct}/9 held-out images right"

    multipart = api.post(f"/v1/models/{model_id}/predict", files={"file": ("x.png", image.read_bytes(), "image/png")})
    assert multipart.status_code == 200 and multipart.json()["predictions"]


def test_prediction_errors_are_4xx_json(finished: dict[str, Any], api: httpx.Client) -> None:
    model_id = finished["job"]["model"]["id"]
    garbage = api.post(f"/v1/models/{model_id}/predict", content=b"definitely not an image")
    assert garbage.status_code == 415 and garbage.json()["error"]["code"] == "unsupported_media_type"
    broken = api.post(
        f"/v1/models/{model_id}/predict", content=b"\x89PNG broken", headers={"content-type": "image/png"}
    )
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_image"
    unknown = api.post("/v1/models/mdl-nope/predict", content=b"x")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    models = api.get("/v1/models").json()
    assert model_id in [m["id"] for m in (models["models"] if isinstance(models, dict) else models)]


def test_cancel_stops_the_ray_job_and_sticks(finished: dict[str, Any], api_stack: LocalStack) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    cancelled = finished["cancelled"]
    assert [r.status_code for r in cancelled["responses"]] == [200, 200]
    assert all(r.json()["status"] == "cancelled" for r in cancelled["responses"])
    job = cancelled["job"]
    assert job["status"] == "cancelled" and job["model"] is None
    # This process imported Ray before the stack's auth settings were exported: pass the token explicitly.
    token = api_stack.config.ray_token_file.read_text().strip()
    client = JobSubmissionClient(api_stack.config.dashboard_url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 60
    while (status := client.get_job_status(job["id"])) not in (JobStatus.STOPPED, JobStatus.FAILED):
        assert time.monotonic() < deadline, f"Ray job still {status}"
        time.sleep(0.5)


def test_ray_dashboard_refuses_requests_without_the_token(ray_stack: LocalStack) -> None:
    anonymous = httpx.get(f"{ray_stack.config.dashboard_url}/api/jobs/")
    assert anonymous.status_code in (401, 403)
