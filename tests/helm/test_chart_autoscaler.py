"""The rendered RayCluster as Ray's own autoscaler reads it.

KubeRay's autoscaler sidecar turns the RayCluster into an autoscaling config with code that ships in the Ray
package (`ray.autoscaler._private.kuberay.autoscaling_config`); running that code on the rendered object shows
what the autoscaler will do with it: which node types it may start, with what resources, and when it stops them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

from tests.helm.chart import NAMESPACE, one, render


def autoscaling_config(helm: Path, values: str | None = None) -> dict[str, Any]:
    cluster = one(render(helm, values), "RayCluster")
    cluster["metadata"]["namespace"] = NAMESPACE  # helm template leaves it to the API server
    return _derive_autoscaling_config_from_ray_cr(cluster)


def test_the_autoscaler_sees_gpu_types_from_zero_and_a_head_without_cpus(helm: Path) -> None:
    config = autoscaling_config(helm, "two-gpu-groups")
    types = config["available_node_types"]
    head = types.pop("headgroup")
    # The head offers Ray no CPUs and no GPUs: training and feature tasks never land there.
    assert head["resources"].get("CPU", 0) == 0 and head["resources"].get("GPU", 0) == 0
    assert types.keys() == {"gpu-a10g", "gpu-l4", "serving"}
    assert types["gpu-a10g"]["resources"]["GPU"] == 1 and types["gpu-l4"]["resources"]["GPU"] == 2
    assert types["gpu-a10g"]["resources"]["CPU"] == 3
    assert all(t["min_workers"] == 0 for t in types.values())
    assert (types["gpu-a10g"]["max_workers"], types["gpu-l4"]["max_workers"]) == (4, 6)
    assert config["max_workers"] == 4 + 6 + 4


def test_idle_workers_go_after_the_configured_timeout(helm: Path) -> None:
    assert autoscaling_config(helm)["idle_timeout_minutes"] == 5
