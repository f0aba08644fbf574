"""A job succeeds on nodes the autoscaler started for it, and the nodes go back to zero; GPU limits refuse at once.

Ray's own autoscaler with its fake multi-node provider starts real raylets as pending work asks for them, exactly
as it would call a cloud API. The head offers 0 CPUs. Worker types, named as the Helm chart's groups, all from
zero: `cpu` (2 CPUs, at most 1 node), `serving` (0 CPUs and the Serve resource, at most 1: where the Serve replica
goes) and `gpu-a10g` (1 CPU and a fake GPU, at most 2: declared so the GPU limits are checked against it; fake
GPUs cannot run NCCL, so no job here uses them).

A default CPU job makes the autoscaler start a `cpu` node; the job says it waits for it meanwhile; Ray Train's two
DDP workers train there; the model deploys on a `serving` node started for the replica; once idle, the `cpu` node
is released, and the job's cost then carries that node's boot and idle tail (its scale-up overhead). A job asking
for more GPU workers than the node types can ever provide fails at once, before anything scales.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import NodeType
from infra.local.autoscaling import HEAD_TYPE, start_autoscaling_head
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.jobs import TERMINAL, poll
from tests.utils.ray_state import serve_replica_nodes
from tests.utils.stack import own_stack

pytestmark = pytest.mark.e2e

WORKER_TYPES = {
    "cpu": NodeType(resources={"CPU": 2}, usd_per_hour=0.384, max_workers=1),
    "serving": NodeType(resources={"CPU": 0, "serving": 1}, usd_per_hour=0.096, max_workers=1),
    "gpu-a10g": NodeType(resources={"CPU": 1, "GPU": 1}, usd_per_hour=1.006, max_workers=2),
}
IDLE_TIMEOUT_S = 6.0
# A default job but for its size: patience null, so the unfrozen epoch runs on Ray Train whatever the head-only
# model scores (a perfect one would be kept without unfreezing).
REQUEST = {"dataset_uri": "s3://autoscaling/shapes", "image_size": 32, "batch_size": 8, "patience": None}
TOO_MANY_GPUS = {"dataset_uri": "s3://autoscaling/shapes", "use_gpu": True, "num_workers": 3, "lr": 1e-3}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    node_types = {HEAD_TYPE: NodeType(resources={"CPU": 0}, max_workers=0), **WORKER_TYPES}
    # Every Ray process inherits the head's environment: these limits, rates and the Serve resource reach the
    # drivers and the replicas; the reconciler settles overhead every 2 s.
    env = {
        "TRAINYARD_FIXED_CLUSTER": "false",
        "TRAINYARD_NODE_TYPES": json.dumps({name: t.model_dump() for name, t in node_types.items()}),
        "TRAINYARD_SERVE_RESOURCE": "serving",
        "TRAINYARD_RECONCILE_INTERVAL_S": "2",
    }
    with own_stack(tmp_path_factory.mktemp("autoscaling"), num_cpus=0, env=env, ray=False) as local:
        start_autoscaling_head(local, WORKER_TYPES, idle_timeout_s=IDLE_TIMEOUT_S)
        local.start_api()
        yield local


def _cpu_nodes(stack: LocalStack, alive: bool = True) -> list[str]:
    """The cpu-type nodes Ray lists: alive ones, or (alive=False) every one it has seen, released ones included."""
    return [
        n["node_id"]
        for n in stack.ray_nodes()
        if (n["state"] == "ALIVE" or not alive)
        and n["resources_total"].get("CPU")
        and not n["resources_total"].get("GPU")
    ]


def _serving_node(stack: LocalStack) -> str | None:
    alive = [n for n in stack.ray_nodes() if n["state"] == "ALIVE"]
    return next((n["node_id"] for n in alive if "serving" in n["resources_total"]), None)


@pytest.fixture(scope="module")
def run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Submit the job and the impossible GPU one; watch the job and Ray's nodes until the job's nodes are gone and
    its cost is settled."""
    data = make_shapes(tmp_path_factory.mktemp("data") / "shapes", train_per_class=8, valid_per_class=3, size=40)
    upload_folder(stack.s3_client(), data, "autoscaling", "shapes")
    seen: dict[str, Any] = {"waiting": [], "cpu_nodes_before": _cpu_nodes(stack), "cpu_nodes": set()}
    with stack.api_client(timeout=120) as api:
        job_id = api.post("/v1/jobs", json=REQUEST).json()["id"]
        too_many = api.post("/v1/jobs", json=TOO_MANY_GPUS).json()["id"]
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            job = api.get(f"/v1/jobs/{job_id}").json()
            if job["waiting"]:
                seen["waiting"].append(job["waiting"])
            seen["cpu_nodes"] |= set(_cpu_nodes(stack))
            if job["status"] in TERMINAL:
                break
            time.sleep(0.5)
        seen["job"] = job
        seen["too_many"] = api.get(f"/v1/jobs/{too_many}").json()
        if job.get("model"):
            image = next((data / "valid" / "circle").iterdir()).read_bytes()
            seen["prediction"] = api.post(f"/v1/models/{job['model']['id']}/predict", content=image)
            seen["replica_nodes"], seen["serving_node"] = serve_replica_nodes(stack), _serving_node(stack)
        ended = time.monotonic()
        poll(lambda: not _cpu_nodes(stack), 120, "the cpu node's release")
        seen["cpu_nodes_after"] = _cpu_nodes(stack)
        seen["released_after_s"] = time.monotonic() - ended

        def settled() -> dict[str, Any] | None:
            cost = api.get(f"/v1/jobs/{job_id}").json()["cost"]
            return cost if (cost.get("overhead") or {}).get("settled") else None

        seen["cost"] = poll(settled, 60, "the job's scale-up overhead settled")
        # A node can live between two of the loop's looks (a short stage on a busy machine): Ray's list of every
        # node it has seen, released ones included, has them all.
        seen["cpu_nodes"] |= set(_cpu_nodes(stack, alive=False))
        seen["events"] = api.get(f"/v1/jobs/{job_id}/events").json()["events"]
    return seen


