"""What jobs spent: the costs the scale-up settlement revisits, a tenant's spend over a period, capped jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core.spec import JobStatus
from core.store.base import TERMINAL, StoreBase, _now
from core.store.tables import jobs_table

COST_CAP_REACHED = "cost_cap_reached"


def spent_usd(cost: dict[str, Any] | None) -> float:
    """A stored cost's spend, its scale-up overhead included (`core.cost.JobCost.spent_usd`, read from JSON)."""
    if not cost:
        return 0.0
    total = cost.get("total_usd")
    return float(total if total is not None else cost.get("estimated_usd") or 0.0)


class Spending(StoreBase):
    def recent_costs(self, since: datetime) -> list[tuple[str, JobStatus, dict[str, Any]]]:
        """(id, status, cost) of every job with a recorded cost that is still active or ended after `since`."""
        query = sa.select(jobs_table.c.id, jobs_table.c.status, jobs_table.c.cost).where(
            jobs_table.c.cost.is_not(None),
            sa.or_(jobs_table.c.status.not_in(TERMINAL), jobs_table.c.finished_at >= since),
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(row.id, JobStatus(row.status), row.cost) for row in rows if row.cost]

    def settle_cost(self, job_id: str, cost: dict[str, Any], event: tuple[str, dict[str, Any]] | None) -> bool:
        """Write an ended job's cost with its scale-up overhead, and say so in its log; False if the job is no
        longer ended (retried meanwhile: its next end is settled again)."""
        with self._tx() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status.in_(TERMINAL))
                .values(cost=cost, updated_at=_now())
            )
            if result.rowcount != 1:
                return False
            if event is not None:
                self._event(conn, job_id, "overhead", event[0], event[1])
        return True

    def tenant_spend(self, tenant: str | None, since: datetime) -> float:
        """USD spent by the tenant's jobs created at or after `since`, running ones so far included."""
        owner = jobs_table.c.tenant.is_(None) if tenant is None else jobs_table.c.tenant == tenant
        query = sa.select(jobs_table.c.cost).where(
            owner, jobs_table.c.created_at >= since, jobs_table.c.cost.is_not(None)
        )
        with self.engine.connect() as conn:
            return round(sum(spent_usd(row.cost) for row in conn.execute(query)), 6)

    def spend_by_tenant(self, since: datetime) -> dict[str | None, float]:
        """`tenant_spend` of every tenant with a cost since `since`, in one query (metrics)."""
        query = sa.select(jobs_table.c.tenant, jobs_table.c.cost).where(
            jobs_table.c.created_at >= since, jobs_table.c.cost.is_not(None)
        )
        spend: dict[str | None, float] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                spend[row.tenant] = spend.get(row.tenant, 0.0) + spent_usd(row.cost)
        return {tenant: round(usd, 6) for tenant, usd in spend.items()}

    def cost_capped_jobs(self) -> int:
        """Jobs stopped at their `max_cost_usd`."""
        query = sa.select(jobs_table.c.error).where(jobs_table.c.status == JobStatus.failed.value)
        with self.engine.connect() as conn:
            return sum(1 for row in conn.execute(query) if (row.error or {}).get("code") == COST_CAP_REACHED)
