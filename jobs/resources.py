"""Fail fast when a job asks for more than the Ray cluster has, or could ever have.

On an autoscaling cluster a missing GPU is normal: Ray Train's request for it is what brings a node up.
But a request no node type can satisfy would wait forever, and so would any request on a fixed cluster
(one machine). Two sources of truth, one check:
- a fixed cluster (`TRAINYARD_FIXED_CLUSTER=true`): the nodes alive now are all there will ever be;
- an autoscaling cluster whose limits are configured (`TRAINYARD_NODE_TYPES`, every type with
  `max_workers`, as in Ray's `available_node_types`): at most that many nodes of each type.
"""

from __future__ import annotations

import math

import ray

from core.settings import NodeType, Settings
from core.spec import JobParams
from jobs.errors import StageError


def worker_bundle(params: JobParams) -> dict[str, float]:
    """What one Ray Train worker reserves (fine_tune's `resources_per_worker`)."""
    return {"CPU": 1.0, "GPU": 1.0} if params.use_gpu else {"CPU": 1.0}


def task_cpus(params: JobParams) -> float:
    """CPUs for the feature and evaluation tasks: one per worker, but never more than one node offers.

    A task cannot span nodes; asking for more CPUs than the largest node has would wait forever.
    """
    largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    return float(max(1, min(params.num_workers, int(largest))))


def _fits(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many bundles one node holds."""
    return min((math.floor(node.get(k, 0.0) / v) for k, v in bundle.items() if v > 0), default=0)


def check_cluster_fits(params: JobParams, settings: Settings) -> None:
    if settings.fixed_cluster:
        _check_fixed(params)
    elif settings.node_types and all(t.max_workers is not None for t in settings.node_types.values()):
        _check_node_type_limits(params, settings.node_types)


def _check_fixed(params: JobParams) -> None:
    total = ray.cluster_resources()
    if params.use_gpu and total.get("GPU", 0) < params.num_workers:
        raise StageError(
            "not_enough_gpus",
            f"use_gpu=true with num_workers={params.num_workers} needs {params.num_workers} GPU(s), but this Ray "
            f"cluster has {total.get('GPU', 0):g} and does not autoscale; set use_gpu=false or add GPU nodes",
        )
    if total.get("CPU", 0) < params.num_workers:
        raise StageError(
            "not_enough_cpus",
            f"num_workers={params.num_workers} needs {params.num_workers} CPU(s) for its workers, but this Ray "
            f"cluster has {total.get('CPU', 0):g} and does not autoscale; lower num_workers",
        )


def _check_node_type_limits(params: JobParams, node_types: dict[str, NodeType]) -> None:
    bundle = worker_bundle(params)
    per_type = {name: (t.max_workers or 0) * _fits(t.resources, bundle) for name, t in node_types.items()}
    capacity = sum(per_type.values())
    if capacity >= params.num_workers:
        return
    kind = "GPU" if params.use_gpu else "CPU"
    offered = ", ".join(
        f"{name}: max_workers {t.max_workers} x {t.resources.get(kind, 0):g} {kind}" for name, t in node_types.items()
    )
    fix = (
        "lower num_workers, or raise max_workers of a node type with GPUs"
        if params.use_gpu
        else ("lower num_workers, or raise max_workers of a node type")
    )
    raise StageError(
        "not_enough_gpus" if params.use_gpu else "not_enough_cpus",
        f"use_gpu={str(params.use_gpu).lower()} with num_workers={params.num_workers} needs {params.num_workers} "
        f"{kind} worker(s), but this cluster's node types can provide at most {capacity} even fully scaled up "
        f"({offered}); {fix}",
    )
