"""Per-tenant quotas: a job over quota waits in `queued`, keeps its place, and no tenant starves another."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from service_testkit import Api, ApiFactory, FakeLauncher

from core.spec import JobParams, JobStatus
from core.store import JobRecord
from core.tenancy import Tenancy, Tenant
from service.dispatch import Dispatcher, Limits, plan
from service.reconciler import Reconciler


def _submit(client: Any, **params: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", **params})
    assert response.status_code == 202, response.text
    return dict(response.json())


def _reconcile(api: Api, launcher: FakeLauncher) -> None:
    # One pass as the API's background loop runs it, on the API's own database and settings.
    dispatcher = Dispatcher(api.store, Tenancy(api.store.engine), launcher, api.settings)
    Reconciler(api.store, launcher, dispatcher).run_once()


def test_a_burst_over_quota_waits_in_order_and_does_not_starve_another_tenant(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher, max_concurrent_jobs=2)
    a, b = api.tenant_client("team-a"), api.tenant_client("team-b")
    burst = [_submit(a, name=f"a{i}") for i in range(5)]
    assert launcher.submitted == [burst[0]["id"], burst[1]["id"]]

    waiting = burst[2]
    assert waiting["status"] == "queued"
    assert waiting["waiting"]["reason"] == "quota"
    assert "2 of 2 concurrent jobs" in waiting["waiting"]["message"]
    assert "max_concurrent_jobs" in waiting["waiting"]["message"]
    assert [e["kind"] for e in a.get(f"/v1/jobs/{waiting['id']}/events").json()["events"]] == ["queued", "quota"]

    # team-b's single job goes straight through, however many of team-a's wait.
    lone = _submit(b, name="b0")
    assert launcher.submitted[-1] == lone["id"] and lone["waiting"] is None

    # A slot of team-a's frees: its oldest waiting job, not a younger one, takes it.
    api.store.succeed(burst[0]["id"], None)
    _reconcile(api, launcher)
    assert launcher.submitted[-1] == burst[2]["id"]
    assert a.get(f"/v1/jobs/{burst[2]['id']}").json()["waiting"] is None
    assert a.get(f"/v1/jobs/{burst[3]['id']}").json()["waiting"]["reason"] == "quota"
    _reconcile(api, launcher)  # nothing freed: nothing more launched, nothing submitted twice
    assert len(launcher.submitted) == len(set(launcher.submitted)) == 4


def test_gpu_workers_are_limited_per_tenant_with_its_own_override(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher, max_gpu_workers=8)
    Tenancy(api.store.engine).set_limits(Tenant(name="small-lab", max_gpu_workers=4))
    lab = api.tenant_client("small-lab")
    first = _submit(lab, use_gpu=True, num_workers=3)
    second = _submit(lab, use_gpu=True, num_workers=2)
    cpu_only = _submit(lab, use_gpu=False, num_workers=2)  # behind a waiting job: keeps the order
    assert launcher.submitted == [first["id"]]
    assert "needs 2 GPU workers and 3 of 4 are held" in second["waiting"]["message"]
    assert second["waiting"]["resources"] == {"GPU": 2.0}
    assert cpu_only["waiting"]["reason"] == "quota"

    too_big = lab.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "use_gpu": True, "num_workers": 5})
    assert too_big.status_code == 400
    assert too_big.json()["error"]["field"] == "num_workers"
    assert "limit of 4 (max_gpu_workers)" in too_big.json()["error"]["message"]

    api.store.fail(first["id"], "test", "freed")
    _reconcile(api, launcher)
    assert launcher.submitted == [first["id"], second["id"], cpu_only["id"]]


def test_a_cancelled_waiting_job_is_never_launched(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher, max_concurrent_jobs=1)
    a = api.tenant_client("team-a")
    running, waiting = _submit(a), _submit(a)
    assert a.post(f"/v1/jobs/{waiting['id']}/cancel").json()["status"] == "cancelled"
    api.store.succeed(running["id"], None)
    _reconcile(api, launcher)
    assert launcher.submitted == [running["id"]]


def _job(tenant: str, n: int) -> JobRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return JobRecord(
        id=f"{tenant}-{n}",
        name=None,
        status=JobStatus.queued,
        phase=None,
        progress=0,
        params=JobParams(dataset_uri="s3://bucket/pets"),
        created_at=at,
        updated_at=at,
        tenant=tenant,
    )


def test_launch_order_takes_turns_across_tenants() -> None:
    """Ray runs jobs in submission order: a burst must not push another tenant's job to the back."""
    queued = [_job("a", 0), _job("a", 1), _job("a", 2), _job("a", 3), _job("b", 4), _job("c", 5), _job("b", 6)]
    decided = plan(queued, launched=[], limits_of=lambda _: Limits(max_concurrent_jobs=10, max_gpu_workers=0))
    assert [j.id for j in decided.launch] == ["a-0", "b-4", "c-5", "a-1", "b-6", "a-2", "a-3"]
    assert decided.wait == []


