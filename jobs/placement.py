"""Where a job's heavy one-off work runs (feature extraction, an evaluation pass): on the driver's node when it can
hold the work now, else as a Ray task on a worker node; either way in a placement group of its own.

The placement group is what makes a wait for nodes visible (`jobs.waiting`) and bounds the time the work held its
resources (its cost): from the moment the group is placed until the work returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray

from core.cost import Work, WorkUsage
from core.spec import JobParams
from jobs.resources import task_cpus
from jobs.usage import located, this_node

T = TypeVar("T")
# How long heavy work waits for CPUs on the driver's own node before it goes to a worker node instead.
LOCAL_WAIT_S = 1.0


def run_work(work: Work, params: JobParams, fn: Callable[..., T], *args: Any) -> tuple[T, WorkUsage, str]:
    """`fn(*args)` in a placement group of its own: its result, the resources it held and for how long, and where
    it ran ("driver" or "task").

    In this driver's process when the driver's node can hold it now (a CPU job on a node with free CPUs, as on the
    single-machine stack), else as a Ray task on a worker node (GPU jobs, a head that offers no CPUs). A task costs
    a worker process its own import of torch, torchvision and the job's modules, which this driver has already
    paid (benchmarks/README.md).
    """
    from ray.util.placement_group import remove_placement_group

    cpus, gpus = task_cpus(params), 1.0 if params.use_gpu else 0.0
    group = _local_group(cpus) if not gpus else None
    if group is not None:
        try:
            placed_at, placed = time.time(), time.monotonic()
            result, (node_id, node_type) = fn(*args), this_node()
            held = round(time.monotonic() - placed, 3)
        finally:
            remove_placement_group(group)
    else:
        result, node_id, node_type, placed_at, held = _remote(cpus, gpus, fn, *args)
    usage = WorkUsage(
        work=work, node_id=node_id, node_type=node_type, cpus=cpus, gpus=gpus, seconds=held, started_at=placed_at
    )
    return result, usage, "driver" if group is not None else "task"


def _local_group(cpus: float) -> Any:
    """A placement group of `cpus` CPUs on this driver's node, or None when that node cannot hold it within
    LOCAL_WAIT_S (it has fewer CPUs, or other work holds them): then the work goes to a worker node."""
    from ray._raylet import RAY_NODE_ID_KEY  # type: ignore[attr-defined]  # the label Ray gives each node its id
    from ray.util.placement_group import placement_group, remove_placement_group

    here = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == here), None)
    if node is None or node["Resources"].get("CPU", 0.0) < cpus:
        return None
    group = placement_group([{"CPU": cpus}], bundle_label_selector=[{RAY_NODE_ID_KEY: here}])
    ready, _ = ray.wait([group.ready()], timeout=LOCAL_WAIT_S)
    if not ready:
        remove_placement_group(group)
        return None
    return group


def _remote(cpus: float, gpus: float, fn: Callable[..., T], *args: Any) -> tuple[T, str, str | None, float, float]:
    """`fn(*args)` as a Ray task on a worker node: its result, node id, node type, when its group was placed (unix
    seconds) and the seconds it held the group."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([{"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}])
    try:
        ray.get(group.ready())
        placed_at, placed = time.time(), time.monotonic()
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
        task = ray.remote(located).options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=strategy, max_retries=1)
        result, node_id, node_type = ray.get(task.remote(fn, *args))
        return result, node_id, node_type, placed_at, round(time.monotonic() - placed, 3)
    finally:
        remove_placement_group(group)
