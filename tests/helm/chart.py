"""Render the Helm chart with the real `helm` and validate what it renders, offline.

Core Kubernetes kinds are checked against Kubernetes' own JSON schemas (the `kubernetes-validate` package,
strict: unknown fields are errors); custom resources against their CRDs' OpenAPI schemas under `schemas/`,
made strict the same way, as `kubectl apply --validate=strict` would on a cluster that has the CRDs.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "trainyard"
VALUES = Path(__file__).parent / "values"
SCHEMAS = Path(__file__).parent / "schemas"
# The Kubernetes version rendered for and validated against (EKS, GKE and AKS all offer it, November 2026).
KUBERNETES_VERSION = "1.33.0"
RELEASE = "ty"
NAMESPACE = "trainyard"

CRDS = {
    ("ray.io/v1", "RayCluster"): SCHEMAS / "kuberay" / "ray.io_rayclusters.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS
    / "prometheus-operator"
    / "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): SCHEMAS
    / "prometheus-operator"
    / "monitoring.coreos.com_podmonitors.yaml",
}

Manifest = dict[str, Any]


def fetch_helm() -> Path:
    """The pinned helm binary, fetched into .cache/ on first use by scripts/fetch-k8s-tools."""
    result = subprocess.run(
        [str(REPO / "scripts" / "fetch-k8s-tools")], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"scripts/fetch-k8s-tools failed:\n{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1])


def values_files() -> list[str]:
    return sorted(p.stem for p in VALUES.glob("*.yaml"))


def render(helm: Path, values: str | None = None, *sets: str) -> list[Manifest]:
    argv = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBERNETES_VERSION]
    if values is not None:
        argv += ["--values", str(VALUES / f"{values}.yaml")]
    for item in sets:
        argv += ["--set", item]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _strict(schema: Any) -> Any:
    """Unknown fields become errors, except where the CRD keeps unknown fields on purpose."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        open_object = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and not open_object:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Validator:
    # The C loader: the RayCluster CRD is 17,000 lines.
    crd = yaml.load(CRDS[(api_version, kind)].read_text(), Loader=yaml.CSafeLoader)
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def validate(manifest: Manifest) -> None:
    """Raise if the object would not pass the API server's validation."""
    key = (manifest["apiVersion"], manifest["kind"])
    if key in CRDS:
        errors = sorted(crd_validator(*key).iter_errors(manifest), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            raise AssertionError(f"{key[1]} {manifest['metadata']['name']}: {where}: {errors[0].message}")
        return
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = by_kind(manifests, kind)
    return found


def pod_specs(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    """Every pod template the release renders, named `<kind>/<name>` or `RayCluster/<group>`."""
    specs: dict[str, dict[str, Any]] = {}
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet"):
            specs[f"{m['kind']}/{m['metadata']['name']}"] = m["spec"]["template"]
        elif m["kind"] == "RayCluster":
            specs["RayCluster/head"] = m["spec"]["headGroupSpec"]["template"]
            for group in m["spec"].get("workerGroupSpecs", []):
                specs[f"RayCluster/{group['groupName']}"] = group["template"]
    return specs


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}
