"""The reconciler's pass over batch prediction runs: what no driver can report itself.

A run accepted while Ray was down is submitted; a run whose driver died (killed, out of memory, its node lost)
or that Ray no longer knows is marked failed with the reason, and `retry` runs it again, skipping the shards it
wrote. A run whose driver recorded its own outcome first always wins: every change is a conditional update.
"""

from __future__ import annotations

import logging

from core.spec import JobStatus
from core.store.batch import BatchRecord, BatchStore
from service.launcher import Launcher, LauncherUnavailable, RayJobState, ray_submission_id
from service.submission import submit_if_claimed

logger = logging.getLogger(__name__)


class BatchReconciler:
    def __init__(self, batches: BatchStore, launcher: Launcher) -> None:
        self.batches = batches
        self.launcher = launcher

    def run_once(self) -> None:
        """One pass over the queued and running runs; stops at the first sign that Ray is unreachable."""
        for run in self.batches.active():
            try:
                if not self._reconcile(run):
                    return
            except Exception:
                logger.exception("reconcile: batch run %s failed to reconcile", run.id)

    def _reconcile(self, run: BatchRecord) -> bool:
        submission = ray_submission_id(run.id, run.attempt)
        state = self.launcher.state(submission)
        where = run.phase.value if run.phase else "start-up"
        retry = (
            f"Retry it with `trainyard batch-predictions retry {run.id}` (POST /v1/batch-predictions/{run.id}/retry): "
            "shards already written are kept"
        )
        match state:
            case RayJobState.unreachable:
                return False
            case RayJobState.missing if run.status is JobStatus.queued:
                try:
                    if submit_if_claimed(self.batches, self.launcher, run.id, run.attempt):
                        logger.info("reconcile: submitted queued batch run %s that Ray did not know", run.id)
                except LauncherUnavailable:
                    return False
            case RayJobState.missing:
                self._fail(
                    run,
                    "driver_lost",
                    f"the run's driver is no longer known to the Ray cluster (was the cluster restarted?). {retry}",
                )
            case RayJobState.failed:
                self._fail(
                    run,
                    "driver_died",
                    f"the run's driver process died during {where} before it could record an outcome (killed, out "
                    f"of memory, or its node was lost; `ray job logs {submission}` has its last output). {retry}",
                )
            case RayJobState.stopped:
                self._fail(
                    run,
                    "driver_stopped",
                    f"the run's driver was stopped on the Ray cluster during {where} without a cancel through this "
                    f"API. {retry}",
                )
            case RayJobState.succeeded:
                self._fail(run, "driver_exited", f"the run's driver exited without recording a result. {retry}")
            case RayJobState.pending | RayJobState.running:
                pass
        return True

    def _fail(self, run: BatchRecord, code: str, message: str) -> None:
        if self.batches.fail(run.id, code, message):
            logger.warning("reconcile: batch run %s marked failed (%s)", run.id, code)
