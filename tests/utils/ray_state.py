"""What a test needs to know about a stack's Ray cluster: its actors' processes and its free resources."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import psutil

from infra.local.stack import LOOPBACK, LocalStack


def alive_actors(stack: LocalStack, class_name: str) -> list[dict[str, Any]]:
    """ALIVE actors of `class_name` (e.g. "RayTrainWorker", "ServeReplica:trainyard:Classifier"), with their pid,
    from Ray's state API over the dashboard."""
    token = stack.config.ray_token_file.read_text().strip()
    response = httpx.get(
        f"{stack.config.dashboard_url}/api/v0/actors",
        params={
            "detail": "1",
            "limit": "1000",
            "filter_keys": ["class_name", "state"],
            "filter_predicates": ["=", "="],
            "filter_values": [class_name, "ALIVE"],
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return [a for a in response.json()["data"]["result"]["result"] if a.get("pid")]


def actor_pids(stack: LocalStack, class_name: str) -> list[int]:
    """Live processes of `class_name`'s actors in this stack's cluster, from the process table.

    Instant, where the state API answers only once the actor's creation has reached the dashboard (seconds on a
    busy machine: longer than a short epoch). Ray titles an actor's process `ray::<class>` (`.<method>` while it
    runs one), and every process of a stack carries the stack's TRAINYARD_HOME: another stack's actors on this
    machine are not this one's.
    """
    home = str(stack.config.home)
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        title = (proc.info["cmdline"] or [""])[0]
        if title.split(".")[0] == f"ray::{class_name}":
            try:
                if proc.environ().get("TRAINYARD_HOME") == home:
                    pids.append(proc.pid)
            except psutil.Error:  # ended (or not ours to read) while we looked
                continue
    return pids


_RESOURCES_FREED = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    total, free = ray.cluster_resources(), ray.available_resources()
    held = {k: total[k] - free.get(k, 0.0) for k in ("CPU", "GPU") if total.get(k, 0.0) - free.get(k, 0.0) > 1e-6}
    if not held or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({"total": total, "held": held}))
"""


def held_resources(stack: LocalStack, timeout: float = 60) -> dict[str, float]:
    """CPUs/GPUs still held on the cluster once `timeout` passes or nothing is held (empty: all free).

    Asked from a fresh driver process: this test process must not join the cluster (its own `ray.init` would
    hold state between tests and outlive the stack).
    """
    result = subprocess.run(
        [sys.executable, "-c", _RESOURCES_FREED, f"{LOOPBACK}:{stack.config.gcs_port}", str(timeout)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    held: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])["held"]
    return held


def ray_job_status(stack: LocalStack, job_id: str) -> str:
    """The Ray Job's status (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED); its submission id is the job id."""
    token = stack.config.ray_token_file.read_text().strip()
    response = httpx.get(
        f"{stack.config.dashboard_url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return str(response.json()["status"])


def ray_jobs_for(stack: LocalStack, job_id: str) -> list[dict[str, Any]]:
    """Every Ray Job submitted for this Trainyard job (there must be exactly one)."""
    token = stack.config.ray_token_file.read_text().strip()
    response = httpx.get(
        f"{stack.config.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return [j for j in response.json() if (j.get("metadata") or {}).get("trainyard_job_id") == job_id]


def serve_replica_nodes(stack: LocalStack) -> list[str]:
    """The node ids of the Trainyard Serve application's RUNNING replicas, from the dashboard's Serve API."""
    token = stack.config.ray_token_file.read_text().strip()
    response = httpx.get(
        f"{stack.config.dashboard_url}/api/serve/applications/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    app = response.json()["applications"]["trainyard"]
    return [r["node_id"] for d in app["deployments"].values() for r in d["replicas"] if r["state"] == "RUNNING"]
