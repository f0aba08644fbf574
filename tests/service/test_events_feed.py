"""GET /v1/events: every job's events of the caller's tenant in one list or one live stream; the name filter."""

from __future__ import annotations

import json

from service_testkit import Api

from core.spec import Phase


def test_the_feed_lists_only_the_callers_tenants_events_in_order(api: Api) -> None:
    a, b = api.tenant_client("team-a"), api.tenant_client("team-b")
    first = a.post("/v1/jobs", json={"dataset_uri": "s3://bucket/a"}).json()["id"]
    other = b.post("/v1/jobs", json={"dataset_uri": "s3://bucket/b"}).json()["id"]
    api.store.set_phase(first, Phase.fetching, 0.01)
    feed = a.get("/v1/events").json()
    assert [(e["job_id"], e["kind"]) for e in feed["events"]] == [(first, "queued"), (first, "phase")]
    assert feed["last_event_id"] == feed["events"][-1]["id"]
    assert a.get("/v1/events", params={"after": feed["last_event_id"]}).json()["events"] == []
    assert {e["job_id"] for e in b.get("/v1/events").json()["events"]} == {other}
    assert {e["job_id"] for e in api.http.get("/v1/events").json()["events"]} == {first, other}  # an admin's view


def test_the_stream_starts_now_and_pushes_each_new_event_with_its_job(api: Api) -> None:
    a, b = api.tenant_client("team-a"), api.tenant_client("team-b")
    old = a.post("/v1/jobs", json={"dataset_uri": "s3://bucket/old"}).json()["id"]
    received: list[dict[str, object]] = []
    with a.stream("GET", "/v1/events", params={"stream": "true"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        # Written after the stream opened: another tenant's job first, which must never arrive here.
        b.post("/v1/jobs", json={"dataset_uri": "s3://bucket/b"})
        new = a.post("/v1/jobs", json={"dataset_uri": "s3://bucket/new"}).json()["id"]
        api.store.set_phase(new, Phase.fetching, 0.01)
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line.removeprefix("data: ")))
            if len(received) == 2:
                break
    assert [(e["job_id"], e["kind"]) for e in received] == [(new, "queued"), (new, "phase")]
    assert old not in {e["job_id"] for e in received}  # the stream began after its events


def test_jobs_filter_by_name_ignoring_case_and_combine_with_status(api: Api) -> None:
    ids = {name: api.create_job(name=name)["id"] for name in ("Pets-v1", "pets-v2", "birds", "100%_pets")}
    api.store.cancel(ids["pets-v2"])
    names = lambda **q: [j["name"] for j in api.http.get("/v1/jobs", params=q).json()["jobs"]]  # noqa: E731
    assert names(name="PETS") == ["100%_pets", "pets-v2", "Pets-v1"]
    assert names(name="pets", status="cancelled") == ["pets-v2"]
    assert names(name="%_") == ["100%_pets"]  # LIKE's wildcards are matched as themselves
