"""A job on a Ray cluster of four nodes named as the Helm chart names them: nothing in the pipeline may assume one
node, and the bill and the Serve replica's place follow the chart's node groups.

The head (`headgroup`) runs the API's Ray Jobs (drivers), the Serve control plane and proxy, and offers 0 CPUs, so
no training work can land there. Two GPU-group nodes join it with `ray start --address`, `gpu-a10g` (on-demand) and
`gpu-l4` (spot), each with 1 CPU and a fake GPU, their own Trainyard home and cache (a task that relied on files
another node wrote would fail), and RAY_NODE_TYPE_NAME set to the group's name as KubeRay sets it. The job asks
for 2 Ray Train CPU workers, which can only be placed one per GPU-group node. A `serving` node offers 0 CPUs and
the chart's Serve resource: the only place a Serve replica fits. Prices and the Serve resource are what the chart
renders (`TRAINYARD_NODE_TYPES`, `TRAINYARD_SERVE_RESOURCE`), with the L4 group switched to spot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from core.settings import NodeType, Settings
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack, WorkerNode
from tests.helm.chart import config_data, fetch_helm, render
from tests.utils.ray_state import serve_replica_nodes
from tests.utils.stack import own_stack, start_ray

pytestmark = pytest.mark.e2e

REQUEST = {
    "dataset_uri": "s3://multi-node/shapes",
    "epochs": 1,
    "freeze_epochs": 1,
    "batch_size": 16,  # global: 8 per worker
    "image_size": 32,
    "num_workers": 2,
    "patience": None,  # the unfrozen epoch runs whatever the head-only model scores: it is what spans the nodes
}
GPU_GROUPS = ("gpu-a10g", "gpu-l4")
CHART_SETS = ("ray.workerGroups.gpu-l4.enabled=true", "ray.workerGroups.gpu-l4.capacityType=spot")


def _chart_config() -> dict[str, str]:
    """The settings the chart renders for the Ray pods, with a second GPU group on spot capacity."""
    return config_data(render(fetch_helm(), None, *CHART_SETS))


@pytest.fixture(scope="module")
def chart() -> dict[str, str]:
    return _chart_config()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, chart: dict[str, str]
) -> Iterator[tuple[LocalStack, list[WorkerNode]]]:
    env = {name: chart[name] for name in ("TRAINYARD_NODE_TYPES", "TRAINYARD_SERVE_RESOURCE", "TRAINYARD_RATES_AS_OF")}
    with own_stack(tmp_path_factory.mktemp("multi-node"), num_cpus=0, env=env, ray=False) as stack:
        start_ray(stack, extra_env={"RAY_NODE_TYPE_NAME": "headgroup"})
        workers = [
            stack.start_worker_node(group, num_cpus=1, num_gpus=1, env={"RAY_NODE_TYPE_NAME": group})
            for group in GPU_GROUPS
        ]
        serve_resource = chart["TRAINYARD_SERVE_RESOURCE"]
        workers.append(
            stack.start_worker_node(
                "serving", num_cpus=0, resources={serve_resource: 1}, env={"RAY_NODE_TYPE_NAME": "serving"}
            )
        )
        stack.start_api()
        yield stack, workers


def _wait(api: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s: {job}")


@pytest.fixture(scope="module")
def finished(cluster: tuple[LocalStack, list[WorkerNode]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stack, _ = cluster
    s3 = stack.s3_client()
    data = make_shapes(tmp_path_factory.mktemp("data") / "shapes", train_per_class=8, valid_per_class=4, size=40)
    upload_folder(s3, data, "multi-node", "shapes")
    with stack.api_client() as api:
        submitted = api.post("/v1/jobs", json=REQUEST)
        assert submitted.status_code == 202, submitted.text
        job = _wait(api, submitted.json()["id"], timeout=400)
        prediction = None
        if job.get("model"):
            image = next((data / "valid" / "circle").iterdir()).read_bytes()
            prediction = api.post(f"/v1/models/{job['model']['id']}/predict", content=image)
        metrics = api.get("/metrics").text
        events = api.get(f"/v1/jobs/{job['id']}/events").json()["events"]
    return {"job": job, "prediction": prediction, "metrics": metrics, "events": events}


def test_job_succeeds_with_training_on_two_worker_nodes(
    cluster: tuple[LocalStack, list[WorkerNode]], finished: dict[str, Any]
) -> None:
    stack, workers = cluster
    job = finished["job"]
    assert job["status"] == "succeeded", job["error"]
    head = [n["node_id"] for n in stack.ray_nodes() if n["is_head_node"]]
    worker_ids = {w.node_id for w in workers if w.name in GPU_GROUPS}
    ranks = job["training"]["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert {r["node_id"] for r in ranks} == worker_ids, (ranks, worker_ids, head)


def test_feature_and_evaluation_tasks_ran_on_worker_nodes(
    cluster: tuple[LocalStack, list[WorkerNode]], finished: dict[str, Any]
) -> None:
    _, workers = cluster
    usage = finished["job"]["cost"]["usage"]
    by_work = {u["work"]: u for u in usage if u["work"] != "training"}
    # No evaluation task: the final evaluation reads the validation logits saved with the best checkpoint.
    assert set(by_work) == {"features"}
    for item in by_work.values():
        assert item["node_id"] in {w.node_id for w in workers if w.name in GPU_GROUPS}
    # The head (the driver's node) offers no CPUs, so the extraction went to a worker node as a Ray task.
    assert [e["data"]["ran_in"] for e in finished["events"] if e["kind"] == "features"] == ["task"]


def test_each_worker_node_fetched_into_its_own_cache(cluster: tuple[LocalStack, list[WorkerNode]]) -> None:
    stack, workers = cluster
    for worker in workers:
        if worker.name in GPU_GROUPS:
            assert any((worker.cache_dir / "datasets").glob("*/train/circle/*.png")), f"{worker.name} fetched nothing"
    # The head fetched and validated too, into its own cache: three separate copies, no shared folder.
    assert any((stack.config.home / "cache" / "datasets").glob("*/train/circle/*.png"))


def test_cost_is_consistent_with_wall_time_and_workers(finished: dict[str, Any]) -> None:
    job = finished["job"]
    cost = job["cost"]
    wall = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
    training = [u for u in cost["usage"] if u["work"] == "training"]
    assert [u["cpus"] for u in training] == [1.0, 1.0] and {u["rank"] for u in training} == {0, 1}
    for item in cost["usage"]:
        assert 0 < item["seconds"] <= wall
    # Two CPUs at most were ever held at once (two 1-CPU workers), so never more than 2 x the job's wall time.
    assert 0 < cost["cpu_seconds"] <= 2 * wall
    assert cost["cpu_seconds"] == pytest.approx(sum(u["cpus"] * u["seconds"] for u in cost["usage"]), abs=0.01)
    assert cost["gpu_seconds"] == 0
    assert cost["estimated_usd"] > 0 and cost["rates_as_of"]
    assert 'trainyard_job_cpu_seconds{status="succeeded"}' in finished["metrics"]
    assert 'trainyard_job_estimated_cost_usd{status="succeeded"}' in finished["metrics"]


def test_the_model_serves_from_the_multi_node_cluster(finished: dict[str, Any]) -> None:
    prediction = finished["prediction"]
    assert prediction is not None and prediction.status_code == 200, prediction and prediction.text
    assert prediction.json()["predictions"]


def test_the_head_offers_no_cpus_to_training(cluster: tuple[LocalStack, list[WorkerNode]]) -> None:
    stack, workers = cluster
    alive = [n for n in stack.ray_nodes() if n["state"] == "ALIVE"]
    assert len(alive) == 4
    head = next(n for n in alive if n["is_head_node"])
    assert head["resources_total"].get("CPU", 0) == 0
    assert {n["node_id"] for n in alive if not n["is_head_node"]} == {w.node_id for w in workers}


def test_each_piece_of_work_is_priced_at_its_groups_rate_spot_at_the_spot_rate(
    finished: dict[str, Any], chart: dict[str, str]
) -> None:
    types: dict[str, NodeType] = Settings(node_types=json.loads(chart["TRAINYARD_NODE_TYPES"])).node_types
    cost = finished["job"]["cost"]
    ranks = {u["node_type"]: u for u in cost["usage"] if u["work"] == "training"}
    assert set(ranks) == set(GPU_GROUPS)
    # One CPU of the group's three: a third of the node's billed rate; the L4 group runs on spot.
    assert ranks["gpu-a10g"]["usd_per_hour"] == pytest.approx(1.006 / 3, abs=1e-6)
    assert ranks["gpu-l4"]["usd_per_hour"] == pytest.approx(0.35 / 3, abs=1e-6)
    for item in cost["usage"]:
        group = types[item["node_type"]]
        rate = group.billed_usd_per_hour * item["cpus"] / group.resources["CPU"]  # type: ignore[operator]
        assert item["usd_per_hour"] == pytest.approx(rate, abs=1e-6), item
        assert item["estimated_usd"] == pytest.approx(rate * item["seconds"] / 3600, abs=1e-7), item
        assert item["estimated_usd"] > 0  # CPU work on a GPU group costs the share of the node it held
    assert cost["estimated_usd"] == pytest.approx(sum(u["estimated_usd"] for u in cost["usage"]), abs=1e-5)


def test_the_serve_replica_runs_on_the_serving_node_only(cluster: tuple[LocalStack, list[WorkerNode]]) -> None:
    stack, workers = cluster
    serving = next(w.node_id for w in workers if w.name == "serving")
    assert serve_replica_nodes(stack) == [serving]  # never the head, never a GPU training node
