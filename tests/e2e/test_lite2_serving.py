"""A model trained on EfficientNet-Lite2 (picked by `arch: auto`) serves, through the endpoint, what its evaluation
scored.

The job runs the whole pipeline on the bigger backbone (features, the head-only epoch, an unfrozen epoch on Ray
Train, the artifact, the replica's TorchScript graph); each of the 50 validation images, sent to the predict
endpoint, must get the top-1 label that the validation logits saved with the job's best checkpoint give it, with
the same probability. Small images (64 px) keep it to a job of seconds on generated shapes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from core.artifact import ARTIFACT_NAME, load_artifact
from core.s3 import s3_client
from core.spec import S3Location
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from jobs.stages.validate import validate_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# arch auto: 36 training images fit any backbone's time budget, so the choice is Lite2 (and says so). patience null:
# the unfrozen epoch runs even when the head alone is perfect, so the served model is one that Ray Train's worker
# (jobs.train_loop over jobs.unfrozen) trained and checkpointed.
REQUEST = {
    "arch": "auto",
    "image_size": 64,
    "batch_size": 12,
    "num_workers": 1,
    "epochs": 1,
    "patience": None,
}


@pytest.fixture(scope="module")
def api(ray_stack: LocalStack) -> Iterator[httpx.Client]:
    ray_stack.start_api()
    with ray_stack.api_client(timeout=60) as client:
        yield client
    ray_stack.stop_api()


@pytest.fixture(scope="module")
def shapes(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_shapes(tmp_path_factory.mktemp("lite2") / "shapes", train_per_class=12, valid_per_class=17, size=64)
    next(iter(sorted((root / "valid" / "circle").iterdir()))).unlink()  # 3 x 17 - 1 = 50 validation images
    upload_folder(s3_client(), root, "e2e-lite2", "shapes")
    return root


def _get(s3: Any, uri: str) -> bytes:
    location = S3Location.parse(uri)
    return s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()  # type: ignore[no-any-return]


def test_a_lite2_model_serves_the_top1_its_evaluation_scored(api: httpx.Client, shapes: Path) -> None:
    posted = api.post("/v1/jobs", json={"dataset_uri": "s3://e2e-lite2/shapes", **REQUEST})
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["id"]
    deadline = time.monotonic() + 600
    while (job := api.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["status"] == "succeeded", job.get("error")
    assert job["params"]["arch"] == "auto" and job["evaluation"]["images"] == 50
    chosen = [e for e in api.get(f"/v1/jobs/{job_id}/events").json()["events"] if e["kind"] == "backbone_chosen"]
    assert [e["data"]["arch"] for e in chosen] == ["efficientnet_lite2"], chosen
    assert "36 training images" in chosen[0]["message"] and chosen[0]["data"]["image_size"] == 64
    assert [m["stage"] for m in job["metrics"]] == ["frozen", "unfrozen"]

    s3 = s3_client()
    meta, _ = load_artifact(api.get(job["artifacts"][ARTIFACT_NAME]).raise_for_status().content)
    assert (meta.arch, meta.image_size) == ("efficientnet_lite2", 64)
    logits = torch.load(io.BytesIO(_get(s3, job["best"]["predictions_uri"])), weights_only=True)["valid_logits"]
    scored = logits.softmax(1)
    valid = validate_dataset(shapes, "s3://e2e-lite2/shapes", 1.0).valid  # the job's validation order
    classes = job["dataset"]["classes"]
    agree, correct = 0, 0
    for item, probs in zip(valid, scored, strict=True):
        answer = api.post(f"/v1/models/{job['model']['id']}/predict?top_k=1", content=(shapes / item.path).read_bytes())
        assert answer.status_code == 200, answer.text
        top = answer.json()["predictions"][0]
        assert top["label"] == classes[int(probs.argmax())], item.path
        assert top["probability"] == pytest.approx(float(probs.max()), abs=2e-3), item.path
        agree += 1
        correct += top["label"] == classes[item.label]
    assert agree == 50
    assert correct == round(job["evaluation"]["accuracy"] * 50)
