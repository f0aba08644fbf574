"""Least privilege: Pod Security "restricted" on every pod, one ServiceAccount per role, RBAC for the head only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart import by_kind, containers, named, one, pod_specs, render, values_files
from tests.helm.pod_security import as_kuberay_builds, hardening_violations, restricted_violations

VALUE_SETS = [None, *values_files()]
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def every_pod(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template the release renders, the Ray ones as KubeRay will create them."""
    pods = {name: t for name, t in pod_specs(manifests).items() if not name.startswith("RayCluster/")}
    for cluster in by_kind(manifests, "RayCluster"):
        pods |= {f"RayCluster/{group}": pod for group, pod in as_kuberay_builds(cluster).items()}
    return pods


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v or "defaults")
def test_every_pod_passes_pod_security_restricted_with_read_only_roots_and_bounded_scratch(
    helm: Path, values: str | None
) -> None:
    pods = every_pod(render(helm, values))
    assert any(name.startswith("Deployment/") for name in pods) and "RayCluster/head" in pods
    problems = {name: restricted_violations(pod) + hardening_violations(pod) for name, pod in pods.items()}
    assert not {name: p for name, p in problems.items() if p}


def test_the_check_fails_a_pod_that_breaks_each_rule(helm: Path) -> None:
    """A check that cannot fail proves nothing: each kind of violation is reported, naming what broke."""
    good = every_pod(render(helm))["RayCluster/gpu-a10g"]
    assert restricted_violations(good) == []

    def broken(change: Any) -> list[str]:
        pod = copy.deepcopy(good)
        change(pod["spec"], pod["spec"]["containers"][0].setdefault("securityContext", {}))
        return restricted_violations(pod) + hardening_violations(pod)

    cases = {
        "privilege escalation": lambda s, c: c.pop("allowPrivilegeEscalation"),
        "running as non-root": lambda s, c: s["securityContext"].pop("runAsNonRoot"),
        "non-root user": lambda s, c: c.update(runAsUser=0),
        "seccomp": lambda s, c: s["securityContext"].pop("seccompProfile"),
        "must drop ALL": lambda s, c: c.update(capabilities={"drop": ["NET_RAW"]}),
        "adds ['SYS_ADMIN']": lambda s, c: c["capabilities"].update(add=["SYS_ADMIN"]),
        "privileged containers": lambda s, c: c.update(privileged=True),
        "host namespaces": lambda s, c: s.update(hostNetwork=True),
        "HostPath volumes": lambda s, c: s["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run"}}),
        "host ports": lambda s, c: s["containers"][0]["ports"].append({"containerPort": 80, "hostPort": 80}),
        "sysctls": lambda s, c: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        "SELinux": lambda s, c: c.update(seLinuxOptions={"type": "spc_t"}),
        "readOnlyRootFilesystem": lambda s, c: c.pop("readOnlyRootFilesystem"),
        "emptyDir without sizeLimit": lambda s, c: s["volumes"].append({"name": "scratch", "emptyDir": {}}),
    }
    for rule, change in cases.items():
        found = broken(change)
        assert any(rule in line for line in found), f"{rule}: {found}"
    # An init container counts too (KubeRay's wait-gcs-ready copies the Ray container's securityContext).
    pod = copy.deepcopy(good)
    pod["spec"]["initContainers"][0]["securityContext"] = {}
    assert any("wait-gcs-ready" in line for line in restricted_violations(pod))


def test_kuberays_autoscaler_sidecar_gets_the_charts_security_context(helm: Path) -> None:
    """The sidecar is not in the rendered template; without `autoscalerOptions.securityContext` it would fail."""
    cluster = one(render(helm), "RayCluster")
    head = as_kuberay_builds(cluster)["head"]
    (sidecar,) = [c for c in head["spec"]["containers"] if c["name"] == "autoscaler"]
    assert restricted_violations(head) == [] and sidecar["securityContext"]["readOnlyRootFilesystem"]
    del cluster["spec"]["autoscalerOptions"]["securityContext"]
    assert any("'autoscaler'" in line for line in restricted_violations(as_kuberay_builds(cluster)["head"]))


