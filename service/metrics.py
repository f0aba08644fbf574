"""Prometheus metrics, one registry per app so several apps (tests, workers) never share counters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.store import JobStore
from service.job_metrics import JobLogCollector

logger = logging.getLogger(__name__)

# Predictions take milliseconds on a warm replica and seconds on a cold one (model load, node scale-up).
_PREDICT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Where a warm prediction's time goes is a matter of milliseconds: finer buckets at the low end.
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# The replica's `timing_ms` keys, in the order a request meets them, and the API's own total.
PREDICT_STAGES = ("preprocess", "queue", "inference", "replica", "total")


class _JobsByStatus(Collector):
    """Read at scrape time, so the gauge is right for jobs changed by drivers and by other API replicas."""

    def __init__(self, get_store: Callable[[], JobStore | None]) -> None:
        self._get_store = get_store

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("trainyard_jobs", "Jobs in the store by status", labels=["status"])

    def describe(self) -> Iterator[Metric]:
        # Without describe() the registry would call collect() (and the database) at registration.
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        store = self._get_store()
        if store is not None:
            try:
                for status, count in store.count_by_status().items():
                    family.add_metric([status.value], count)
            except Exception:
                logger.exception("metrics: could not count jobs by status")
        yield family


class _JobCosts(Collector):
    """What finished and running jobs' Ray work held and cost, by job status, summed over the store at scrape time."""

    def __init__(self, get_store: Callable[[], JobStore | None]) -> None:
        self._get_store = get_store

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "trainyard_job_cpu_seconds", "CPU-seconds held by jobs' Ray work, by job status", labels=["status"]
            ),
            GaugeMetricFamily(
                "trainyard_job_gpu_seconds", "GPU-seconds held by jobs' Ray work, by job status", labels=["status"]
            ),
            GaugeMetricFamily(
                "trainyard_job_estimated_cost_usd",
                "Estimated price of jobs' Ray work (TRAINYARD_NODE_TYPES rates), by job status",
                labels=["status"],
            ),
        ]

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        cpu, gpu, usd = self._families()
        store = self._get_store()
        if store is not None:
            try:
                for status, costs in store.costs_by_status().items():
                    cpu.add_metric([status.value], sum(c.get("cpu_seconds", 0.0) for c in costs))
                    gpu.add_metric([status.value], sum(c.get("gpu_seconds", 0.0) for c in costs))
                    usd.add_metric([status.value], sum(c.get("estimated_usd", 0.0) for c in costs))
            except Exception:
                logger.exception("metrics: could not sum job costs")
        yield from (cpu, gpu, usd)


class Metrics:
    def __init__(self, get_store: Callable[[], JobStore | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trainyard_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "trainyard_http_request_duration_seconds",
            "HTTP request latency by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.predict_seconds = Histogram(
            "trainyard_predict_duration_seconds",
            "Round trip to the model server for one prediction, by outcome",
            ["outcome"],
            buckets=_PREDICT_BUCKETS,
            registry=self.registry,
        )
        self.predict_stage_seconds = Histogram(
            "trainyard_predict_stage_seconds",
            "Where a prediction's time went, per model: preprocess (decode, resize), queue (waiting for a forward), "
            "inference (the batch's forward), replica (all of the replica), total (the API, Serve hops included)",
            ["model_id", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.predict_batch_size = Histogram(
            "trainyard_predict_batch_size",
            "Rows in the forward pass each prediction rode in, per model",
            ["model_id"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.predict_requests = Counter(
            "trainyard_predict_requests",
            "Predictions for models the store lists, by model, route (predict, predict:batch) and answer status",
            ["model_id", "route", "status"],
            registry=self.registry,
        )
        self.model_predictions = Counter(
            "trainyard_model_predictions",
            "Predictions relayed per model version, by outcome (ok, client_error, unavailable, server_error)",
            ["model_id", "outcome"],
            registry=self.registry,
        )
        # The same counts, readable per model for GET /v1/models without walking the registry.
        self._traffic: dict[str, dict[str, int]] = {}
        self.jobs_submitted = Counter(
            "trainyard_jobs_submitted",
            "Training jobs accepted (new jobs, not idempotent replays)",
            registry=self.registry,
        )
        self.registry.register(_JobsByStatus(get_store))
        self.registry.register(JobLogCollector(get_store))
        self.registry.register(_JobCosts(get_store))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def observe_prediction(self, model_id: str, timing_ms: dict[str, float], batch_size: int | None) -> None:
        for stage in PREDICT_STAGES:
            if stage in timing_ms:
                self.predict_stage_seconds.labels(model_id, stage).observe(timing_ms[stage] / 1000)
        if batch_size is not None:
            self.predict_batch_size.labels(model_id).observe(batch_size)

    def count_prediction(self, model_id: str, outcome: str) -> None:
        self.model_predictions.labels(model_id, outcome).inc()
        counts = self._traffic.setdefault(model_id, {"requests": 0, "errors": 0})
        counts["requests"] += 1
        counts["errors"] += outcome != "ok"

    def traffic(self, model_id: str) -> dict[str, int]:
        return dict(self._traffic.get(model_id, {"requests": 0, "errors": 0}))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
