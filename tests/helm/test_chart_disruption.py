"""Disruption: what a node drain or a consolidation may take, and an opt-in GCS that survives the head."""

from __future__ import annotations

from pathlib import Path

from tests.helm.chart import by_kind, env_of, named, one, pod_specs, render, render_error, validate

DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


def test_the_head_pdb_refuses_voluntary_evictions_but_not_of_a_broken_head(helm: Path) -> None:
    manifests = render(helm)
    cluster = one(manifests, "RayCluster")
    pdb = named(manifests, "PodDisruptionBudget", "-ray-head")
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # The labels KubeRay puts on the head pod, and no worker's.
    assert pdb["spec"]["selector"]["matchLabels"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }


def test_the_api_pdb_takes_one_api_pod_at_a_time(helm: Path) -> None:
    manifests = render(helm)
    pdb = named(manifests, "PodDisruptionBudget", "-api")
    labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # Not the Ray pods, which carry the chart's name and instance labels too.
    assert (
        not pdb["spec"]["selector"]["matchLabels"].items()
        <= pod_specs(manifests)["RayCluster/head"]["metadata"]["labels"].items()
    )


def test_ray_pods_tell_both_node_autoscalers_not_to_move_them(helm: Path) -> None:
    for name, template in pod_specs(render(helm)).items():
        annotations = template["metadata"].get("annotations", {})
        if name.startswith("RayCluster/"):
            assert DO_NOT_DISRUPT.items() <= annotations.items(), name
        else:
            assert not DO_NOT_DISRUPT.keys() & annotations.keys(), name
    off = pod_specs(render(helm, "existing-accounts"))
    assert not any(DO_NOT_DISRUPT.keys() & t["metadata"].get("annotations", {}).keys() for t in off.values())
    assert not by_kind(render(helm, "existing-accounts"), "PodDisruptionBudget")


def test_api_replicas_spread_across_nodes_and_zones(helm: Path) -> None:
    deployment = one(render(helm), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    constraints = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert constraints.keys() == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for c in constraints.values():
        assert c["maxSkew"] == 1 and c["labelSelector"]["matchLabels"].items() <= labels.items()
        # Tainted GPU nodes the API cannot use must not count as empty domains.
        assert c["nodeTaintsPolicy"] == "Honor" and c["matchLabelKeys"] == ["pod-template-hash"]
    strict = one(render(helm, None, "api.topologySpread.whenUnsatisfiable=DoNotSchedule"), "Deployment")
    assert {c["whenUnsatisfiable"] for c in strict["spec"]["template"]["spec"]["topologySpreadConstraints"]} == {
        "DoNotSchedule"
    }


def test_gcs_fault_tolerance_is_off_by_default_and_renders_kuberays_options_when_on(helm: Path) -> None:
    assert "gcsFaultToleranceOptions" not in one(render(helm), "RayCluster")["spec"]
    cluster = one(render(helm, "gcs-fault-tolerance"), "RayCluster")
    validate(cluster)
    assert cluster["spec"]["gcsFaultToleranceOptions"] == {
        "redisAddress": "trainyard-redis.abc123.use1.cache.amazonaws.com:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "trainyard-redis", "key": "password"}}},
        "externalStorageNamespace": "trainyard-prod",
    }


def test_gcs_fault_tolerance_values_are_checked(helm: Path) -> None:
    missing = render_error(helm, None, "ray.gcsFaultTolerance.enabled=true")
    assert "/ray/gcsFaultTolerance/redisAddress" in missing
    malformed = render_error(
        helm, None, "ray.gcsFaultTolerance.enabled=true", "ray.gcsFaultTolerance.redisAddress=redis"
    )
    assert "/ray/gcsFaultTolerance/redisAddress" in malformed


def test_the_ray_pods_get_the_store_url_the_api_gets(helm: Path) -> None:
    """After a head restart the drivers and the API must still agree on the store (same Secret reference)."""
    pods = pod_specs(render(helm, "gcs-fault-tolerance"))
    refs = {
        name: env_of(template["spec"]["containers"][0])["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
        for name, template in pods.items()
        if not name.startswith("StatefulSet/")
    }
    assert set(refs.values()) == {"trainyard-postgresql"}
