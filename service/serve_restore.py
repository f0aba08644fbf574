"""Serve comes back by itself: when the store lists models and the cluster runs no Serve application for them (a
head restart, a rebuilt RayCluster), the reconciler starts `python -m serving.restore` on the cluster as a Ray
job, the code path `trainyard up` runs. Models then load on their first request, as after any scale-up.

Every API replica runs this; their restore jobs are named by the time window they start in, so replicas that see
the outage in the same window submit one job (Ray refuses a second under the same id), and two that do not only
run an idempotent restore twice.
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum

from core.store import JobStore
from service.launcher import Launcher, LauncherUnavailable, RayJobState
from service.ray_cluster import SERVE_RESTORE_ENTRYPOINT, ClusterView, ServeState

logger = logging.getLogger(__name__)

# A restore that ended without bringing Serve back (the model server's node group cannot start, a broken
# artifact store) is tried again after this long, not on every reconcile pass.
RETRY_AFTER_S = 60.0
# Restore jobs submitted in the same window share an id (see the module's docstring).
WINDOW_S = 30


class ServeHealth(StrEnum):
    """What /readyz says of Serve."""

    ok = "ok"
    idle = "idle"  # no model is listed: nothing to serve, nothing degraded
    deploying = "deploying"
    restoring = "restoring"  # gone, and a restore is on its way
    down = "down"
    unreachable = "unreachable"


class ServeRestorer:
    def __init__(self, store: JobStore, cluster: ClusterView, launcher: Launcher) -> None:
        self.store = store
        self.cluster = cluster
        self.launcher = launcher
        self.restores = 0  # restore jobs this process submitted (exported on /metrics)
        self._submission: str | None = None
        self._submitted_at = 0.0

    def health(self) -> ServeHealth:
        """Serve as a client would find it now (readiness; no side effects)."""
        if not self.store.has_models():
            return ServeHealth.idle
        state = self.cluster.serve_state()
        if state is ServeState.running:
            return ServeHealth.ok
        if state is ServeState.deploying:
            return ServeHealth.deploying
        if state is ServeState.unreachable:
            return ServeHealth.unreachable
        return ServeHealth.restoring if self._restore_in_flight() else ServeHealth.down

    def run_once(self) -> None:
        """Start a restore when listed models have no Serve application and none is on its way."""
        if not self.store.has_models():
            return
        state = self.cluster.serve_state()
        if state in (ServeState.running, ServeState.deploying, ServeState.unreachable):
            if state is not ServeState.unreachable:
                self._submission = None
            return
        if self._restore_in_flight() or time.monotonic() - self._submitted_at < self._backoff():
            return
        submission = f"trainyard-serve-restore-{int(time.time()) // WINDOW_S}"
        try:
            self.cluster.submit_job(SERVE_RESTORE_ENTRYPOINT, submission)
        except LauncherUnavailable as e:
            logger.warning("serve: the Serve application is %s; restoring it could not start: %s", state.value, e)
            return
        self._submission, self._submitted_at = submission, time.monotonic()
        self.restores += 1
        logger.warning(
            "serve: the store lists models but the cluster's Serve application is %s; restoring it (Ray job %s)",
            state.value,
            submission,
        )

    def _restore_in_flight(self) -> bool:
        if self._submission is None:
            return False
        return self.launcher.state(self._submission) in (RayJobState.pending, RayJobState.running)

    def _backoff(self) -> float:
        # Only after a restore of ours has run; the first one goes at once.
        return RETRY_AFTER_S if self._submission is not None else 0.0
