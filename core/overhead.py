"""Scale-up overhead: what the nodes the autoscaler started for a job cost beyond the job's own work.

A node started for a job is paid from its launch, not from when the job's work lands on it, and it stays paid
for the autoscaler's idle timeout after the last work leaves it. Neither is any job's work, yet both are money
a job caused. The attribution, from what Ray and the job's own record say:

- **boot**: a node belongs to a job's scale-up when it joined Ray while that job waited for resources (its
  `waiting` record: a placement group pending) and the first work any job ran on it was this job's. Its boot is
  the time from the job starting to wait to the node joining: the autoscaler asks for the node as soon as the
  demand appears, so the node is paid at the latest from then.
- **idle tail**: the time from the last work on a node to the node's release goes to the job whose work ended
  last there, whether or not it started the node: that job's end is what left the node idle. A node another job
  used after this one leaves this job no tail.

Both are priced at the node's whole billed rate (nobody else could use it meanwhile). A node no job's work ran
on (the autoscaler overshooting) is nobody's overhead: it is the cluster's, seen on the cloud bill only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from core.cost import NodeOverhead, ScaleUpOverhead, WorkUsage
from core.settings import NodeType

# The waiting record is written by a poll (jobs.waiting, every 2 s): a node can join up to that long after the
# record says the resources arrived.
ARRIVAL_SLACK_S = 5.0


@dataclass(frozen=True)
class NodeLife:
    """A Ray node as the cluster reports it: when it joined, and when it was released (None: alive)."""

    node_id: str
    is_head: bool
    started_at: float  # unix seconds
    ended_at: float | None


@dataclass(frozen=True)
class Span:
    """One piece of one job's work on one node."""

    job_id: str
    node_id: str
    start: float
    end: float


@dataclass(frozen=True)
class Wait:
    """A time the job waited for resources: from `since` until they arrived (None: still waiting)."""

    since: float
    until: float | None


def spans(job_id: str, usage: Iterable[WorkUsage]) -> list[Span]:
    return [Span(job_id, u.node_id, u.started_at, u.started_at + u.seconds) for u in usage if u.started_at is not None]


def _boot(node: NodeLife, waits: list[Wait]) -> float:
    """Seconds from the wait the node's start answered to the node joining; 0 if it answered none."""
    answered = [
        w.since
        for w in waits
        if w.since <= node.started_at and (w.until is None or node.started_at <= w.until + ARRIVAL_SLACK_S)
    ]
    return node.started_at - max(answered) if answered else 0.0


def scale_up_overhead(
    job_id: str,
    node_types_of_work: dict[str, str | None],
    waits: list[Wait],
    all_spans: list[Span],
    nodes: dict[str, NodeLife],
    node_types: dict[str, NodeType],
) -> ScaleUpOverhead:
    """The job's overhead: `node_types_of_work` maps each node its work ran on to that node's type name,
    `all_spans` holds every job's work on those nodes (this job's included), `nodes` what Ray knows of them.

    A node Ray no longer lists (a restarted cluster forgets dead nodes) counts as settled with no tail.
    """
    counted: list[NodeOverhead] = []
    settled = True
    for node_id, type_name in node_types_of_work.items():
        on_node = sorted((s for s in all_spans if s.node_id == node_id), key=lambda s: s.start)
        mine = [s for s in on_node if s.job_id == job_id]
        node = nodes.get(node_id)
        if not mine or node is None or node.is_head:  # the head is never started for a job, nor released
            continue
        boot = _boot(node, waits) if on_node[0].job_id == job_id else 0.0
        last = max(on_node, key=lambda s: s.end)
        idle: float | None = 0.0
        if last.job_id == job_id:
            idle = max(0.0, node.ended_at - last.end) if node.ended_at is not None else None
        if boot <= 0 and idle == 0:
            continue
        settled = settled and idle is not None
        named = node_types.get(type_name or "")
        rate = named.billed_usd_per_hour if named is not None and named.billed_usd_per_hour is not None else 0.0
        counted.append(
            NodeOverhead(
                node_id=node_id,
                node_type=type_name,
                usd_per_hour=rate,
                boot_seconds=round(boot, 3),
                idle_seconds=None if idle is None else round(idle, 3),
                estimated_usd=round(rate * (boot + (idle or 0.0)) / 3600, 8),
            )
        )
    return ScaleUpOverhead(
        nodes=counted,
        boot_seconds=round(sum(n.boot_seconds for n in counted), 3),
        idle_seconds=round(sum(n.idle_seconds or 0.0 for n in counted), 3),
        estimated_usd=round(sum(n.estimated_usd for n in counted), 6),
        settled=settled,
    )


def waits_from_events(events: Iterable[tuple[str, datetime, dict[str, object] | None]]) -> list[Wait]:
    """The job's waits for resources from its event log: a `waiting` event opens one (its data's `since`),
    the next `resources` event closes it (when the resources arrived)."""
    waits: list[Wait] = []
    for kind, at, data in events:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if kind == "waiting" and data and isinstance(data.get("since"), str):
            waits.append(Wait(since=datetime.fromisoformat(str(data["since"])).timestamp(), until=None))
        elif kind == "resources" and waits and waits[-1].until is None:
            waits[-1] = Wait(since=waits[-1].since, until=at.timestamp())
    return waits
