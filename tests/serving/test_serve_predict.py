"""The prediction API on real Ray Serve and real HTTP: a tiny published model, the API in front of it.

One model (EfficientNet-Lite0 at 32 px: the offline ImageNet body and an untrained head, so answers differ
by image and are deterministic, which is all these tests need) is published and deployed once for the
module on the session's Ray stack. A second Serve app with a queue of one shows what overload looks like;
it is deleted at the end.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from core.backbones import build_classifier, local_pretrained_weights
from core.settings import Settings
from core.spec import JobParams
from core.store import JobStore, ModelRecord
from infra.local.stack import LocalStack
from jobs.stages.publish import publish_model

pytestmark = pytest.mark.e2e

MODEL_ID = "mdl-hot-path"
CLASSES = ["red", "green", "blue"]
REPO = Path(__file__).resolve().parents[2]
OVERLOAD_APP = "overload-test"
# Deploys the model on the stack's app, and a second app whose replica holds 1 request and whose proxy queues 1.
DEPLOY = f"""
import sys, ray
from ray import serve
from core.s3 import s3_client
from core.settings import get_settings
from serving.app import AppArgs, build_app
from serving.deploy import deploy_model
ray.init()
print(deploy_model(s3_client(), get_settings(), sys.argv[1], sys.argv[2]))
small = AppArgs(max_ongoing_requests=1, max_queued_requests=1, max_batch_size=1)
serve.run(build_app(small), name="{OVERLOAD_APP}", route_prefix="/{OVERLOAD_APP}")
"""
STATS = f"""
import json, ray
from ray import serve
from serving.deploy import APP_NAME
ray.init()
print(json.dumps(serve.get_app_handle(APP_NAME).options(multiplexed_model_id="{MODEL_ID}").stats.remote().result()))
"""
UNDEPLOY = f"import ray; from ray import serve; ray.init(); serve.delete('{OVERLOAD_APP}')"


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED, GREEN, BLUE = png((220, 20, 20)), png((20, 220, 20)), png((20, 20, 220))


def _ray(stack: LocalStack, script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=stack.env() | {"RAY_ADDRESS": f"127.0.0.1:{stack.config.gcs_port}"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def deployed(api_stack: LocalStack) -> Iterator[str]:
    """The model's version (its job id), published, deployed and listed in the API's store."""
    s3 = api_stack.s3_client()
    settings = Settings(artifact_uri=api_stack.env().get("TRAINYARD_ARTIFACT_URI") or Settings().artifact_uri)
    torch.manual_seed(0)
    # The offline ImageNet body: a randomly initialised one maps every image to the same features.
    weights = local_pretrained_weights("efficientnet_lite0")
    model = build_classifier("efficientnet_lite0", len(CLASSES), weights=weights).eval()
    store = JobStore.from_url(api_stack.database_url)
    job, _ = store.create_job(JobParams(dataset_uri="s3://hot-path/none", image_size=32))
    # Ended at once, so the API's dispatcher never hands this made-up job to Ray.
    assert store.succeed(job.id, MODEL_ID)
    uri = publish_model(s3, settings, job.id, model, "efficientnet_lite0", CLASSES, 32, {})
    store.add_model(
        ModelRecord(
            id=MODEL_ID, job_id=job.id, artifact_uri=uri, arch="efficientnet_lite0", classes=CLASSES,
            created_at=datetime.now(UTC),
        )
    )  # fmt: skip
    store.engine.dispose()
    _ray(api_stack, DEPLOY, MODEL_ID, uri)
    yield job.id
    _ray(api_stack, UNDEPLOY)


@pytest.fixture(scope="module")
def api(stack_api: httpx.Client, deployed: str) -> httpx.Client:
    return stack_api


def predict(api: httpx.Client, image: bytes, **params: Any) -> dict[str, Any]:
    response = api.post(f"/v1/models/{MODEL_ID}/predict", params=params, content=image)
    assert response.status_code == 200, response.text
    return dict(response.json())


def probabilities(answer: dict[str, Any]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in answer["predictions"]}


def test_an_answer_names_its_version_and_where_the_time_went(api: httpx.Client, deployed: str) -> None:
    answer = predict(api, RED, top_k=2)
    assert (answer["model_id"], answer["model_version"]) == (MODEL_ID, deployed)
    assert len(answer["predictions"]) == 2 and set(probabilities(answer)) <= set(CLASSES)
    timing = answer["timing_ms"]
    assert set(timing) == {"preprocess", "queue", "inference", "replica", "total"}
    assert 0 < timing["inference"] <= timing["replica"] <= timing["total"]
    assert answer["batch_size"] >= 1

    as_file = api.post(f"/v1/models/{MODEL_ID}/predict", params={"top_k": 2}, files={"file": ("r.png", RED)})
    assert probabilities(as_file.json()) == probabilities(answer)
    full = probabilities(predict(api, RED))
    assert sum(full.values()) == pytest.approx(1, abs=1e-4)
    tta = probabilities(predict(api, RED, tta="true"))  # a uniform image is its own mirror
    assert tta == pytest.approx(full, abs=1e-4)


def test_predict_batch_answers_each_image_as_predict_does(api: httpx.Client) -> None:
    files = [("files", (f"{i}.png", image, "image/png")) for i, image in enumerate((RED, GREEN, BLUE, RED))]
    response = api.post(f"/v1/models/{MODEL_ID}/predict:batch", files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["batch_size"] >= 4
    results = [{p["label"]: p["probability"] for p in r["predictions"]} for r in answer["results"]]
    singles = [probabilities(predict(api, image)) for image in (RED, GREEN, BLUE)]
    for got, expected in zip(results, [*singles, singles[0]], strict=True):
        assert got == pytest.approx(expected, abs=1e-4)
    assert results[0] != pytest.approx(results[2], abs=1e-4)  # the images differ, so must their answers


def test_bad_input_is_a_4xx_naming_the_field(api: httpx.Client) -> None:
    url = f"/v1/models/{MODEL_ID}/predict"
    cases = {
        "text/plain": (api.post(url, content=b"hello", headers={"content-type": "text/plain"}), 415, "body"),
        "garbage png": (api.post(url, content=b"\x89PNG garbage", headers={"content-type": "image/png"}), 422, "body"),
        "second of two": (
            api.post(f"{url}:batch", files=[("files", ("a.png", RED)), ("files", ("b.png", b"nope"))]),
            422,
            "files[1]",
        ),
        "too many": (api.post(f"{url}:batch", files=[("files", ("a.png", RED))] * 17), 413, "files"),
        "tta": (api.post(url, params={"tta": "maybe"}, content=RED), 422, "tta"),
    }
    for name, (response, status, field) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["field"] == field, name


def test_concurrent_requests_share_forward_passes(ray_stack: LocalStack, api: httpx.Client) -> None:
    expected = probabilities(predict(api, GREEN))
    url = f"{ray_stack.config.serve_url}/classify"
    headers = {"serve_multiplexed_model_id": MODEL_ID, "content-type": "image/png"}
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: client.post(url, content=GREEN, headers=headers), range(48)))
    assert [a.status_code for a in answers] == [200] * 48
    assert max(a.json()["batch_size"] for a in answers) > 1
    for answer in answers:
        assert probabilities(answer.json()) == pytest.approx(expected, abs=1e-4)


def test_the_replica_runs_its_forwards_with_the_threads_it_was_given(ray_stack: LocalStack, deployed: str) -> None:
    stats = json.loads(_ray(ray_stack, STATS).strip().splitlines()[-1])
    # Asked of the forward thread: Ray's OMP_NUM_THREADS=1 for a replica that reserved no CPU is not what it runs.
    assert stats["torch_threads"] == max(1, len(os.sched_getaffinity(0)) - 1)
    if os.geteuid() == 0:  # Ray starts workers at nice 15; a replica that may renice itself serves at 0
        assert stats["nice"] == 0


def test_past_the_queue_limit_serve_answers_503_with_retry_after(ray_stack: LocalStack, deployed: str) -> None:
    url = f"{ray_stack.config.serve_url}/{OVERLOAD_APP}"
    headers = {"serve_multiplexed_model_id": MODEL_ID, "content-type": "image/png"}
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(12) as pool:
        assert client.post(url, content=RED, headers=headers).status_code == 200  # the model is loaded
        answers = list(pool.map(lambda _: client.post(url, content=RED, headers=headers), range(36)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
