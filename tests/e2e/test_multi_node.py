"""A job on a Ray cluster of three nodes, as in production: nothing in the pipeline may assume one node.

The head runs the API's Ray Jobs (drivers), the Serve control plane and proxy, and offers 0 CPUs, so no
training work can land there. Two worker nodes join it with `ray start --address`, 1 CPU each and each
with its own Trainyard home and cache: a task that relied on files another node wrote would fail. The
job asks for 2 Ray Train workers, which can only be placed one per node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack, WorkerNode
from tests.utils.stack import own_stack

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, list[WorkerNode]]]:
    with own_stack(tmp_path_factory.mktemp("multi-node"), num_cpus=0) as stack:
        yield stack, [stack.start_worker_node(f"worker-{i}", num_cpus=1) for i in (1, 2)]


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
    worker_ids = {w.node_id for w in workers}
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
        assert item["node_id"] in {w.node_id for w in workers}
    # The head (the driver's node) offers no CPUs, so the extraction went to a worker node as a Ray task.
    assert [e["data"]["ran_in"] for e in finished["events"] if e["kind"] == "features"] == ["task"]


def test_each_worker_node_fetched_into_its_own_cache(cluster: tuple[LocalStack, list[WorkerNode]]) -> None:
    stack, workers = cluster
    for worker in workers:
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
    assert len(alive) == 3
    head = next(n for n in alive if n["is_head_node"])
    assert head["resources_total"].get("CPU", 0) == 0
    assert {n["node_id"] for n in alive if not n["is_head_node"]} == {w.node_id for w in workers}
