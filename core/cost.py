"""What a job's Ray work held (CPU- and GPU-seconds, on which node) and what that would cost.

Each piece of work (the feature task, every Ray Train rank, the evaluation task) is one `WorkUsage`: the
resources Ray reserved for it times how long it held them. The price is the node's hourly rate times the
share of the node the work reserved (4 CPUs of a 4-CPU node is the whole node; 1 GPU of a 1-GPU node too),
so an estimate never charges the idle rest of a shared node. A node's type comes from `RAY_NODE_TYPE_NAME`,
which Ray's autoscaler, the cluster launcher and KubeRay set on the nodes they start; a node without one
(a hand-started or local node) is priced as the cheapest configured type that could hold the work.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from core.settings import NodeType

Work = Literal["features", "training", "evaluation", "prediction"]


class WorkUsage(BaseModel):
    work: Work
    node_id: str
    node_type: str | None = Field(description="RAY_NODE_TYPE_NAME of the node, when it has one")
    cpus: float
    gpus: float
    seconds: float
    rank: int | None = None  # Ray Train workers only


class JobCost(BaseModel):
    cpu_seconds: float
    gpu_seconds: float
    estimated_usd: float
    rates_as_of: date
    usage: list[WorkUsage]


def _share(held: WorkUsage, node: NodeType) -> float | None:
    """The fraction of one node the work reserved, or None if this node type could not hold it."""
    shares = []
    for name, amount in (("CPU", held.cpus), ("GPU", held.gpus)):
        offered = node.resources.get(name, 0.0)
        if amount > offered:
            return None
        if offered > 0:
            shares.append(amount / offered)
    return max(shares, default=0.0)


def _price(held: WorkUsage, node_types: dict[str, NodeType]) -> float:
    named = node_types.get(held.node_type or "")
    if named is not None and named.usd_per_hour is not None:
        candidates = [(named, _share(held, named) or 1.0)]
    else:
        candidates = [
            (node, share)
            for node in node_types.values()
            if node.usd_per_hour is not None and (share := _share(held, node)) is not None
        ]
    if not candidates:
        return 0.0
    return min(node.usd_per_hour * share for node, share in candidates if node.usd_per_hour is not None) * (
        held.seconds / 3600
    )


def job_cost(usage: Iterable[WorkUsage], node_types: dict[str, NodeType], rates_as_of: date) -> JobCost:
    items = list(usage)
    return JobCost(
        cpu_seconds=round(sum(u.cpus * u.seconds for u in items), 3),
        gpu_seconds=round(sum(u.gpus * u.seconds for u in items), 3),
        estimated_usd=round(sum(_price(u, node_types) for u in items), 6),
        rates_as_of=rates_as_of,
        usage=items,
    )
