"""The node groups infra/README.md tells a newcomer to create hold what the chart asks of them.

The guide's "Node groups" table (instance type, disk, allocatable CPU and memory of each group) and its stated
allowances (daemons and add-ons, the image, the OS) are read from the page itself, so the page and the chart
cannot drift apart: every rendered pod's requests plus the allowance fit the allocatable of the node it is
pinned to, and its scratch emptyDirs at their size limits fit the disk beside the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ray.autoscaler._private.kuberay.utils import parse_quantity

from tests.helm.chart import REPO, by_kind, one, pod_specs, render

GUIDE = (REPO / "infra" / "README.md").read_text()
GIB = Decimal(1024**3)


@dataclass(frozen=True)
class NodeGroup:
    instance: str
    disk_gib: Decimal
    cpu: Decimal
    memory_gib: Decimal


def node_groups() -> dict[str, NodeGroup]:
    section = GUIDE.split("### Node groups", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    groups = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name, instance = cells[0].strip("`"), cells[1].strip("`")
        disk = re.fullmatch(r"(\d+) GiB", cells[3])
        allocatable = re.fullmatch(r"(\d+)m CPU, ([\d.]+) GiB", cells[4])
        assert disk and allocatable, row
        groups[name] = NodeGroup(instance, Decimal(disk[1]), Decimal(allocatable[1]) / 1000, Decimal(allocatable[2]))
    return groups


def stated(label: str) -> tuple[Decimal, Decimal]:
    """An allowance the guide states in bold, e.g. '**800m CPU and 2 GiB**' after its label."""
    found = re.search(rf"{label}[^*]*\*\*(\d+)m CPU and ([\d.]+) GiB\*\*", GUIDE)
    assert found, label
    return Decimal(found[1]) / 1000, Decimal(found[2]) * GIB


def stated_gib(label: str) -> Decimal:
    found = re.search(rf"{label}[^*]*\*\*(\d+) GiB\*\*", GUIDE)
    assert found, label
    return Decimal(found[1])


def requests(template: dict[str, Any], extra: tuple[dict[str, Any], ...] = ()) -> tuple[Decimal, Decimal]:
    """A pod's scheduling request: the larger of its biggest init container and the sum of its containers."""

    def of(c: dict[str, Any]) -> tuple[Decimal, Decimal]:
        r = (c.get("resources") or {}).get("requests", {})
        return parse_quantity(r.get("cpu", "0")), parse_quantity(r.get("memory", "0"))

    spec = template["spec"]
    running = [of(c) for c in [*spec["containers"], *extra]]
    init = [of(c) for c in spec.get("initContainers", [])] or [(Decimal(0), Decimal(0))]
    cpu = max(sum(r[0] for r in running), max(r[0] for r in init))
    memory = max(sum(r[1] for r in running), max(r[1] for r in init))
    return cpu, memory


def scratch(template: dict[str, Any]) -> Decimal:
    """The node disk a pod's emptyDirs may fill (memory-backed ones count against memory instead)."""
    return sum(
        (
            parse_quantity(v["emptyDir"]["sizeLimit"])
            for v in template["spec"].get("volumes", [])
            if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
        ),
        Decimal(0),
    )


def group_of(template: dict[str, Any], groups: dict[str, NodeGroup]) -> str:
    instance = (template["spec"].get("nodeSelector") or {}).get("node.kubernetes.io/instance-type")
    (name,) = [n for n, g in groups.items() if g.instance == instance]
    return name


@pytest.mark.parametrize("values", [None, "postgresql-statefulset", "ingress-on"], ids=lambda v: v or "defaults")
def test_the_head_the_api_pods_and_the_add_ons_fit_one_system_node(helm: Path, values: str | None) -> None:
    manifests = render(helm, values)
    groups = node_groups()
    system = groups["system"]
    cluster = one(manifests, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]
    sidecar = {"resources": cluster["spec"]["autoscalerOptions"]["resources"]}
    deployment = one(manifests, "Deployment")
    api = deployment["spec"]["template"]
    assert group_of(head, groups) == group_of(api, groups) == "system"
    pods = [requests(head, (sidecar,))] + [requests(api)] * deployment["spec"]["replicas"]
    pods += [requests(s["spec"]["template"]) for s in by_kind(manifests, "StatefulSet")]  # wherever it lands
    cpu_allowance, memory_allowance = stated("on the system node allow")
    cpu = sum(p[0] for p in pods) + cpu_allowance
    memory = sum(p[1] for p in pods) + memory_allowance
    assert cpu <= system.cpu, f"{cpu} CPU requested of {system.cpu}"
    assert memory <= system.memory_gib * GIB, f"{memory / GIB:.2f} GiB requested of {system.memory_gib}"
    disk = (scratch(head) + scratch(api) * deployment["spec"]["replicas"]) / GIB
    assert disk + stated_gib("image takes about") + stated_gib("the OS about") <= system.disk_gib


EVERY_GROUP = ("ray.workerGroups.gpu-l4.enabled=true", "ray.workerGroups.cpu.enabled=true")


@pytest.mark.parametrize("values", [None, "spot-gpu-serving"], ids=lambda v: v or "defaults")
def test_every_worker_pod_fits_its_node_group(helm: Path, values: str | None) -> None:
    groups = node_groups()
    cpu_allowance, memory_allowance = stated("on every worker node allow")
    for name, template in pod_specs(render(helm, values, *EVERY_GROUP)).items():
        if not name.startswith("RayCluster/") or name == "RayCluster/head":
            continue
        group = groups[group_of(template, groups)]
        cpu, memory = requests(template)
        assert cpu + cpu_allowance <= group.cpu, name
        assert memory + memory_allowance <= group.memory_gib * GIB, name
        disk = scratch(template) / GIB + stated_gib("image takes about") + stated_gib("the OS about")
        assert disk <= group.disk_gib, f"{name}: {disk} GiB of {group.disk_gib}"


def test_the_table_has_a_group_for_each_of_the_charts_groups_by_name(helm: Path) -> None:
    groups = node_groups()
    enabled = one(render(helm, None, *EVERY_GROUP), "RayCluster")["spec"]["workerGroupSpecs"]
    assert len(enabled) == 4
    for group in enabled:
        instance = group["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]
        assert groups[group["groupName"]].instance == instance, group["groupName"]
