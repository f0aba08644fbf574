"""A bill that adds up: TRAINYARD_NODE_TYPES is rendered from the chart's own groups, keyed by the node type
names the work sees, and Serve replicas have a node group of their own.

Ray's autoscaler reads the RayCluster with code in the Ray package
(`ray.autoscaler._private.kuberay.autoscaling_config`); the node types it derives are the ones KubeRay's pods
carry in RAY_NODE_TYPE_NAME (the group name; `headgroup` for the head), so the rendered price list must have
exactly those keys and the same resources and limits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray.autoscaler._private.kuberay import autoscaling_config as kuberay_config

from core.settings import NodeType, Settings
from tests.helm.chart import NAMESPACE, config_data, one, pod_specs, render, render_error

VALUE_SETS = [None, "two-gpu-groups", "spot-gpu-serving", "autoscaling-off", "cpu-only"]


def node_types(manifests: list[dict[str, Any]]) -> dict[str, NodeType]:
    raw = json.loads(config_data(manifests)["TRAINYARD_NODE_TYPES"])
    return Settings(node_types=raw).node_types


def autoscaler_view(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    cluster = one(manifests, "RayCluster")
    cluster["metadata"]["namespace"] = NAMESPACE  # helm template leaves it to the API server
    return dict(kuberay_config._derive_autoscaling_config_from_ray_cr(cluster)["available_node_types"])


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v or "defaults")
def test_node_types_are_keyed_by_the_names_ray_gives_the_nodes(helm: Path, values: str | None) -> None:
    manifests = render(helm, values)
    priced = node_types(manifests)
    seen = autoscaler_view(manifests)
    assert priced.keys() == seen.keys()
    assert kuberay_config._HEAD_GROUP_NAME in priced
    fixed = config_data(manifests)["TRAINYARD_FIXED_CLUSTER"] == "true"
    for name, node_type in priced.items():
        ray_sees = {k: v for k, v in seen[name]["resources"].items() if k != "memory"}
        assert node_type.resources == ray_sees, name
        assert node_type.usd_per_hour and node_type.usd_per_hour > 0, name
        if name != kuberay_config._HEAD_GROUP_NAME:
            assert node_type.max_workers == seen[name]["max_workers"] or fixed, name
            assert node_type.max_workers and node_type.max_workers >= seen[name]["min_workers"], name


def test_spot_groups_are_priced_at_spot_and_pinned_to_spot_nodes(helm: Path) -> None:
    manifests = render(helm, "spot-gpu-serving")
    priced = node_types(manifests)
    assert priced["gpu-a10g"].capacity_type == "spot"
    assert priced["gpu-a10g"].billed_usd_per_hour == priced["gpu-a10g"].spot_usd_per_hour == 0.45
    assert priced["serving"].billed_usd_per_hour == priced["serving"].usd_per_hour == 0.805
    pods = pod_specs(manifests)
    assert pods["RayCluster/gpu-a10g"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    assert pods["RayCluster/serving"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
    assert pods["RayCluster/head"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
    # By default (EKS managed node groups) every group is on-demand and says so.
    ray_pods = [p for name, p in pod_specs(render(helm)).items() if name.startswith("RayCluster/")]
    assert all(p["spec"]["nodeSelector"]["eks.amazonaws.com/capacityType"] == "ON_DEMAND" for p in ray_pods)


def test_cpu_work_is_priced(helm: Path) -> None:
    priced = node_types(render(helm, "cpu-only"))
    assert priced["cpu"].resources == {"CPU": 7.0} and priced["cpu"].billed_usd_per_hour == 0.384


def test_the_rates_carry_their_date(helm: Path) -> None:
    data = config_data(render(helm, None, "config.ratesAsOf=2026-11-01"))
    assert Settings(rates_as_of=data["TRAINYARD_RATES_AS_OF"]).rates_as_of.isoformat() == "2026-11-01"


def test_serve_replicas_have_a_group_of_their_own_and_never_the_head(helm: Path) -> None:
    manifests = render(helm)
    resource = config_data(manifests)["TRAINYARD_SERVE_RESOURCE"]
    assert resource == "serving"
    assert Settings(serve_resource=resource).serve_resource == "serving"
    seen = autoscaler_view(manifests)
    offering = {name for name, t in seen.items() if t["resources"].get(resource, 0) >= 1}
    assert offering == {"serving"}
    serving = seen["serving"]
    # Small CPU nodes from zero: nothing runs, or costs, until a model is deployed.
    assert serving["min_workers"] == 0 and serving["resources"].get("GPU", 0) == 0
    # They offer Ray no CPUs, so that no training or feature task (which all ask for CPUs) can land there, and
    # replicas reserve none.
    assert serving["resources"]["CPU"] == 0 and config_data(manifests)["TRAINYARD_SERVE_REPLICA_CPUS"] == "0"
    # KubeRay passes the group's custom resources to `ray start --resources`.
    group = next(g for g in one(manifests, "RayCluster")["spec"]["workerGroupSpecs"] if g["groupName"] == "serving")
    assert group["resources"] == {"serving": "1"}
    # The pod still gets a real CPU from Kubernetes for the replica to run on.
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"


def test_gpu_serving_is_a_values_change(helm: Path) -> None:
    manifests = render(helm, "spot-gpu-serving")
    seen = autoscaler_view(manifests)
    assert seen["serving"]["resources"]["GPU"] == 1 and seen["serving"]["resources"]["serving"] == 1
    # A GPU training rank ({CPU: 1, GPU: 1}) cannot fit a serving node: it offers no CPUs.
    assert seen["serving"]["resources"]["CPU"] == 0
    assert config_data(manifests)["TRAINYARD_SERVE_REPLICA_GPUS"] == "1"
    assert {k for k, t in seen.items() if "serving" in t["resources"]} == {"serving"}


def test_a_serve_resource_no_group_offers_fails_the_render_naming_the_fix(helm: Path) -> None:
    error = render_error(helm, None, "ray.workerGroups.serving.enabled=false")
    assert "serving.resource" in error and "ray.workerGroups.serving" in error
    anywhere = config_data(render(helm, None, "ray.workerGroups.serving.enabled=false", "serving.resource="))
    assert "TRAINYARD_SERVE_RESOURCE" not in anywhere
