"""Job metrics computed at scrape time from the store: the event log, folded into counters and histograms.

The store is the source of truth and is shared by every API replica, the drivers and Ray Train, so the
metrics come from it rather than from this process: each replica exports the same cluster-wide values
(aggregate with `max`, not `sum`, across replicas) and a restarted replica picks up where the log is.

Each scrape reads only the events written since the last one. Events are numbered as they are inserted, but
on PostgreSQL a transaction can commit a lower number after a higher one is visible, so the last
`SETTLE_S` seconds of the log are read again on every scrape and events already counted are skipped.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from core.spec import JobStatus
from core.store import JobStore, LoggedEvent

logger = logging.getLogger(__name__)

SETTLE_S = 60.0
TERMINAL_KINDS = ("succeeded", "failed", "cancelled")
FOLDED_KINDS = ("queued", "phase", "fetched", "epoch", *TERMINAL_KINDS)
# Phases last from under a second (the LR sweep on cached features) to hours (training on a big dataset).
PHASE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
# Waiting is seconds on a warm cluster and minutes while GPU nodes start.
WAIT_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
JOB_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, list[tuple[str, float]]()
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            cumulative += count
            out.append((floatToGoString(bound), cumulative))
        return out


@dataclass
class _Fold:
    """Everything the event log has said so far, reduced to what the metrics need."""

    phase_seconds: dict[str, _Histogram] = field(default_factory=lambda: defaultdict(lambda: _Histogram(PHASE_BUCKETS)))
    job_seconds: dict[str, _Histogram] = field(default_factory=lambda: defaultdict(lambda: _Histogram(JOB_BUCKETS)))
    queue_wait: _Histogram = field(default_factory=lambda: _Histogram(WAIT_BUCKETS))
    fetched_bytes: float = 0.0
    fetched_objects: float = 0.0
    training_images: float = 0.0
    training_seconds: float = 0.0
    # Per job, only until it ends: when it was accepted, since when it waits to start, its current phase and
    # its latest epoch's throughput.
    accepted_at: dict[str, datetime] = field(default_factory=dict)
    waiting_since: dict[str, datetime] = field(default_factory=dict)
    open_phase: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    images_per_second: dict[str, float] = field(default_factory=dict)

    def add(self, event: LoggedEvent) -> None:
        job, at, data = event.job_id, event.at, event.data or {}
        if event.kind == "queued":
            self.accepted_at[job] = at
            self.waiting_since[job] = at
        elif event.kind == "phase":
            self._close_phase(job, at)
            waited_since = self.waiting_since.pop(job, None)
            if waited_since is not None:  # the first phase: the job left the queue
                self.queue_wait.observe(max(0.0, (at - waited_since).total_seconds()))
            self.open_phase[job] = (str(data.get("phase", "unknown")), at)
        elif event.kind == "fetched":
            self.fetched_bytes += float(data.get("bytes_downloaded", 0))
            self.fetched_objects += float(data.get("downloaded", 0))
        elif event.kind == "epoch":
            seconds, rate = float(data.get("seconds", 0)), float(data.get("images_per_second", 0))
            self.training_seconds += seconds
            self.training_images += seconds * rate
            self.images_per_second[job] = rate
        elif event.kind in TERMINAL_KINDS:
            self._close_phase(job, at)
            self.waiting_since.pop(job, None)
            accepted = self.accepted_at.pop(job, None)
            if accepted is not None:
                self.job_seconds[event.kind].observe(max(0.0, (at - accepted).total_seconds()))
            self.images_per_second.pop(job, None)

    def _close_phase(self, job: str, at: datetime) -> None:
        opened = self.open_phase.pop(job, None)
        if opened is not None:
            phase, since = opened
            self.phase_seconds[phase].observe(max(0.0, (at - since).total_seconds()))


class JobLogCollector(Collector):
    """Trainyard's job metrics: jobs by phase, phase durations, queue wait, training throughput, S3 bytes."""

    def __init__(self, get_store: Callable[[], JobStore | None]) -> None:
        self._get_store = get_store
        self._lock = threading.Lock()
        self._fold = _Fold()
        self._floor = 0  # every event with an id at or below this has been counted
        self._counted: set[int] = set()  # counted events above the floor

    def describe(self) -> Iterator[Metric]:
        # Without describe() the registry would call collect() (and the database) at registration.
        yield from self._families(_Fold(), {}, 0.0)

    def collect(self) -> Iterator[Metric]:
        store = self._get_store()
        running: dict[str, int] = {}
        oldest_wait = 0.0
        if store is not None:
            try:
                with self._lock:
                    self._read_new_events(store)
                now = datetime.now(UTC)
                for job in store.active_jobs():
                    if job.status == JobStatus.running and job.phase is not None:
                        running[job.phase.value] = running.get(job.phase.value, 0) + 1
                    elif job.status == JobStatus.queued:
                        oldest_wait = max(oldest_wait, (now - job.created_at).total_seconds())
            except Exception:
                logger.exception("metrics: could not read the job log")
        with self._lock:
            yield from self._families(self._fold, running, oldest_wait)

    def _read_new_events(self, store: JobStore) -> None:
        events = store.events_of_all_jobs(self._floor, FOLDED_KINDS)
        for event in events:
            if event.id not in self._counted:
                self._fold.add(event)
                self._counted.add(event.id)
        settled_before = datetime.now(UTC) - timedelta(seconds=SETTLE_S)
        settled = [e.id for e in events if e.at < settled_before]
        if settled:
            self._floor = max(self._floor, max(settled))
            self._counted = {i for i in self._counted if i > self._floor}

    @staticmethod
    def _families(fold: _Fold, running: dict[str, int], oldest_wait: float) -> Iterator[Metric]:
        by_phase = GaugeMetricFamily(
            "trainyard_jobs_running_by_phase", "Running jobs by the phase they are in", labels=["phase"]
        )
        for phase, count in sorted(running.items()):
            by_phase.add_metric([phase], count)
        yield by_phase
        yield GaugeMetricFamily(
            "trainyard_job_oldest_queued_seconds",
            "How long the oldest queued job has waited to start (0 when none waits)",
            value=oldest_wait,
        )
        phases = HistogramMetricFamily(
            "trainyard_job_phase_duration_seconds", "Time jobs spent in each phase, phases that ended", labels=["phase"]
        )
        for phase, histogram in sorted(fold.phase_seconds.items()):
            phases.add_metric([phase], histogram.buckets(), histogram.total)
        yield phases
        jobs = HistogramMetricFamily(
            "trainyard_job_duration_seconds", "Time from accepted to finished, by outcome", labels=["status"]
        )
        for status, histogram in sorted(fold.job_seconds.items()):
            jobs.add_metric([status], histogram.buckets(), histogram.total)
        yield jobs
        wait = HistogramMetricFamily(
            "trainyard_job_queue_wait_seconds", "Time from accepted to the first phase (waiting for the cluster)"
        )
        wait.add_metric([], fold.queue_wait.buckets(), fold.queue_wait.total)
        yield wait
        yield CounterMetricFamily(
            "trainyard_s3_fetched_bytes", "Bytes downloaded from S3 by dataset fetches", value=fold.fetched_bytes
        )
        yield CounterMetricFamily(
            "trainyard_s3_fetched_objects", "Objects downloaded from S3 (cache misses)", value=fold.fetched_objects
        )
        yield CounterMetricFamily(
            "trainyard_training_images",
            "Images trained on in Ray Train epochs (all workers; rate it against trainyard_training_seconds)",
            value=fold.training_images,
        )
        yield CounterMetricFamily(
            "trainyard_training_seconds", "Wall time of Ray Train epochs", value=fold.training_seconds
        )
        throughput = GaugeMetricFamily(
            "trainyard_training_images_per_second",
            "Training throughput of each running job's latest epoch",
            labels=["job_id"],
        )
        for job, rate in sorted(fold.images_per_second.items()):
            throughput.add_metric([job], rate)
        yield throughput
