"""Serve's autoscaling: `min_replicas: 0` and the cold start after it, and replicas added under load.

`TRAINYARD_SERVE_MIN_REPLICAS=0` is what lets GPU nodes under the replicas scale to zero too. The first test
deploys a model, waits until Serve has released every replica, then times the first prediction (replica
start plus model load) against a warm one. The numbers are printed (`pytest -s`) and quoted in the README.
The second runs the same classifier as a second application with short autoscaling delays, keeps 16
requests in flight until Serve adds a replica, then stops and waits for it to go again.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.backbones import build_classifier
from core.settings import Settings
from infra.local.stack import LocalStack
from jobs.stages.publish import publish_model
from serving.registry import ModelPointer, object_exists, pointer_uri, write_pointer
from tests.utils.stack import own_stack

pytestmark = pytest.mark.e2e

MODEL_ID = "mdl-cold-start"
REPO = Path(__file__).resolve().parents[2]
DEPLOY = """
import sys, ray
from core.s3 import s3_client
from core.settings import get_settings
from serving.deploy import deploy_model
ray.init()
print(deploy_model(s3_client(), get_settings(), sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"TRAINYARD_SERVE_MIN_REPLICAS": "0", "TRAINYARD_SERVE_DOWNSCALE_DELAY_S": "1"}
    with own_stack(tmp_path_factory.mktemp("scale-to-zero"), num_cpus=1, env=env, api=False) as local:
        yield local


def _replicas(stack: LocalStack, app_name: str = "trainyard") -> int:
    token = stack.config.ray_token_file.read_text().strip()
    response = httpx.get(
        f"{stack.config.dashboard_url}/api/serve/applications/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    app = response.json()["applications"].get(app_name) or {}
    return sum(len(d.get("replicas", [])) for d in app.get("deployments", {}).values())


def _predict(stack: LocalStack, image: bytes) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = httpx.post(
        f"{stack.config.serve_url}/classify",
        content=image,
        headers={"serve_multiplexed_model_id": MODEL_ID, "content-type": "image/png"},
        timeout=120,
    )
    return time.monotonic() - started, response


def test_first_prediction_after_scale_to_zero_cold_starts_a_replica(stack: LocalStack) -> None:
    env = stack.env()
    s3 = stack.s3_client()
    settings = Settings(artifact_uri=env.get("TRAINYARD_ARTIFACT_URI") or Settings().artifact_uri)
    model = build_classifier("efficientnet_lite0", 2, weights=None).eval()
    uri = publish_model(s3, settings, "job-cold-start", model, "efficientnet_lite0", ["a", "b"], 32, {})
    deploy = subprocess.run(
        [sys.executable, "-c", DEPLOY, MODEL_ID, uri],
        env=env | {"RAY_ADDRESS": f"127.0.0.1:{stack.config.gcs_port}"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stderr[-3000:]

    deadline = time.monotonic() + 120
    while _replicas(stack) > 0:
        assert time.monotonic() < deadline, "Serve kept its replica with min_replicas=0"
        time.sleep(1)

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    cold_s, cold = _predict(stack, buffer.getvalue())
    assert cold.status_code == 200, cold.text
    assert [p["label"] for p in cold.json()["predictions"]] in (["a", "b"], ["b", "a"])
    warm_s, warm = _predict(stack, buffer.getvalue())
    assert warm.status_code == 200
    assert _replicas(stack) == 1
    print(f"\ncold start (0 replicas -> first prediction): {cold_s:.2f} s; warm prediction: {warm_s * 1000:.0f} ms")
    assert cold_s > warm_s


BURST_APP = """
import ray
from ray import serve
from serving.app import AppArgs, build_app
ray.init()
args = AppArgs(
    min_replicas=1, max_replicas=2, target_ongoing_requests=2, upscale_delay_s=0, downscale_delay_s=2,
    look_back_period_s=2, metrics_interval_s=0.5,
)
serve.run(build_app(args), name="burst", route_prefix="/burst", blocking=False)
"""


def test_replicas_scale_up_under_load_and_back_down(stack: LocalStack) -> None:
    settings = Settings(artifact_uri=stack.env().get("TRAINYARD_ARTIFACT_URI") or Settings().artifact_uri)
    s3 = stack.s3_client()
    if not object_exists(s3, pointer_uri(settings, MODEL_ID)):  # run alone: publish what the first test deploys
        model = build_classifier("efficientnet_lite0", 2, weights=None).eval()
        uri = publish_model(s3, settings, "job-cold-start", model, "efficientnet_lite0", ["a", "b"], 32, {})
        write_pointer(s3, settings, ModelPointer(model_id=MODEL_ID, artifact_uri=uri))
    started = subprocess.run(
        [sys.executable, "-c", BURST_APP],
        env=stack.env() | {"RAY_ADDRESS": f"127.0.0.1:{stack.config.gcs_port}"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (30, 200, 30)).save(buffer, format="PNG")
    image = buffer.getvalue()
    stop = threading.Event()
    answers: list[int] = []

    def keep_asking() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                response = client.post(
                    f"{stack.config.serve_url}/burst",
                    content=image,
                    headers={"serve_multiplexed_model_id": MODEL_ID, "content-type": "image/png"},
                )
                answers.append(response.status_code)

    load_began = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        for _ in range(16):
            pool.submit(keep_asking)
        try:
            while _replicas(stack, "burst") < 2:
                assert time.monotonic() - load_began < 240, "Serve did not add a replica under 16 requests in flight"
                time.sleep(1)
            scaled_up_s = time.monotonic() - load_began
        finally:
            stop.set()
    assert answers and set(answers) == {200}, f"answers under load: {sorted(set(answers))}"

    idle_began = time.monotonic()
    while _replicas(stack, "burst") > 1:
        assert time.monotonic() - idle_began < 240, "Serve kept the second replica after the load stopped"
        time.sleep(1)
    print(
        f"\nscale-up under 16 in flight: {scaled_up_s:.1f} s; back to 1 replica {time.monotonic() - idle_began:.1f} s "
        f"after the load stopped; {len(answers)} answers, all 200"
    )
