"""The reconciler settles an ended job's scale-up overhead once the nodes it started are released."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from core.cost import WorkUsage, job_cost
from core.overhead import NodeLife
from core.settings import NodeType, Settings
from core.spec import JobParams
from core.store import JobStore
from service.cost_settlement import CostSettler
from tests.utils.api_server import FakeCluster
from tests.utils.schema import migrated

TYPES = {"cpu": NodeType(resources={"CPU": 2}, usd_per_hour=3.6, max_workers=2)}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrated(url)
    return JobStore.from_url(url)


def finished_job(store: JobStore, waited_from: float, work_from: float, work_s: float) -> str:
    """A job that waited for a node from `waited_from` and then ran 2 CPUs of work on node n1."""
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/pets"))
    since = datetime.fromtimestamp(waited_from, UTC).isoformat()
    store.add_event(job.id, "waiting", "waiting for 2 CPU worker(s)", {"since": since})
    store.add_event(job.id, "resources", "resources arrived")
    usage = [WorkUsage(work="training", node_id="n1", node_type="cpu", cpus=2, gpus=0, seconds=work_s,
                       started_at=work_from, rank=0)]  # fmt: skip
    store.set_result(job.id, "cost", job_cost(usage, TYPES, date(2026, 11, 1)).model_dump(mode="json"))
    store.succeed(job.id, None)
    return job.id


def test_the_overhead_is_pending_while_the_node_runs_then_settled_with_an_event(store: JobStore) -> None:
    now = time.time()
    # The event's own timestamp closes the wait; the node joined 20 s after the job began waiting.
    job_id = finished_job(store, waited_from=now - 120, work_from=now - 99, work_s=60)
    cluster = FakeCluster(node_lives=[NodeLife("n1", is_head=False, started_at=now - 100, ended_at=None)])
    settler = CostSettler(store, cluster, Settings(node_types=TYPES))
    settler.run_once()
    cost = store.get_job(job_id).cost  # type: ignore[union-attr]
    assert cost is not None and cost["overhead"]["settled"] is False
    assert cost["overhead"]["nodes"][0]["boot_seconds"] == pytest.approx(20, abs=0.01)
    assert not [e for e in store.events(job_id) if e.kind == "overhead"]

    cluster.node_lives = [NodeLife("n1", is_head=False, started_at=now - 100, ended_at=now - 9)]  # idle 30 s
    settler.run_once()
    cost = store.get_job(job_id).cost  # type: ignore[union-attr]
    assert cost is not None
    overhead = cost["overhead"]
    assert overhead["settled"] and overhead["idle_seconds"] == pytest.approx(30, abs=0.01)
    assert overhead["estimated_usd"] == pytest.approx(0.05, abs=1e-5)  # 50 s of a $3.60/h node
    assert cost["total_usd"] == pytest.approx(cost["estimated_usd"] + 0.05, abs=1e-5)
    assert cost["estimated_usd"] == pytest.approx(0.06, abs=1e-5)  # the work: 60 s of the whole node
    [event] = [e for e in store.events(job_id) if e.kind == "overhead"]
    assert "boot 20 s + idle 30 s at $3.6/h" in event.message
    settler.run_once()  # settled: never written again
    assert len([e for e in store.events(job_id) if e.kind == "overhead"]) == 1


def test_ray_down_settles_nothing(store: JobStore) -> None:
    now = time.time()
    job_id = finished_job(store, waited_from=now - 120, work_from=now - 99, work_s=60)
    cluster = FakeCluster()
    cluster.launcher.reachable = False
    CostSettler(store, cluster, Settings(node_types=TYPES)).run_once()
    assert store.get_job(job_id).cost["overhead"] is None  # type: ignore[index,union-attr]
