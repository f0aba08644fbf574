"""`helm lint` is clean and every object the chart renders, for every value set, passes validation offline,
for every supported Kubernetes version and the KubeRay CRD of the version infra/README.md installs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm.chart import (
    CHART,
    KUBERNETES_VERSIONS,
    REPO,
    SCHEMAS,
    VALUES,
    by_kind,
    render,
    validate,
    values_files,
)

VALUE_SETS = [None, *values_files()]


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v or "defaults")
def test_helm_lint_is_clean(helm: Path, values: str | None) -> None:
    argv = [str(helm), "lint", "--strict", str(CHART)]
    if values:
        argv += ["--values", str(VALUES / f"{values}.yaml")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v or "defaults")
def test_every_rendered_object_validates(helm: Path, values: str | None) -> None:
    manifests = render(helm, values)
    assert len(manifests) >= 7
    for manifest in manifests:
        validate(manifest)


def test_the_value_sets_cover_what_the_issues_ask_for() -> None:
    assert {
        "two-gpu-groups",
        "external-postgresql",
        "autoscaling-off",
        "ingress-on",
        "postgresql-statefulset",
        "monitoring-on",
        "gcs-fault-tolerance",
        "spot-gpu-serving",
        "existing-accounts",
    } <= set(values_files())


def test_validation_covers_four_kubernetes_releases() -> None:
    assert [v.rsplit(".", 1)[0] for v in KUBERNETES_VERSIONS] == ["1.30", "1.31", "1.32", "1.33"]


def test_validation_rejects_a_misspelt_field(helm: Path) -> None:
    """The check has teeth: a typo in a RayCluster or a Deployment is caught, not silently dropped."""
    manifests = render(helm)
    ray = by_kind(manifests, "RayCluster")[0]
    ray["spec"]["workerGroupSpecs"][0]["minReplica"] = 0
    with pytest.raises(AssertionError, match="minReplica"):
        validate(ray)
    deployment = by_kind(manifests, "Deployment")[0]
    deployment["spec"]["replica"] = 2
    with pytest.raises(AssertionError, match="replica"):
        validate(deployment)


def test_validation_knows_which_release_added_a_field(helm: Path) -> None:
    """Per-version schemas, not one: a field newer than the oldest supported release fails there only."""
    # Pod-level resources (spec.resources) arrived in Kubernetes 1.32.
    deployment = by_kind(render(helm), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "1"}}
    validate(deployment, ("1.32.0", "1.33.0"))
    with pytest.raises(AssertionError, match="resources"):
        validate(deployment, ("1.30.0",))


def test_the_kuberay_crd_is_the_one_the_install_guide_installs() -> None:
    """infra/README.md installs one KubeRay release; the RayCluster schema under tests/ is that release's."""
    guide = (REPO / "infra" / "README.md").read_text()
    (version,) = set(re.findall(r"kuberay/kuberay-operator --version (\d+\.\d+\.\d+)", guide))
    provenance = (SCHEMAS / "README.md").read_text()
    assert f"v{version}" in provenance
    crd = yaml.load((SCHEMAS / "kuberay" / "ray.io_rayclusters.yaml").read_text(), Loader=yaml.CSafeLoader)
    assert crd["metadata"]["name"] == "rayclusters.ray.io"
    assert re.search(rf"kuberay[^\n]*v{re.escape(version)}", (CHART / "README.md").read_text(), re.IGNORECASE)
