"""`helm lint` is clean and every object the chart renders, for every value set, passes validation offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helm.chart import CHART, VALUES, render, validate, values_files

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
    assert manifests
    for manifest in manifests:
        validate(manifest)


def test_the_value_sets_cover_what_the_issue_asks_for() -> None:
    assert {
        "two-gpu-groups",
        "external-postgresql",
        "autoscaling-off",
        "ingress-on",
        "postgresql-statefulset",
        "monitoring-on",
    } <= set(values_files())


def test_validation_rejects_a_misspelt_field(helm: Path) -> None:
    """The check has teeth: a typo in a RayCluster or a Deployment is caught, not silently dropped."""
    manifests = render(helm)
    ray = next(m for m in manifests if m["kind"] == "RayCluster")
    ray["spec"]["workerGroupSpecs"][0]["minReplica"] = 0
    with pytest.raises(AssertionError, match="minReplica"):
        validate(ray)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    deployment["spec"]["replica"] = 2
    with pytest.raises(Exception, match="replica"):
        validate(deployment)
