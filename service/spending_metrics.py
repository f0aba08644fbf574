"""Spending on /metrics: each tenant's spend this month against its budget, jobs stopped at their cost cap, the
scale-up overhead settled on jobs, and the Serve restores this API process started. Read from the store at scrape
time, like the other job metrics: every API replica exports the same values (aggregate with `max`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.store import JobStore
from core.tenancy import Tenancy
from service.budget import month_of
from service.serve_restore import ServeRestorer

logger = logging.getLogger(__name__)


class SpendingCollector(Collector):
    def __init__(
        self, get_store: Callable[[], JobStore | None], get_restorer: Callable[[], ServeRestorer | None]
    ) -> None:
        self._get_store = get_store
        self._get_restorer = get_restorer

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "trainyard_tenant_spend_usd",
                "Estimated spend of each tenant's jobs created this calendar month (UTC), overhead included",
                labels=["tenant"],
            ),
            GaugeMetricFamily(
                "trainyard_tenant_budget_usd", "Monthly budget of each tenant that has one", labels=["tenant"]
            ),
            GaugeMetricFamily("trainyard_jobs_cost_capped", "Jobs stopped at their max_cost_usd (cost_cap_reached)"),
            GaugeMetricFamily(
                "trainyard_job_scaleup_overhead_usd",
                "Settled scale-up overhead of jobs (boot and idle tail of nodes started for them), by job status",
                labels=["status"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()
        yield CounterMetricFamily("trainyard_serve_restores", "Serve restores this API process started")

    def collect(self) -> Iterator[Metric]:
        spend, budget, capped, overhead = self._families()
        store = self._get_store()
        if store is not None:
            try:
                self._read(store, spend, budget, capped, overhead)
            except Exception:
                logger.exception("metrics: could not read spending")
        yield from (spend, budget, capped, overhead)
        restorer = self._get_restorer()
        restores = CounterMetricFamily("trainyard_serve_restores", "Serve restores this API process started")
        restores.add_metric([], restorer.restores if restorer is not None else 0)
        yield restores

    @staticmethod
    def _read(
        store: JobStore,
        spend: GaugeMetricFamily,
        budget: GaugeMetricFamily,
        capped: GaugeMetricFamily,
        overhead: GaugeMetricFamily,
    ) -> None:
        start, _ = month_of(datetime.now(UTC))
        for name, usd in sorted(store.spend_by_tenant(start).items(), key=lambda item: item[0] or ""):
            spend.add_metric([name or ""], usd)
        for tenant in Tenancy(store.engine).list_tenants():
            if tenant.monthly_budget_usd is not None:
                budget.add_metric([tenant.name], tenant.monthly_budget_usd)
        capped.add_metric([], store.cost_capped_jobs())
        for status, costs in store.costs_by_status().items():
            overhead.add_metric([status.value], sum((c.get("overhead") or {}).get("estimated_usd", 0.0) for c in costs))