def test_a_default_job_succeeds_training_on_nodes_the_autoscaler_started(run: dict[str, Any]) -> None:
    assert run["cpu_nodes_before"] == []
    job = run["job"]
    assert job["status"] == "succeeded", job["error"]
    training = job["training"]
    assert training["world_size"] == 2 and training["backend"] == "gloo"
    # Both DDP ranks ran on node(s) that did not exist when the job was submitted.
    assert {r["node_id"] for r in training["ranks"]} <= run["cpu_nodes"], (training, run["cpu_nodes"])


def test_the_job_says_it_waits_for_its_workers_while_they_start(run: dict[str, Any]) -> None:
    assert run["waiting"], "the job never said it was waiting"
    first = run["waiting"][0]
    assert first["message"].startswith("waiting for 1 CPU worker(s); the cluster is scaling up (waited ")
    assert first["resources"]["CPU"] >= 1
    assert run["job"]["waiting"] is None  # cleared once the workers were placed
    kinds = [e["kind"] for e in run["events"]]
    assert kinds.index("waiting") < kinds.index("resources") < kinds.index("succeeded") < kinds.index("overhead")


def test_it_deploys_on_a_serving_node_started_for_the_replica(run: dict[str, Any]) -> None:
    assert run["prediction"].status_code == 200, run["prediction"].text
    assert run["serving_node"] and run["replica_nodes"] == [run["serving_node"]]


def test_idle_nodes_are_released_back_to_zero(run: dict[str, Any]) -> None:
    assert run["cpu_nodes_after"] == []
    assert run["released_after_s"] < 90


def test_the_cost_prices_the_work_and_the_scale_up_it_caused(run: dict[str, Any]) -> None:
    cost = run["cost"]
    for item in cost["usage"]:
        assert item["node_type"] == "cpu" and item["estimated_usd"] > 0
        assert item["usd_per_hour"] == pytest.approx(0.384 * item["cpus"] / 2, abs=1e-6)
    # One cpu node, or more when a gap between the job's stages outlasted the 6 s idle timeout and the
    # autoscaler released the node and started another for the next stage: each is the job's overhead.
    nodes = cost["overhead"]["nodes"]
    assert nodes and all(n["node_type"] == "cpu" and n["usd_per_hour"] == 0.384 for n in nodes), nodes
    assert all(0 <= n["boot_seconds"] < 120 for n in nodes) and nodes[0]["boot_seconds"] > 0  # wait -> joined
    assert IDLE_TIMEOUT_S / 2 < nodes[-1]["idle_seconds"] < 120  # the autoscaler's idle timeout, and its polling
    for node in nodes:
        assert node["estimated_usd"] == pytest.approx(
            0.384 * (node["boot_seconds"] + node["idle_seconds"]) / 3600, abs=1e-7
        )
    assert cost["total_usd"] == pytest.approx(cost["estimated_usd"] + cost["overhead"]["estimated_usd"], abs=1e-5)
    [story] = [e for e in run["events"] if e["kind"] == "overhead"]
    assert "boot" in story["message"] and "idle" in story["message"]


def test_more_gpu_workers_than_the_node_types_allow_fails_at_once(run: dict[str, Any]) -> None:
    job = run["too_many"]
    assert job["status"] == "failed"
    assert (job["error"]["phase"], job["error"]["code"]) == ("validating", "not_enough_gpus")
    assert "at most 2" in job["error"]["message"] and "gpu-a10g: max_workers 2" in job["error"]["message"]
