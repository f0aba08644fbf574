"""The whole loop on the real stack: S3 server, Ray head, the API over HTTP, Ray Train DDP, Ray Serve.

One real training job carries most assertions (it is the expensive part): the session's `finished_job`, the
demo's default recipe on its generated shapes, under which the API was restarted while it trained and had
to lose nothing. The jobs meant to fail or be cancelled are this module's own, small and quick.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.spec import S3Location
from infra.local.demo import DEMO_JOB, DEMO_SHAPES
from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.jobs import TERMINAL, FinishedJob, submit, wait_job

pytestmark = pytest.mark.e2e

# The jobs meant to fail, and the one cancelled: they never reach training.
TRAIN_REQUEST = {"epochs": 2, "freeze_epochs": 2, "batch_size": 8, "image_size": 64, "num_workers": 2}


@pytest.fixture(scope="module")
def api(stack_api: httpx.Client) -> httpx.Client:
    return stack_api


@pytest.fixture(scope="module")
def datasets(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from core.s3 import s3_client

    s3 = s3_client()
    root = tmp_path_factory.mktemp("data")
    upload_folder(s3, make_shapes(root / "shapes", train_per_class=4, valid_per_class=2, size=32), "e2e", "shapes")
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


@pytest.fixture(scope="module")
def finished(finished_job: FinishedJob, api: httpx.Client, datasets: dict[str, str]) -> dict[str, Any]:
    """The shared job, and this module's jobs meant to fail and to be cancelled, all ended."""
    failing = {
        name: submit(api, datasets[name], **TRAIN_REQUEST) for name in ("missing_bucket", "empty_prefix", "bad_layout")
    }
    for name, extra in (("gpu_on_cpu_cluster", {"use_gpu": True}), ("too_many_workers", {"num_workers": 3})):
        failing[name] = submit(api, datasets["good"], **TRAIN_REQUEST | extra)
    to_cancel = submit(api, datasets["good"], **TRAIN_REQUEST)
    wait_job(api, to_cancel, timeout=300, until=("fetching", "validating", "lr_sweep", "training", *TERMINAL))
    cancels = [api.post(f"/v1/jobs/{to_cancel}/cancel") for _ in range(2)]
    failed = {name: wait_job(api, job_id, timeout=300) for name, job_id in failing.items()}
    cancelled = {"responses": cancels, "job": api.get(f"/v1/jobs/{to_cancel}").json()}
    return {"job": finished_job.job, "events": finished_job.events, "failed": failed, "cancelled": cancelled}


def test_a_job_trained_through_an_api_restart_lost_nothing(finished_job: FinishedJob) -> None:
    restart = finished_job.api_restarted
    assert restart is not None and restart["during"] == "training", restart
    # Still running, or (its last epochs are short) finished while the API was down: never failed or restarted
    # by the new API; the epochs and events below happened once each.
    assert restart["after"]["status"] in ("running", "succeeded"), restart["after"]["error"]
    events = finished_job.events
    entered = [e["data"]["phase"] for e in events if e["kind"] == "phase"]
    assert entered == ["fetching", "validating", "lr_sweep", "training", "evaluating", "publishing", "deploying"]
    assert [e["kind"] for e in events].count("succeeded") == 1
    unfrozen = [e["epoch"] for e in finished_job.job["metrics"] if e["stage"] == "unfrozen"]
    assert [e["data"]["epoch"] for e in events if e["kind"] == "epoch"] == unfrozen


def test_job_succeeds_with_sweep_metrics_and_best_checkpoint(finished: dict[str, Any], stack: LocalStack) -> None:
    job = finished["job"]
    assert job["status"] == "succeeded", job.get("error")
    assert job["progress"] == 1.0
    sweep = job["lr_sweep"]
    assert 1e-6 < sweep["suggested_lr"] < 1.0
    assert len(sweep["lrs"]) == len(sweep["losses"]) >= 20
    assert sweep["lrs"] == sorted(sweep["lrs"])
    epochs = job["metrics"]
    frozen, unfrozen = DEMO_JOB["freeze_epochs"], DEMO_JOB["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, frozen + unfrozen + 1))
    assert [e["stage"] for e in epochs] == ["frozen"] * frozen + ["unfrozen"] * unfrozen
    for row in epochs:
        assert {"train_loss", "valid_loss", "accuracy"} <= row.keys()
    assert epochs[0]["accuracy"] > 0.6  # the head learned on its features (chance is 1/3)

    best = job["best"]  # every epoch's model was a candidate: the head-only one and each unfrozen checkpoint
    assert best["value"] == max(e["accuracy"] for e in epochs)
    from core.s3 import s3_client

    location = S3Location.parse(best["checkpoint_uri"])
    assert s3_client().head_object(Bucket=location.bucket, Key=location.key)["ContentLength"] > 1_000_000

    # Three classes: chance is 33%. The demo's shapes are drawn to be hard for the head alone (24/30); the
    # unfrozen model it deploys measured 25/30 (squares taken for triangles).
    assert job["evaluation"]["accuracy"] >= 0.75
    assert sum(map(sum, job["evaluation"]["confusion_matrix"])) == 3 * DEMO_SHAPES["valid_per_class"]
    assert job["dataset"]["classes"] == list(SHAPES)
    assert job["model"]["id"] and job["model"]["predict_url"].endswith(f"/v1/models/{job['model']['id']}/predict")


def test_plots_and_model_are_served_as_artifacts(finished: dict[str, Any], api: httpx.Client) -> None:
    job = finished["job"]
    plots = {"lr_sweep.png", "training_curves.png", "confusion_matrix.png"}
    assert set(job["artifacts"]) == plots | {"model.pt", "dataset.csv"}
    for name in plots:
        response = api.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(b"\x89PNG") and len(response.content) > 5000
    listing = api.get(f"/v1/jobs/{job['id']}/artifacts/dataset.csv")
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/csv")
    rows = listing.text.splitlines()
    assert rows[0] == "path,label,split"
    assert len(rows) - 1 == 3 * (DEMO_SHAPES["train_per_class"] + DEMO_SHAPES["valid_per_class"])


def test_both_ddp_ranks_trained_on_disjoint_shards(finished: dict[str, Any]) -> None:
    job = finished["job"]
    assert job["training"]["world_size"] == 2
    shards = [e for e in finished["events"] if e["kind"] == "ddp_shards"]
    assert shards, "no DDP shard record"
    ranks = shards[0]["data"]["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    first, second = (set(r["shard"]) for r in ranks)
    assert len(first) == len(second) == 3 * DEMO_SHAPES["train_per_class"] // 2  # the training images, split evenly
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
    held_out = make_shapes(tmp_path, train_per_class=0, valid_per_class=3, size=DEMO_SHAPES["size"], seed=999)
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
    assert correct >= 6, f"{correct}/9 held-out images right"  # chance is 3; the model measured 83% on valid/

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
