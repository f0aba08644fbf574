"""Tenant budgets: a tenant whose jobs have spent its monthly budget gets its new jobs refused, with the figures.

Spend is what the tenant's jobs created this calendar month (UTC) are estimated to cost, running ones so far and
their scale-up overhead included (`core.cost.JobCost.spent_usd`). The budget gates new jobs only: a job already
running goes on (its own `max_cost_usd` is what bounds it), so a month's spend can end above the budget by what
the jobs running at the moment it was reached spend after it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from core.store import JobStore
from core.tenancy import Tenant
from service.errors import ApiError


class BudgetFigures(BaseModel):
    tenant: str
    spent_usd: float
    budget_usd: float
    period_start: datetime = Field(description="the calendar month (UTC) the spend is counted over")
    period_end: datetime


def month_of(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def figures(store: JobStore, tenant: Tenant, now: datetime | None = None) -> BudgetFigures | None:
    """The tenant's spend against its budget this month; None when it has no budget."""
    if tenant.monthly_budget_usd is None:
        return None
    start, end = month_of(now or datetime.now(UTC))
    spent = store.tenant_spend(tenant.name, start)
    return BudgetFigures(
        tenant=tenant.name, spent_usd=spent, budget_usd=tenant.monthly_budget_usd, period_start=start, period_end=end
    )


def check_budget(store: JobStore, tenant: Tenant | None) -> None:
    """Raise the 402 that refuses a new job of a tenant at or over its budget."""
    found = figures(store, tenant) if tenant is not None else None
    if found is None or found.spent_usd < found.budget_usd:
        return
    raise ApiError(
        402,
        "budget_exceeded",
        f"tenant {found.tenant!r} has spent ${found.spent_usd:.2f} of its monthly budget ${found.budget_usd:.2f} "
        f"for {found.period_start:%Y-%m} (UTC); new jobs are refused until {found.period_end:%Y-%m-%d} or until an "
        f"operator raises the budget (python -m service.admin tenants budget {found.tenant} --monthly-usd N)",
        extra={"budget": found.model_dump(mode="json")},
    )
