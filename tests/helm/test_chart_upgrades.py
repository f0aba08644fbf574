"""Upgrades that keep jobs alive: only values Ray pods read change what KubeRay rebuilds the Ray cluster for.

With `upgradeStrategy: Recreate`, KubeRay replaces every Ray pod (ending every running job and the Serve
application) when the hash of the RayCluster's spec changes; the hash leaves out the worker groups' replica
counts, tolerations and scheduling gates, and the upgrade strategy itself
(ray-operator/controllers/ray/utils/util.go, GenerateHashWithoutReplicasAndWorkersToDelete, v1.7.0).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart import CHART, config_data, documents, one, pod_specs, render, render_text

API_ONLY = (
    "api.ingress.enabled=true",
    "api.replicas=3",
    "api.extraEnv.TRAINYARD_MAX_CONCURRENT_JOBS=8",
)

# (a --set change, whether KubeRay rebuilds the Ray cluster for it). The chart README's table lists the same.
CHANGES = [
    ("api.ingress.enabled=true", False),
    ("api.replicas=3", False),
    ("api.extraEnv.TRAINYARD_MAX_CONCURRENT_JOBS=8", False),
    ("api.resources.limits.memory=2Gi", False),
    ("api.publicUrl=https://trainyard.example.org", False),
    ("networkPolicy.enabled=false", False),
    ("monitoring.serviceMonitor.enabled=true", False),
    ("serviceAccounts.annotations.team=vision", False),
    ("ray.workerGroups.gpu-a10g.minReplicas=1", False),
    ("image.tag=0.2.0", True),
    ("config.artifactUri=s3://elsewhere", True),
    ("config.extraEnv.TRAINYARD_MAX_DATASET_OBJECTS=1000", True),
    ("ray.workerGroups.gpu-a10g.maxReplicas=8", True),
    ("ray.workerGroups.gpu-a10g.pricing.onDemandUsdPerHour=1.1", True),
    ("ray.workerGroups.gpu-l4.enabled=true", True),
    ("ray.autoscaling.idleTimeoutSeconds=600", True),
    ("serving.maxReplicas=8", True),
    ("monitoring.scrapeAnnotations=false", True),
]


def kuberay_upgrade_hash(cluster: dict[str, Any]) -> str:
    spec = copy.deepcopy(cluster["spec"])
    spec.pop("upgradeStrategy", None)
    head = spec["headGroupSpec"]["template"]["spec"]
    head.pop("tolerations", None)
    head.pop("schedulingGates", None)
    for group in spec.get("workerGroupSpecs", []):
        for field in ("replicas", "minReplicas", "maxReplicas"):
            group.pop(field, None)
        group.get("scaleStrategy", {}).pop("workersToDelete", None)
        group["template"]["spec"].pop("tolerations", None)
        group["template"]["spec"].pop("schedulingGates", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def ray_cluster_text(helm: Path, *sets: str) -> str:
    (text,) = [t for (kind, _), t in documents(render_text(helm, None, *sets)).items() if kind == "RayCluster"]
    return text


def test_api_only_changes_render_a_byte_identical_ray_cluster(helm: Path) -> None:
    before = ray_cluster_text(helm)
    assert ray_cluster_text(helm, *API_ONLY) == before
    for change in API_ONLY:
        assert ray_cluster_text(helm, change) == before, change
    # The changes did happen: they reached the API's objects.
    after = render(helm, None, *API_ONLY)
    assert one(after, "Ingress") and one(after, "Deployment")["spec"]["replicas"] == 3
    assert config_data(after, "api")["TRAINYARD_MAX_CONCURRENT_JOBS"] == "8"
    assert "TRAINYARD_MAX_CONCURRENT_JOBS" not in config_data(after, "ray")


def test_the_api_still_rolls_when_its_settings_change(helm: Path) -> None:
    """The API's checksum covers both ConfigMaps: a new setting restarts the API pods that read it."""

    def checksum(*sets: str) -> str:
        return str(
            pod_specs(render(helm, None, *sets))["Deployment/ty-trainyard-api"]["metadata"]["annotations"][
                "checksum/config"
            ]
        )

    assert checksum() != checksum("api.extraEnv.TRAINYARD_MAX_CONCURRENT_JOBS=8")
    assert checksum() != checksum("config.artifactUri=s3://elsewhere")


@pytest.mark.parametrize(("change", "rebuilds"), CHANGES, ids=[c for c, _ in CHANGES])
def test_what_rebuilds_the_ray_cluster(helm: Path, change: str, rebuilds: bool) -> None:
    before = kuberay_upgrade_hash(one(render(helm), "RayCluster"))
    after = kuberay_upgrade_hash(one(render(helm, None, change), "RayCluster"))
    assert (before != after) is rebuilds


def test_the_chart_readme_lists_what_rebuilds_and_what_does_not() -> None:
    readme = (CHART / "README.md").read_text()
    section = readme.split("## What an upgrade rebuilds", 1)[1].split("\n## ", 1)[0]
    rebuilds, keeps = section.split("**Rebuild the Ray cluster**", 1)[1].split("**Leave the Ray cluster alone**", 1)
    for change, rebuild in CHANGES:
        parts = re.sub(r"\.(gpu-a10g|gpu-l4)\.", ".<group>.", change.split("=")[0]).split(".")
        # The value or its parent (`api.resources` for `api.resources.limits.memory`), in the right list.
        named = [".".join(parts[:n]) for n in range(len(parts), 1, -1)]
        listed = rebuilds if rebuild else keeps
        assert any(f"`{value}`" in listed for value in named), (change, named)
