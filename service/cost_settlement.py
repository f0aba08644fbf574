"""Settles each ended job's scale-up overhead (`core.overhead`) once the nodes it started are released.

The idle tail of a node is known only when the autoscaler releases it, minutes after the job's driver has exited,
so the API's reconciler does this, not the driver: each pass reads Ray's node list (dead nodes included) and the
costs of recent jobs, and writes the overhead on every ended job whose nodes changed. A node still running long
after the job ended is not being released (a node group's minimum, a hand-started node): `RELEASE_LIMIT` after the
job ended, the job is settled without a tail there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from core.cost import JobCost, ScaleUpOverhead
from core.overhead import NodeLife, Span, scale_up_overhead, spans, waits_from_events
from core.settings import Settings
from core.store import JobStore
from service.ray_cluster import ClusterView

logger = logging.getLogger(__name__)

# Ended jobs are revisited this long; a node not released within RELEASE_LIMIT of a job's end never will be.
SETTLE_WINDOW = timedelta(hours=24)
RELEASE_LIMIT = timedelta(hours=12)
_WAIT_KINDS = ("waiting", "resources")


class CostSettler:
    def __init__(self, store: JobStore, cluster: ClusterView, settings: Settings) -> None:
        self.store = store
        self.cluster = cluster
        self.settings = settings
        self._seen: tuple[frozenset[str], frozenset[str]] | None = None  # (unsettled jobs, dead nodes) last pass

    def run_once(self) -> None:
        now = datetime.now(UTC)
        recent = self.store.recent_costs(now - SETTLE_WINDOW)
        ended = {
            job_id: JobCost.model_validate(cost)
            for job_id, status, cost in recent
            if status.terminal and not (cost.get("overhead") or {}).get("settled")
        }
        if not ended:
            return
        nodes = self.cluster.nodes()
        if nodes is None:
            return  # Ray does not answer: the next pass settles
        dead = frozenset(n.node_id for n in nodes if n.ended_at is not None)
        if self._seen == (frozenset(ended), dead):
            return  # nothing ended and no node went away since the last pass: the same answers again
        self._seen = (frozenset(ended), dead)
        all_spans: list[Span] = [
            s for job_id, _, cost in recent for s in spans(job_id, JobCost.model_validate(cost).usage)
        ]
        by_id = {n.node_id: n for n in nodes}
        for job_id, cost in ended.items():
            try:
                self._settle(job_id, cost, all_spans, by_id, now)
            except Exception:
                logger.exception("cost settlement: job %s", job_id)

    def _settle(
        self, job_id: str, cost: JobCost, all_spans: list[Span], nodes: dict[str, NodeLife], now: datetime
    ) -> None:
        types = {u.node_id: u.node_type for u in cost.usage}
        waits = waits_from_events((e.kind, e.at, e.data) for e in self.store.events(job_id) if e.kind in _WAIT_KINDS)
        overhead = scale_up_overhead(job_id, types, waits, all_spans, nodes, self.settings.node_types)
        job = self.store.get_job(job_id)
        if not overhead.settled and job is not None and job.finished_at and now - job.finished_at > RELEASE_LIMIT:
            overhead = _without_pending_tails(overhead)
        if cost.overhead == overhead:
            return
        event = (_story(overhead), overhead.model_dump(mode="json")) if overhead.settled and overhead.nodes else None
        if self.store.settle_cost(job_id, cost.with_overhead(overhead).model_dump(mode="json"), event):
            logger.info("cost settlement: job %s overhead %s", job_id, overhead.model_dump_json())


def _without_pending_tails(overhead: ScaleUpOverhead) -> ScaleUpOverhead:
    """Settled as it stands: a node still running this long after the job is not one the autoscaler releases."""
    nodes = [n.model_copy(update={"idle_seconds": n.idle_seconds or 0.0}) for n in overhead.nodes]
    return overhead.model_copy(update={"nodes": nodes, "settled": True})


def _story(overhead: ScaleUpOverhead) -> str:
    parts = [
        f"{n.node_type or 'a node'} {n.node_id[:8]}: boot {n.boot_seconds:.0f} s + idle {n.idle_seconds or 0:.0f} s "
        f"at ${n.usd_per_hour:g}/h"
        for n in overhead.nodes
    ]
    return f"scale-up overhead ${overhead.estimated_usd:.6f} for {len(parts)} node(s) started for or left idle by " + (
        f"this job: {'; '.join(parts)}"
    )
