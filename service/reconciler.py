"""Brings the store (the source of truth) back in line with what Ray knows, at start-up and periodically.

It catches the cases no driver can report itself: a job accepted while Ray was down (or the API crashed
between insert and submit), a driver killed with its node, a cluster restart. Every change goes through the
store's conditional updates, so a driver that recorded its own outcome first always wins.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from core.settings import get_settings
from core.spec import JobStatus
from core.store import JobRecord, JobStore
from core.store.batch import BatchStore
from core.tenancy import Tenancy
from service.batch_reconcile import BatchReconciler
from service.dispatch import Dispatcher
from service.launcher import Launcher, LauncherUnavailable, RayJobState, ray_submission_id
from service.submission import submit_if_claimed

logger = logging.getLogger(__name__)


class ClusterPass(Protocol):
    def run_once(self) -> None: ...


class Reconciler:
    """Holds what one pass must remember for the next: whether Ray was already reported unreachable."""

    def __init__(
        self,
        store: JobStore,
        launcher: Launcher,
        dispatcher: Dispatcher | None = None,
        cluster_passes: Sequence[ClusterPass] = (),
    ) -> None:
        self.store = store
        self.launcher = launcher
        # Queued jobs not yet handed to Ray are the quota gate's (service.dispatch) to launch, in fair order.
        self.dispatcher = dispatcher or Dispatcher(store, Tenancy(store.engine), launcher, get_settings())
        # What else the cluster must match in the store: batch prediction runs (service.batch_reconcile), the
        # Serve application for the listed models (service.serve_restore), the scale-up overhead of ended jobs
        # (service.cost_settlement).
        self.cluster_passes = [BatchReconciler(BatchStore(store), launcher), *cluster_passes]
        self._ray_down = False

    def run_once(self) -> None:
        """One pass over the queued and running jobs. Never raises: a bad job must not stop the others."""
        if self._jobs_pass():
            try:
                self.dispatcher.run_once()
            except Exception:
                logger.exception("reconcile: launching queued jobs failed")
        for cluster_pass in self.cluster_passes:
            try:
                cluster_pass.run_once()
            except Exception:
                logger.exception("reconcile: %s failed", type(cluster_pass).__name__)

    def _jobs_pass(self) -> bool:
        """The active jobs against Ray; False when the store or Ray could not be read (nothing to launch now)."""
        try:
            jobs = self.store.active_jobs()
        except Exception:
            logger.exception("reconcile: could not read active jobs from the store")
            return False
        for job in jobs:
            try:
                if not self._reconcile(job):
                    return False  # Ray is unreachable: asking about the other jobs would only repeat that
            except Exception:
                logger.exception("reconcile: job %s failed to reconcile", job.id)
        return True

    def _reconcile(self, job: JobRecord) -> bool:
        """Returns False when Ray could not be reached."""
        submission = ray_submission_id(job.id, job.attempt)
        state = self.launcher.state(submission)
        if state is RayJobState.unreachable:
            self._mark_ray_down()
            return False
        self._mark_ray_up()
        where = job.phase.value if job.phase else "start-up"
        unlaunched = job.status is JobStatus.queued and job.launched_at is None
        match state:
            case RayJobState.missing if unlaunched:
                pass  # waiting for its turn: the dispatcher launches it
            case RayJobState.pending | RayJobState.running if unlaunched:
                # Submitted before launches were recorded (an older release): it holds its quota slot.
                self.store.claim_launch(job.id)
            case RayJobState.missing if job.status is JobStatus.queued:
                try:
                    submitted = submit_if_claimed(self.store, self.launcher, job.id, job.attempt)
                except LauncherUnavailable:
                    self._mark_ray_down()
                    return False
                if submitted:  # else another API process (or this one's POST) holds the claim
                    logger.info("reconcile: submitted queued job %s that Ray did not know", job.id)
            case RayJobState.missing:
                self._fail(
                    job,
                    "driver_lost",
                    "the job's driver is no longer known to the Ray cluster (was the cluster restarted?); "
                    "resubmit the job",
                )
            case RayJobState.failed:
                # The driver records every outcome itself, even its own errors; Ray calling it failed means the
                # process died (SIGKILL, out of memory, its node lost) before it could.
                self._fail(
                    job,
                    "driver_died",
                    f"the job's driver process died during {where} before it could record an outcome (killed, "
                    f"out of memory, or its node was lost; `ray job logs {submission}` has its last output). Retry "
                    f"it with `trainyard retry {job.id}` (POST /v1/jobs/{job.id}/retry): the new attempt resumes "
                    "from the job's last checkpoint",
                )
            case RayJobState.stopped:
                # A cancel stops the driver too, but a cancelled job is terminal and never listed as active;
                # the store's conditional update covers a cancel that lands during this pass.
                self._fail(
                    job,
                    "driver_stopped",
                    f"the job's driver was stopped on the Ray cluster during {where} without a cancel through "
                    "this API; resubmit the job",
                )
            case RayJobState.succeeded:
                self._fail(job, "driver_exited", "the driver exited without reporting a result")
            case RayJobState.pending | RayJobState.running:
                pass
        return True

    def _fail(self, job: JobRecord, code: str, message: str) -> None:
        if self.store.fail(job.id, code, message):
            logger.warning("reconcile: job %s marked failed (%s)", job.id, code)

    def _mark_ray_down(self) -> None:
        # Once per outage, not once per pass: the loop runs every few seconds.
        if not self._ray_down:
            logger.warning("reconcile: Ray is unreachable; jobs are left as they are until it answers")
            self._ray_down = True

    def _mark_ray_up(self) -> None:
        if self._ray_down:
            logger.info("reconcile: Ray answers again")
            self._ray_down = False


def reconcile_once(store: JobStore, launcher: Launcher) -> None:
    """One stateless pass (start-up, tests); the background loop keeps one `Reconciler` instead."""
    Reconciler(store, launcher).run_once()
