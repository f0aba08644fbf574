"""GPU workers that scale from zero, simulated with Ray's own autoscaler and fake multi-node provider.

The head (0 CPUs) declares one worker type, `gpu` (1 CPU, a fake `GPU: 1`, 0 to 2 nodes). A job asking for
`use_gpu: true, num_workers: 2` makes the autoscaler start two GPU nodes; while they start, the job says
it waits for them. The nodes have no real GPU, so the job then fails when Ray Train sets up NCCL on them
("ProcessGroupNCCL is only supported with GPUs, no GPUs found!"), as `gpu_unavailable` with that line;
once idle, the nodes are released, back to zero. A job asking for more GPU
workers than the node types can ever provide fails at once, before anything scales.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import NodeType
from infra.local.autoscaling import start_autoscaling_head
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.stack import own_stack

pytestmark = pytest.mark.e2e

GPU_TYPES = {"gpu": NodeType(resources={"CPU": 1, "GPU": 1}, usd_per_hour=1.0, max_workers=2)}
IDLE_TIMEOUT_S = 6.0
# lr given and no head-only epochs: the job goes straight to Ray Train, the part that scales the cluster.
REQUEST = {
    "dataset_uri": "s3://autoscaling/shapes",
    "use_gpu": True,
    "num_workers": 2,
    "lr": 1e-3,
    "freeze_epochs": 0,
    "epochs": 1,
    "image_size": 32,
    "batch_size": 8,  # global: 4 per worker
    "deploy": False,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    node_types = {"head": NodeType(resources={"CPU": 0}, max_workers=1), **GPU_TYPES}
    # Every Ray process inherits the head's environment: these limits and rates reach the drivers.
    env = {
        "TRAINYARD_FIXED_CLUSTER": "false",
        "TRAINYARD_NODE_TYPES": json.dumps({name: t.model_dump() for name, t in node_types.items()}),
    }
    with own_stack(tmp_path_factory.mktemp("autoscaling"), num_cpus=0, env=env, ray=False) as local:
        start_autoscaling_head(local, GPU_TYPES, idle_timeout_s=IDLE_TIMEOUT_S)
        local.start_api()
        yield local


def _gpu_nodes(stack: LocalStack) -> list[str]:
    return [n["node_id"] for n in stack.ray_nodes() if n["state"] == "ALIVE" and n["resources_total"].get("GPU")]


@pytest.fixture(scope="module")
def run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Submit the GPU job and the oversized one; watch the job's status and Ray's node list until both end."""
    s3 = stack.s3_client()
    data = make_shapes(tmp_path_factory.mktemp("data") / "shapes", train_per_class=4, valid_per_class=2, size=40)
    upload_folder(s3, data, "autoscaling", "shapes")
    seen: dict[str, Any] = {"waiting": [], "gpu_nodes_before": _gpu_nodes(stack), "most_gpu_nodes": 0}
    with stack.api_client() as api:
        job_id = api.post("/v1/jobs", json=REQUEST).json()["id"]
        too_big = api.post("/v1/jobs", json=REQUEST | {"num_workers": 3}).json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = api.get(f"/v1/jobs/{job_id}").json()
            if job["waiting"]:
                seen["waiting"].append(job["waiting"])
            seen["most_gpu_nodes"] = max(seen["most_gpu_nodes"], len(_gpu_nodes(stack)))
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        seen["job"] = job
        seen["too_big"] = api.get(f"/v1/jobs/{too_big}").json()
    ended = time.monotonic()
    while _gpu_nodes(stack) and time.monotonic() - ended < 120:
        time.sleep(1)
    seen["released_after_s"] = time.monotonic() - ended
    seen["gpu_nodes_after"] = _gpu_nodes(stack)
    return seen


def test_a_gpu_job_scales_the_cluster_from_zero_to_two_gpu_nodes(run: dict[str, Any]) -> None:
    assert run["gpu_nodes_before"] == []
    assert run["most_gpu_nodes"] == 2


def test_the_job_says_it_waits_for_the_gpu_workers_while_they_start(run: dict[str, Any]) -> None:
    assert run["waiting"], "the job never said it was waiting"
    first = run["waiting"][0]
    assert first["message"].startswith("waiting for 2 GPU worker(s); the cluster is scaling up (waited ")
    assert first["resources"]["GPU"] == 2 and first["workers"] == 2
    assert run["job"]["waiting"] is None  # cleared once the workers were placed


def test_without_a_real_gpu_the_job_fails_saying_so(run: dict[str, Any]) -> None:
    job = run["job"]
    assert job["status"] == "failed"
    assert (job["error"]["phase"], job["error"]["code"]) == ("training", "gpu_unavailable")
    assert "GPU" in job["error"]["message"] and "Traceback" not in job["error"]["message"]


def test_idle_gpu_nodes_are_released_back_to_zero(run: dict[str, Any]) -> None:
    assert run["gpu_nodes_after"] == []
    assert run["released_after_s"] < 90


def test_more_gpu_workers_than_the_node_types_allow_fails_at_once(run: dict[str, Any]) -> None:
    job = run["too_big"]
    assert job["status"] == "failed"
    assert (job["error"]["phase"], job["error"]["code"]) == ("validating", "not_enough_gpus")
    assert "at most 2" in job["error"]["message"] and "gpu: max_workers 2" in job["error"]["message"]
