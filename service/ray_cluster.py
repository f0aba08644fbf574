"""What the API reads of the Ray cluster beyond its jobs: the Serve application's state and the nodes' lives,
and how it starts the Serve restore. All through the Ray dashboard's HTTP API (the same address and token as the
Jobs API the launcher uses), so the API never joins the cluster as a Ray driver.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, Protocol

import httpx

from core.overhead import NodeLife
from service.launcher import RAY_REQUEST_TIMEOUT_S, LauncherUnavailable
from serving.deploy import APP_NAME

logger = logging.getLogger(__name__)

# `trainyard up` runs the same module: the Serve application comes back through one code path.
SERVE_RESTORE_ENTRYPOINT = "python -m serving.restore"


class ServeState(StrEnum):
    running = "running"
    deploying = "deploying"
    absent = "absent"  # Ray answers and runs no Trainyard application (a rebuilt or restarted cluster)
    failed = "failed"  # the application exists but cannot serve (DEPLOY_FAILED, UNHEALTHY)
    unreachable = "unreachable"


_SERVE_STATES = {
    "RUNNING": ServeState.running,
    "DEPLOYING": ServeState.deploying,
    "DEPLOY_FAILED": ServeState.failed,
    "UNHEALTHY": ServeState.failed,
    "DELETING": ServeState.absent,
    "NOT_STARTED": ServeState.absent,
}


class ClusterView(Protocol):
    """Every method blocks and never raises but `submit_job` (LauncherUnavailable)."""

    def serve_state(self) -> ServeState: ...

    def replica_nodes(self) -> list[str] | None:
        """The node ids of the Trainyard application's running replicas; None when Ray does not answer."""

    def nodes(self) -> list[NodeLife] | None:
        """Every node Ray knows, dead ones included; None when Ray does not answer."""

    def submit_job(self, entrypoint: str, submission_id: str) -> None:
        """Start a Ray job; one already submitted under this id is not an error."""


class RayDashboard:
    """A `ClusterView` over the dashboard (e.g. http://127.0.0.1:8265), with Ray's token when auth is on."""

    def __init__(self, address: str, timeout_s: float = RAY_REQUEST_TIMEOUT_S) -> None:
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        self._headers: dict[str, str] | None = None

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any | None:
        try:
            response = httpx.get(self.address + path, params=params, headers=self._auth(), timeout=self.timeout_s)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            logger.warning("Ray dashboard answered %s to %s", response.status_code, path)
            return None
        return response.json()

    def _auth(self) -> dict[str, str]:
        if self._headers is None:
            # Imported here: importing Ray costs a second and the API may never need it.
            from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

            self._headers = dict(get_auth_headers_if_auth_enabled({}))
        return self._headers

    def _application(self) -> dict[str, Any] | bool | None:
        """The application's details, False when absent, None when Ray does not answer."""
        details = self._get("/api/serve/applications/")
        if details is None:
            return None
        app = (details.get("applications") or {}).get(APP_NAME)
        return app if isinstance(app, dict) else False

    def serve_state(self) -> ServeState:
        app = self._application()
        if app is None:
            return ServeState.unreachable
        if app is False:
            return ServeState.absent
        assert isinstance(app, dict)
        return _SERVE_STATES.get(str(app.get("status")), ServeState.failed)

    def replica_nodes(self) -> list[str] | None:
        app = self._application()
        if app is None:
            return None
        if not isinstance(app, dict):
            return []
        return [
            str(replica["node_id"])
            for deployment in (app.get("deployments") or {}).values()
            for replica in deployment.get("replicas") or []
            if replica.get("state") == "RUNNING" and replica.get("node_id")
        ]

    def nodes(self) -> list[NodeLife] | None:
        body = self._get("/api/v0/nodes", {"detail": "1", "limit": "10000"})
        if body is None:
            return None
        rows = body.get("data", {}).get("result", {}).get("result", [])
        return [
            NodeLife(
                node_id=row["node_id"],
                is_head=bool(row.get("is_head_node")),
                started_at=(row.get("start_time_ms") or 0) / 1000,
                ended_at=row["end_time_ms"] / 1000 if row.get("state") == "DEAD" and row.get("end_time_ms") else None,
            )
            for row in rows
        ]

    def submit_job(self, entrypoint: str, submission_id: str) -> None:
        body = {"entrypoint": entrypoint, "submission_id": submission_id, "entrypoint_num_cpus": 0}
        try:
            response = httpx.post(f"{self.address}/api/jobs/", json=body, headers=self._auth(), timeout=self.timeout_s)
        except httpx.HTTPError as e:
            raise LauncherUnavailable(f"submitting {submission_id} to Ray failed: {e}") from e
        if response.status_code != 200 and "already exists" not in response.text:
            raise LauncherUnavailable(f"Ray refused {submission_id}: {response.status_code} {response.text[:200]}")