def _statements_of_one_submission(client: Any) -> int:
    """SQL statements run while one job is submitted (the API runs in this process, so every engine counts)."""
    count = 0

    def on_execute(*_: Any) -> None:
        nonlocal count
        count += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", on_execute)
    try:
        _submit(client)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", on_execute)
    return count


def test_a_submission_costs_the_same_however_long_the_queue_behind_the_quota(make_api: ApiFactory) -> None:
    # A gate that re-planned and re-wrote every waiting job on each POST would make a POST's cost grow with the
    # queue, and the status reads of many clients would queue behind it (benchmarks/README.md, "API under load").
    api = make_api(launcher=FakeLauncher(), max_concurrent_jobs=1)
    client = api.tenant_client("team-a")
    for _ in range(3):
        _submit(client)
    short_queue = _statements_of_one_submission(client)
    for _ in range(30):
        _submit(client)
    assert _statements_of_one_submission(client) == short_queue


def test_a_waiting_jobs_waited_time_grows_between_reads_without_writes(make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher(), max_concurrent_jobs=1)
    client = api.tenant_client("team-a")
    _submit(client)
    waiting = _submit(client)
    first = waiting["waiting"]["waited_s"]
    time.sleep(1.2)
    again = client.get(f"/v1/jobs/{waiting['id']}").json()["waiting"]
    assert again["waited_s"] >= first + 1.0
    assert again["message"] == waiting["waiting"]["message"]


def test_a_burst_submitted_at_once_launches_exactly_the_quota_oldest_first(make_api: ApiFactory) -> None:
    # Concurrent POSTs meet at the gate together and are admitted in one turn (service.dispatch): still no more
    # than the quota launches, the oldest first, none twice, and every other job says why it waits.
    from concurrent.futures import ThreadPoolExecutor

    launcher = FakeLauncher()
    api = make_api(launcher=launcher, max_concurrent_jobs=3)
    client = api.tenant_client("team-a")
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: _submit(client, name=f"burst{i}"), range(24)))
    oldest_first = sorted(answers, key=lambda job: (job["created_at"], job["id"]))
    assert launcher.submitted == [job["id"] for job in oldest_first[:3]]
    for job in oldest_first[3:]:
        assert job["status"] == "queued"
        assert job["waiting"]["reason"] == "quota", job
        assert "3 of 3 concurrent jobs" in job["waiting"]["message"]


def test_a_post_that_goes_away_at_the_gate_leaves_the_others_of_its_turn_answered(make_api: ApiFactory) -> None:
    # A client that disconnects cancels its POST's wait for the gate; the other POSTs admitted in the same turn
    # must still get their answer (a cancelled future that was given a result raised, and they waited for ever).
    import asyncio

    launcher = FakeLauncher()
    api = make_api(launcher=launcher, max_concurrent_jobs=5)
    dispatcher = Dispatcher(api.store, Tenancy(api.store.engine), launcher, api.settings)
    first, gone, kept = (
        api.store.create_job(JobParams(dataset_uri="s3://bucket/pets"), tenant="team-a")[0] for _ in range(3)
    )

    async def turns() -> bool:
        with dispatcher._lock:  # the gate is busy: `first` takes a turn and waits; `gone` and `kept` queue up
            waits = [asyncio.create_task(dispatcher.admit_in_turn(job)) for job in (first, gone, kept)]
            await asyncio.sleep(0.2)
            waits[1].cancel()
            await asyncio.sleep(0.1)
        return await asyncio.wait_for(waits[2], timeout=10)

    try:
        assert asyncio.run(turns()) in (True, False)  # answered (the first turn launched it with the head)
        assert sorted(launcher.submitted) == sorted([first.id, gone.id, kept.id])  # the one that went away too
    finally:
        dispatcher.close()