def test_each_role_has_its_own_service_account_and_none_mounts_a_token_by_default(helm: Path) -> None:
    manifests = render(helm)
    accounts = {a["metadata"]["name"]: a for a in by_kind(manifests, "ServiceAccount")}
    assert len(accounts) == 3
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())
    pods = pod_specs(manifests)
    used = {name: pod["spec"]["serviceAccountName"] for name, pod in pods.items()}
    assert set(used.values()) == set(accounts)
    assert used["RayCluster/head"] not in {used["Deployment/ty-trainyard-api"], used["RayCluster/gpu-a10g"]}
    assert used["Deployment/ty-trainyard-api"] != used["RayCluster/gpu-a10g"] == used["RayCluster/serving"]


@pytest.mark.parametrize("values", [None, "existing-accounts", "autoscaling-off"], ids=lambda v: v or "defaults")
def test_api_and_worker_pods_mount_no_token_and_only_the_autoscaler_sidecar_does(
    helm: Path, values: str | None
) -> None:
    manifests = render(helm, values)
    cluster = one(manifests, "RayCluster")
    for name, pod in every_pod(manifests).items():
        assert pod["spec"]["automountServiceAccountToken"] is False, name
        mounted = [
            c["name"] for c in containers(pod) for m in c.get("volumeMounts", []) if m["mountPath"] == TOKEN_PATH
        ]
        expected = ["autoscaler"] if name == "RayCluster/head" and cluster["spec"]["enableInTreeAutoscaling"] else []
        assert mounted == expected, name
        token_volumes = [v for v in pod["spec"].get("volumes", []) if "serviceAccountToken" in str(v)]
        assert len(token_volumes) == len(expected), name


def test_only_the_heads_account_is_bound_and_only_to_what_the_autoscaler_uses(helm: Path) -> None:
    manifests = render(helm)
    cluster = one(manifests, "RayCluster")
    head_account = cluster["spec"]["headGroupSpec"]["template"]["spec"]["serviceAccountName"]
    (binding,) = by_kind(manifests, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": head_account, "namespace": "trainyard"}]
    assert not by_kind(manifests, "ClusterRole") and not by_kind(manifests, "ClusterRoleBinding")
    (role,) = by_kind(manifests, "Role")
    # KubeRay looks its Role and RoleBinding up by the cluster's name and creates its own only when missing.
    assert role["metadata"]["name"] == binding["metadata"]["name"] == cluster["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # Ray's KubeRay node provider v1 (pinned by autoscalerOptions.version): GET/list pods, GET and PATCH its cluster.
    assert cluster["spec"]["autoscalerOptions"]["version"] == "v1"
    rights = {
        (group, resource, verb, tuple(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    this = (cluster["metadata"]["name"],)
    assert rights == {
        ("", "pods", "get", ()),
        ("", "pods", "list", ()),
        ("ray.io", "rayclusters", "get", this),
        ("ray.io", "rayclusters", "patch", this),
    }


def test_without_the_autoscaler_no_account_has_any_rights(helm: Path) -> None:
    manifests = render(helm, "autoscaling-off")
    assert not by_kind(manifests, "Role") and not by_kind(manifests, "RoleBinding")


def test_cloud_identity_annotations_reach_every_account_and_per_role_ones_only_theirs(helm: Path) -> None:
    manifests = render(helm, "external-postgresql", "serviceAccounts.head.annotations.extra=head-only")
    arn = "arn:aws:iam::123456789012:role/trainyard"
    for account in by_kind(manifests, "ServiceAccount"):
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == arn
    head = named(manifests, "ServiceAccount", "-ray-head")
    assert head["metadata"]["annotations"]["extra"] == "head-only"
    assert sum("extra" in a["metadata"]["annotations"] for a in by_kind(manifests, "ServiceAccount")) == 1


def test_existing_accounts_are_used_by_name_and_none_is_created(helm: Path) -> None:
    manifests = render(helm, "existing-accounts")
    assert not by_kind(manifests, "ServiceAccount")
    used = {pod["spec"]["serviceAccountName"] for pod in pod_specs(manifests).values()}
    assert used == {"platform-trainyard-api", "platform-trainyard-head", "platform-trainyard-worker"}
    assert one(manifests, "RoleBinding")["subjects"][0]["name"] == "platform-trainyard-head"
