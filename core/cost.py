"""What a job's Ray work held (CPU- and GPU-seconds, on which node) and what that would cost.

Each piece of work (the feature task, every Ray Train rank, the evaluation task) is one `WorkUsage`: the
resources Ray reserved for it times how long it held them. The price is the node's hourly rate times the
share of the node the work reserved (4 CPUs of a 4-CPU node is the whole node; 1 GPU of a 1-GPU node too),
so an estimate never charges the idle rest of a shared node. A node's type comes from `RAY_NODE_TYPE_NAME`,
which Ray's autoscaler, the cluster launcher and KubeRay set on the nodes they start (KubeRay: the worker
group's name, `headgroup` for the head); the rate is the type's billed one (`NodeType.billed_usd_per_hour`:
the spot price on spot capacity). A node without a known type (a hand-started or local node) is priced as the
cheapest configured type that could hold the work.

Scale-up overhead (nodes the autoscaler started for the job: their boot and idle tail) is priced apart, once
the nodes are gone (`core.overhead`); `estimated_usd` is the work alone, `total_usd` both.
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
    started_at: float | None = Field(default=None, description="when the work began to hold its resources (unix s)")
    # Filled in by `job_cost`: the rate this work was priced at (its share of its node's hourly rate) and its price.
    usd_per_hour: float | None = None
    estimated_usd: float | None = None


class NodeOverhead(BaseModel):
    """One node the autoscaler started for the job: its boot and its idle tail, at the node's whole rate."""

    node_id: str
    node_type: str | None
    usd_per_hour: float
    boot_seconds: float = Field(description="from the job starting to wait for nodes to this node joining Ray")
    idle_seconds: float | None = Field(
        description="from the job's last work on it to its release; 0 when another job used it after; "
        "None while it runs"
    )
    estimated_usd: float


class ScaleUpOverhead(BaseModel):
    nodes: list[NodeOverhead]
    boot_seconds: float
    idle_seconds: float
    estimated_usd: float
    settled: bool = Field(description="every node counted here is released (or used by a later job)")


class JobCost(BaseModel):
    cpu_seconds: float
    gpu_seconds: float
    estimated_usd: float = Field(description="the job's own work, priced at its nodes' rates")
    rates_as_of: date
    usage: list[WorkUsage]
    overhead: ScaleUpOverhead | None = Field(
        default=None, description="nodes the autoscaler started for this job: boot and idle tail, priced apart"
    )
    total_usd: float | None = Field(default=None, description="estimated_usd plus the overhead's")

    def with_overhead(self, overhead: ScaleUpOverhead) -> JobCost:
        total = round(self.estimated_usd + overhead.estimated_usd, 6)
        return self.model_copy(update={"overhead": overhead, "total_usd": total})

    @property
    def spent_usd(self) -> float:
        """What the job has cost so far, overhead included: what a tenant's budget counts."""
        return self.total_usd if self.total_usd is not None else self.estimated_usd


def node_share(cpus: float, gpus: float, node: NodeType) -> float | None:
    """The fraction of one node the work reserved, or None if this node type could not hold it."""
    shares = []
    for name, amount in (("CPU", cpus), ("GPU", gpus)):
        offered = node.resources.get(name, 0.0)
        if amount > offered:
            return None
        if offered > 0:
            shares.append(amount / offered)
    return max(shares, default=0.0)


def work_rate(node_type: str | None, cpus: float, gpus: float, node_types: dict[str, NodeType]) -> float:
    """USD per hour the work is charged: its share of its node type's billed rate (0 when no type could hold it).

    A node named after a configured type is that type whatever it offers (the name is what KubeRay and the
    launcher set); a work that reserved nothing countable there is charged the whole node, as it blocked it.
    """
    named = node_types.get(node_type or "")
    if named is not None and named.billed_usd_per_hour is not None:
        return named.billed_usd_per_hour * (node_share(cpus, gpus, named) or 1.0)
    rates = [
        node.billed_usd_per_hour * share
        for node in node_types.values()
        if node.billed_usd_per_hour is not None and (share := node_share(cpus, gpus, node)) is not None
    ]
    return min(rates, default=0.0)


def job_cost(usage: Iterable[WorkUsage], node_types: dict[str, NodeType], rates_as_of: date) -> JobCost:
    items = []
    for u in usage:
        rate = work_rate(u.node_type, u.cpus, u.gpus, node_types)
        items.append(u.model_copy(update={"usd_per_hour": round(rate, 6), "estimated_usd": rate * u.seconds / 3600}))
    return JobCost(
        cpu_seconds=round(sum(u.cpus * u.seconds for u in items), 3),
        gpu_seconds=round(sum(u.gpus * u.seconds for u in items), 3),
        estimated_usd=round(sum(u.estimated_usd or 0.0 for u in items), 6),
        rates_as_of=rates_as_of,
        usage=[u.model_copy(update={"estimated_usd": round(u.estimated_usd or 0.0, 8)}) for u in items],
    )
