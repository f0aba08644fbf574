"""Chart hygiene: the values schema names a wrong value, the image follows appVersion, secrets survive renders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helm.chart import CHART, by_kind, documents, one, pod_specs, render, render_error, render_text

WRONG_VALUES = [
    ("api.replicas=two", "/api/replicas", "want integer"),
    ("api.replica=3", "'replica' not allowed", "additional properties"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy", "must be one of"),
    ("image.tag=latest", "/image/tag", ""),
    ("ray.workerGroups.gpu-a10g.capacityType=reserved", "/ray/workerGroups/gpu-a10g/capacityType", "on-demand"),
    ("ray.workerGroups.gpu-a10g.resources.cpu=2500m", "/ray/workerGroups/gpu-a10g/resources/cpu", ""),
    ("ray.workerGroups.gpu-a10g.pricing.onDemandUsdPerHour=cheap", "onDemandUsdPerHour", ""),
    ("ray.workerGroups.GPU_A10G.enabled=true", "GPU_A10G", ""),
    ("ray.upgradeStrategy=Rolling", "/ray/upgradeStrategy", "Recreate"),
    ("ray.scratch.home=lots", "/ray/scratch/home", ""),
    ("config.ratesAsOf=last-week", "/config/ratesAsOf", ""),
    ("api.topologySpread.whenUnsatisfiable=Sometimes", "whenUnsatisfiable", ""),
]


@pytest.mark.parametrize(("change", "names", "says"), WRONG_VALUES, ids=[w[0].split("=")[0] for w in WRONG_VALUES])
def test_a_wrong_value_fails_the_render_naming_it(helm: Path, change: str, names: str, says: str) -> None:
    error = render_error(helm, None, change)
    assert "values don't meet the specifications of the schema" in error
    assert names in error and says in error, error


def test_a_spot_group_without_a_spot_price_is_refused(helm: Path) -> None:
    error = render_error(
        helm, None, "ray.workerGroups.cpu.capacityType=spot", "ray.workerGroups.cpu.pricing.spotUsdPerHour=null"
    )
    assert "/ray/workerGroups/cpu" in error and "spotUsdPerHour" in error


def test_the_image_tag_follows_the_charts_app_version(helm: Path) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for t in pod_specs(render(helm)).values() for c in t["spec"]["containers"]}
    assert images == {f"registry.example.com/trainyard:{app_version}"}
    pinned = {
        c["image"] for t in pod_specs(render(helm, None, "image.tag=0.1.1")).values() for c in t["spec"]["containers"]
    }
    assert pinned == {"registry.example.com/trainyard:0.1.1"}


def test_renders_without_a_cluster_are_stable_when_secrets_are_named(helm: Path) -> None:
    """What Argo CD and `helm template` users get: two renders, the same bytes (nothing random)."""
    assert render_text(helm) == render_text(helm, None, "nameOverride=")
    twice = [render_text(helm, "gcs-fault-tolerance", f"api.annotations.render=r{i}") for i in (1, 2)]
    assert (
        documents(twice[0])[("RayCluster", "ty-trainyard-ray")]
        == documents(twice[1])[("RayCluster", "ty-trainyard-ray")]
    )
    assert not by_kind(render(helm, "gcs-fault-tolerance"), "Secret")


def test_a_generated_password_is_kept_and_would_change_per_render_without_lookup(helm: Path) -> None:
    """Why templating users must name the Secret: outside a cluster `lookup` finds nothing, so each render
    makes a new password; in a cluster `lookup` returns the kept one (tested on a live cluster only)."""
    secrets = [one(render(helm, "postgresql-statefulset", f"api.annotations.render=r{i}"), "Secret") for i in (1, 2)]
    assert secrets[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert secrets[0]["data"]["password"] != secrets[1]["data"]["password"]
    template = (CHART / "templates" / "postgresql.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template


def test_an_existing_postgresql_secret_replaces_the_generated_one(helm: Path) -> None:
    manifests = render(helm, "gcs-fault-tolerance")
    statefulset = one(manifests, "StatefulSet")
    (server,) = statefulset["spec"]["template"]["spec"]["containers"]
    ref = {e["name"]: e for e in server["env"]}["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "trainyard-postgresql", "key": "password"}


def test_every_empty_dir_has_a_size_limit(helm: Path) -> None:
    for values in (None, "postgresql-statefulset", "two-gpu-groups"):
        for name, template in pod_specs(render(helm, values)).items():
            for volume in template["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    assert volume["emptyDir"].get("sizeLimit"), (values, name, volume["name"])
