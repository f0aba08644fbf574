"""Render the Helm chart with the real `helm` and validate what it renders, offline.

Core Kubernetes kinds are checked against Kubernetes' own JSON schemas (the `kubernetes-validate` package,
strict: unknown fields are errors) for every Kubernetes version the chart supports; custom resources against
their CRDs' OpenAPI schemas under `schemas/`, made strict the same way, as `kubectl apply --validate=strict`
would on a cluster that has the CRDs.

Renders are cached per (values file, --set flags): `helm template` is deterministic for a given input except
for the generated PostgreSQL password, and every caller gets its own deep copy.
"""

from __future__ import annotations

import copy
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "trainyard"
VALUES = Path(__file__).parent / "values"
SCHEMAS = Path(__file__).parent / "schemas"
# The Kubernetes versions every rendered object is validated against: the releases EKS, GKE and AKS all offered
# in November 2026. Helm renders for the newest.
KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0")
RENDER_VERSION = KUBERNETES_VERSIONS[-1]
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


def _argv(helm: Path, values: str | None, sets: tuple[str, ...]) -> list[str]:
    argv = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", RENDER_VERSION]
    if values is not None:
        argv += ["--values", str(VALUES / f"{values}.yaml")]
    for item in sets:
        argv += ["--set", item]
    return argv


@cache
def _helm_template(helm: Path, values: str | None, sets: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(helm, values, sets), capture_output=True, text=True, timeout=60, check=False)


def render_text(helm: Path, values: str | None = None, *sets: str) -> str:
    result = _helm_template(helm, values, sets)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render_error(helm: Path, values: str | None = None, *sets: str) -> str:
    """The error `helm template` stops with; fails the test if it renders."""
    result = _helm_template(helm, values, sets)
    assert result.returncode != 0, f"rendered although it should not: {sets}"
    return result.stderr


@cache
def _parsed(text: str) -> tuple[Manifest, ...]:
    return tuple(doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc)


def render(helm: Path, values: str | None = None, *sets: str) -> list[Manifest]:
    return copy.deepcopy(list(_parsed(render_text(helm, values, *sets))))


def documents(text: str) -> dict[tuple[str, str], str]:
    """Each rendered object's own text, keyed by (kind, name), to compare renders byte for byte."""
    out = {}
    for doc in re.split(r"^---\n", text, flags=re.M):
        body = "\n".join(line for line in doc.splitlines() if not line.startswith("# Source:"))
        parsed = yaml.safe_load(body)
        if parsed:
            out[(parsed["kind"], parsed["metadata"]["name"])] = body
    return out


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


@cache
def core_validator(api_version: str, kind: str, kubernetes: str) -> jsonschema.Validator:
    """kubernetes-validate's strict schema for one kind and version, built once (its `validate` builds it per call)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{kv.major_minor(kubernetes)}.0-local-strict"
    schema = kv.schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", kubernetes)
    definitions = kv.schema_contents(f"{directory}/_definitions.json", kubernetes)
    registry: Registry[Any] = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(manifest: Manifest, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> None:
    """Raise if the object would not pass the API server's validation, on any of `versions`."""
    key = (manifest["apiVersion"], manifest["kind"])
    validators = [crd_validator(*key)] if key in CRDS else [core_validator(*key, v) for v in versions]
    for validator in validators:
        errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            raise AssertionError(f"{key[1]} {manifest['metadata']['name']}: {where}: {errors[0].message}")


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = by_kind(manifests, kind)
    return found


def named(manifests: list[Manifest], kind: str, suffix: str) -> Manifest:
    (found,) = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(suffix)]
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


def config_data(manifests: list[Manifest], component: str = "ray") -> dict[str, str]:
    """The ConfigMap the Ray pods read (`ray`) or the API's own (`api`)."""
    (found,) = [
        m
        for m in by_kind(manifests, "ConfigMap")
        if m["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return dict(found.get("data") or {})
