"""Say on the job when its Ray work waits for resources (an autoscaling cluster bringing nodes up).

Everything heavy a job runs reserves its resources through a placement group: Ray Train's worker group
creates one, and the driver's feature and evaluation work runs in one of its own (`Pipeline._run_work`).
A placement group that stays PENDING is work waiting for nodes. A thread in the driver looks at this
job's pending placement groups every few seconds and writes what they wait for, and since when, on the
job (`waiting`); it clears that once nothing waits.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from core.spec import JobWaiting
from core.store import JobStore

log = logging.getLogger("trainyard.waiting")

POLL_S = 2.0


def describe(bundles: list[dict[str, float]], waited_s: float, autoscaling: bool = True) -> str:
    gpus = [b for b in bundles if b.get("GPU", 0) > 0]
    what = f"{len(gpus)} GPU worker(s)" if gpus else f"{len(bundles)} CPU worker(s)"
    # A fixed cluster never grows: there the wait is for other jobs to free what they hold.
    why = "the cluster is scaling up" if autoscaling else "other work holds the cluster's resources"
    return f"waiting for {what}; {why} (waited {waited_s:.0f} s)"


def pending_bundles(job_id_hex: str) -> list[dict[str, float]]:
    """The unplaced bundles of this Ray job's pending placement groups."""
    from ray.util.state import list_placement_groups

    groups = list_placement_groups(
        filters=[("creator_job_id", "=", job_id_hex), ("state", "=", "PENDING")],
        detail=True,
        raise_on_missing_output=False,
    )
    bundles: list[dict[str, float]] = []
    for group in groups:
        for bundle in _field(group, "bundles") or []:
            if not _field(bundle, "node_id"):
                resources = _field(bundle, "unit_resources") or {}
                bundles.append({k: float(v) for k, v in resources.items()})
    return bundles


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class WaitWatcher:
    """Runs beside the driver's stages; `stop()` clears the job's `waiting`."""

    def __init__(
        self, store: JobStore, job_id: str, ray_job_id_hex: str, autoscaling: bool, poll_s: float = POLL_S
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.ray_job_id_hex = ray_job_id_hex
        self.autoscaling = autoscaling
        self.poll_s = poll_s
        self._since: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainyard-wait-watcher", daemon=True)

    def start(self) -> WaitWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._since is not None:
            self.store.set_waiting(self.job_id, None)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # the state API can be briefly unavailable; the next poll tries again
                log.warning("could not read pending placement groups", exc_info=True)

    def check(self) -> None:
        bundles = pending_bundles(self.ray_job_id_hex)
        now = datetime.now(UTC)
        if not bundles:
            if self._since is not None:
                waited = (now - self._since).total_seconds()
                self.store.add_event(self.job_id, "resources", f"resources arrived after {waited:.0f} s")
                self.store.set_waiting(self.job_id, None)
                self._since = None
            return
        first = self._since is None
        self._since = self._since or now - timedelta(seconds=self.poll_s)
        waited = (now - self._since).total_seconds()
        total: dict[str, float] = {}
        for bundle in bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + value
        waiting = JobWaiting(
            message=describe(bundles, waited, self.autoscaling),
            since=self._since,
            waited_s=round(waited, 1),
            resources=total,
            workers=len(bundles),
        )
        self.store.set_waiting(self.job_id, waiting.model_dump(mode="json"))
        if first:
            self.store.add_event(self.job_id, "waiting", waiting.message, waiting.model_dump(mode="json"))
