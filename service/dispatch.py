"""The quota gate: which queued jobs are handed to Ray now, in a fair order, and why the others wait.

Each tenant may hold at most `max_concurrent_jobs` launched jobs and `max_gpu_workers` GPU workers at once
(its own limits, else the settings'). A job over its tenant's quota stays `queued` in the store with a
`waiting` of reason "quota", and keeps its place: a tenant's jobs launch oldest first, and a job that does not
fit holds back the younger ones behind it (no small job jumps the queue for ever).

Ray runs what it is given in submission order, so the order of launching is what fairness means here:
tenants take turns (round-robin, the tenant with the oldest waiting job first), so one tenant's burst of
fifty jobs cannot push another tenant's single job to the back of Ray's queue.

`Dispatcher.admit` runs it for each POST's job, `Dispatcher.run_once` for every reconcile pass; a store-level
claim (`JobStore.claim_launch`) makes sure two callers never submit the same job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel

from core.settings import Settings
from core.spec import JobWaiting
from core.store import JobRecord, JobStore
from core.tenancy import Tenancy
from service.launcher import Launcher, LauncherUnavailable
from service.submission import submit_if_claimed

logger = logging.getLogger(__name__)


class Limits(BaseModel):
    max_concurrent_jobs: int
    max_gpu_workers: int


def gpu_workers(job: JobRecord) -> int:
    return job.params.num_workers if job.params.use_gpu else 0


@dataclass
class _Usage:
    jobs: int = 0
    gpu_workers: int = 0


@dataclass
class Plan:
    launch: list[JobRecord] = field(default_factory=list)  # in the order to submit them
    wait: list[tuple[JobRecord, str]] = field(default_factory=list)  # with what each one waits for


def _why_not(job: JobRecord, usage: _Usage, limits: Limits) -> str | None:
    if usage.jobs + 1 > limits.max_concurrent_jobs:
        return (
            f"waiting for the tenant's quota: {usage.jobs} of {limits.max_concurrent_jobs} concurrent jobs are "
            "running or launched (max_concurrent_jobs); it starts, in its place, when one of them ends"
        )
    need = gpu_workers(job)
    if need and usage.gpu_workers + need > limits.max_gpu_workers:
        return (
            f"waiting for the tenant's quota: it needs {need} GPU workers and {usage.gpu_workers} of "
            f"{limits.max_gpu_workers} are held (max_gpu_workers); it starts, in its place, when they are freed"
        )
    return None


def plan(queued: list[JobRecord], launched: list[JobRecord], limits_of: Callable[[str | None], Limits]) -> Plan:
    """Decide without side effects: `queued` are the unlaunched jobs oldest first, `launched` hold quota."""
    usage: dict[str | None, _Usage] = defaultdict(_Usage)
    for job in launched:
        usage[job.tenant].jobs += 1
        usage[job.tenant].gpu_workers += gpu_workers(job)
    queues: dict[str | None, deque[JobRecord]] = {}
    for job in queued:  # oldest first, so dict order is "tenant with the oldest waiting job first"
        queues.setdefault(job.tenant, deque()).append(job)
    result = Plan()
    while queues:
        for tenant in list(queues):
            job = queues[tenant].popleft()
            why = _why_not(job, usage[tenant], limits_of(tenant))
            if why is None:
                result.launch.append(job)
                usage[tenant].jobs += 1
                usage[tenant].gpu_workers += gpu_workers(job)
                if not queues[tenant]:
                    del queues[tenant]
                continue
            # The head does not fit: it and every younger job of this tenant wait, in order.
            result.wait.append((job, why))
            result.wait.extend((behind, f"{why} (behind an older job of this tenant)") for behind in queues[tenant])
            del queues[tenant]
    return result


def limits_for(settings: Settings, tenancy: Tenancy) -> Callable[[str | None], Limits]:
    own = {t.name: t for t in tenancy.list_tenants()}

    def limits_of(tenant: str | None) -> Limits:
        t = own.get(tenant) if tenant is not None else None
        return Limits(
            max_concurrent_jobs=t.max_concurrent_jobs
            if t and t.max_concurrent_jobs is not None
            else settings.max_concurrent_jobs,
            max_gpu_workers=t.max_gpu_workers if t and t.max_gpu_workers is not None else settings.max_gpu_workers,
        )

    return limits_of


class Dispatcher:
    """Runs the gate: one at a time per process (POST threads and the reconciler share it)."""

    def __init__(self, store: JobStore, tenancy: Tenancy, launcher: Launcher, settings: Settings) -> None:
        self.store = store
        self.tenancy = tenancy
        self.launcher = launcher
        self.settings = settings
        self._lock = threading.Lock()
        # POSTs wait for the gate on its own thread, and together: each turn admits every job submitted since
        # the last one. Waiting for the lock in FastAPI's thread pool, a burst of POSTs held one of its 40
        # threads each, which the status reads need; one turn per burst also reads each tenant's queue once.
        self._turns = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch")
        self._arrived: list[tuple[JobRecord, Future[bool]]] = []
        self._arrived_lock = threading.Lock()

    async def admit_in_turn(self, job: JobRecord) -> bool:
        """`admit` the job at the gate's next turn: True if it was launched, else it waits and says why."""
        future: Future[bool] = Future()
        with self._arrived_lock:
            self._arrived.append((job, future))
            if len(self._arrived) == 1:  # else a turn is already due and will take this job along
                self._turns.submit(self._next_turn)
        return await asyncio.wrap_future(future)

    def _next_turn(self) -> None:
        with self._arrived_lock:
            arrived, self._arrived = self._arrived, []
        # A POST whose client went away has cancelled its future: its job, stored already, is admitted all the
        # same, but the future takes no result (setting one would raise, and leave the rest of the turn unanswered).
        answering = [(job, future) for job, future in arrived if future.set_running_or_notify_cancel()]
        try:
            launched = self.admit([job for job, _ in arrived])
        except Exception as e:
            for _, future in answering:
                future.set_exception(e)
            return
        for job, future in answering:
            future.set_result(job.id in launched)

    def close(self) -> None:
        self._turns.shutdown(wait=True)

    def run_once(self) -> list[str]:
        """Launch what the quotas allow; returns the ids submitted to Ray."""
        with self._lock:
            queued = self.store.unlaunched_jobs()
            if not queued:
                return []
            return self._carry_out(plan(queued, self.store.launched_jobs(), limits_for(self.settings, self.tenancy)))

    def admit(self, jobs: list[JobRecord]) -> set[str]:
        """The gate for just-submitted jobs: the ids of those launched; the others wait, and say why.

        Quotas are per tenant, so only their tenants' queues matter, and of each queue no more than the head that
        could launch now: with `free` slots, at most `free` jobs launch and the next one waits, so planning the
        oldest `free + 1` decides exactly what a full pass would. Reading the whole queue on every POST made a
        submission cost O(queue), and the load benchmark's status reads waited behind it. The waiting messages
        further back are refreshed by the reconciler's full pass.
        """
        with self._lock:
            limits_of = limits_for(self.settings, self.tenancy)
            decided = Plan()
            for tenant in dict.fromkeys(job.tenant for job in jobs):
                launched = self.store.launched_jobs_of(tenant)
                free = max(0, limits_of(tenant).max_concurrent_jobs - len(launched))
                head = self.store.queue_head_of(tenant, free + 1)
                part = plan(head, launched, limits_of)
                if part.wait:
                    # plan() lists the tenant's first waiting job first, with the reason the others wait behind it.
                    in_head = {queued.id for queued in head}
                    behind = f"{part.wait[0][1]} (behind an older job of this tenant)"
                    part.wait += [(job, behind) for job in jobs if job.tenant == tenant and job.id not in in_head]
                decided.launch += part.launch
                decided.wait += part.wait
            return set(self._carry_out(decided))

    def _carry_out(self, decided: Plan) -> list[str]:
        """Mark the waiting jobs and submit the launched ones in order; returns the ids submitted to Ray."""
        for job, why in decided.wait:
            self._mark_waiting(job, why)
        submitted: list[str] = []
        for job in decided.launch:
            if not self.store.claim_launch(job.id):
                continue  # another API process claimed it
            try:
                # The launch holds the quota slot; the submission claim (a lease) is what makes the Ray
                # submission happen exactly once, also against the reconciler's resubmission of a job whose
                # launcher died between the two.
                submit_if_claimed(self.store, self.launcher, job.id, job.attempt)
            except LauncherUnavailable as e:
                # The job stays queued; the next pass (reconciler) tries again in the same fair order.
                self.store.release_launch(job.id)
                logger.warning("job %s stays queued until Ray answers: %s", job.id, e)
                break
            except Exception:
                self.store.release_launch(job.id)
                logger.exception("submitting job %s failed; it stays queued and will be retried", job.id)
                continue
            submitted.append(job.id)
        return submitted

    def _mark_waiting(self, job: JobRecord, why: str) -> None:
        now = datetime.now(UTC)
        waiting = JobWaiting(
            message=why,
            since=job.created_at,
            waited_s=round((now - job.created_at).total_seconds(), 1),
            resources={"GPU": float(gpu_workers(job))} if gpu_workers(job) else {},
            workers=job.params.num_workers,
            reason="quota",
        )
        if job.waiting and job.waiting.get("message") == why:
            # Nothing new to say: a write per waiting job per pass would make every POST cost O(queue) commits.
            # Readers compute waited_s from `since` (JobPublic.build).
            return
        self.store.set_waiting(job.id, waiting.model_dump(mode="json"))
        # Kind "quota", not "waiting": the job metrics read "waiting" events as waits for cluster nodes.
        self.store.add_event(job.id, "quota", why, {"reason": "quota"})
