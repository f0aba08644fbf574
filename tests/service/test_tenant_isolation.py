"""Route by route: without a key, with a revoked key, or with another tenant's key, nothing of a tenant shows.

The routes are read from the app itself, so a new /v1 route fails `test_every_v1_route_is_covered` until it
is added to ROUTES with a request that proves its tenant check.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from service_testkit import Api, ApiFactory, FakeLauncher, serve
from test_models_api import IMAGE, FakeServe

from core.store import ModelRecord
from core.tenancy import Tenancy
from service.launcher import RayJobState

SECRET_NAME = "team-a-secret-project"  # appears in team-a's job, and must appear in nobody else's answer
A_MODEL = "model-team-a-1"
A_MODEL_NAME = "team-a-model"  # the model's name (versions and aliases resolve names in the caller's tenant)


@dataclass
class Call:
    """How to call a route for the isolation checks; `kind` says what another tenant must see."""

    kind: Literal["item", "collection", "create", "self"]
    params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


PREDICT = Call("item", params={"top_k": "1"}, content=IMAGE, headers={"content-type": "image/png"})
BOUNDARY = "isolation"
PREDICT_BATCH = Call(
    "item",
    content=(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()
    + IMAGE
    + f"\r\n--{BOUNDARY}--\r\n".encode(),
    headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
)
ROUTES: dict[tuple[str, str], list[Call]] = {
    ("GET", "/v1/me"): [Call("self")],  # the caller's own tenant, uploads and allow-lists only
    ("POST", "/v1/jobs"): [Call("create", body={"dataset_uri": "s3://bucket/b-data"})],
    ("GET", "/v1/jobs"): [Call("collection"), Call("collection", params={"status": "failed"})],
    ("GET", "/v1/jobs/{job_id}"): [Call("item")],
    ("POST", "/v1/jobs/{job_id}/cancel"): [Call("item")],
    # The plain log and the live (SSE) stream; team-a's job has ended, so its own stream ends too.
    ("GET", "/v1/jobs/{job_id}/events"): [Call("item"), Call("item", params={"stream": "true"})],
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): [Call("item")],
    ("GET", "/v1/jobs/{job_id}/report"): [Call("item")],
    ("GET", "/v1/models"): [Call("collection")],
    ("GET", "/v1/models/{model_id}"): [Call("item")],
    ("POST", "/v1/models/{model_id}/predict"): [PREDICT],
    ("POST", "/v1/models/{model_id}/predict:batch"): [PREDICT_BATCH],
    ("POST", "/v1/models/{name}/aliases/{alias}"): [Call("item", body={"model_id": A_MODEL})],
    ("POST", "/v1/jobs/{job_id}/retry"): [Call("item")],
    ("POST", "/v1/jobs/{job_id}/revisions"): [Call("item", body={"marks": [{"path": "a.png", "action": "exclude"}]})],
    ("GET", "/v1/jobs/{job_id}/revisions"): [Call("item")],
    ("GET", "/v1/events"): [Call("collection"), Call("collection", params={"after": "0"})],
    ("DELETE", "/v1/models/{model_id}"): [Call("item")],
}


@dataclass
class World:
    api: Api
    app: FastAPI
    serve: FakeServe
    job_id: str
    a: httpx.Client  # team-a's live key
    revoked: httpx.Client  # a revoked key of team-a
    b: httpx.Client  # team-b's key
    anonymous: httpx.Client


@pytest.fixture
def world(s3: Any, make_api: ApiFactory) -> Iterator[World]:
    apps: list[FastAPI] = []
    fake_serve = FakeServe()
    with serve(fake_serve.app) as serve_url:
        launcher = FakeLauncher()
        api = make_api(launcher=launcher, app_hook=apps.append, serve_url=serve_url)
        a = api.tenant_client("team-a")
        created = a.post("/v1/jobs", json={"dataset_uri": "s3://bucket/a-private", "name": SECRET_NAME})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        # Everything a finished job has: an epoch, events, an artifact in S3, a deployed model.
        api.store.add_epoch(job_id, {"epoch": 1, "train_loss": 0.5, "valid_loss": 0.4, "accuracy": 0.9})
        api.store.add_event(job_id, "note", f"{SECRET_NAME} event")
        s3.put_object(Bucket="trainyard-artifacts", Key=f"jobs/{job_id}/lr_sweep.png", Body=b"\x89PNG a's plot")
        s3.put_object(Bucket="trainyard-artifacts", Key=f"jobs/{job_id}/model.pt", Body=b"weights")
        s3.put_object(Bucket="trainyard-artifacts", Key=f"models/{A_MODEL}.json", Body=b"{}")
        api.store.set_result(
            job_id, "artifacts", {"lr_sweep.png": f"s3://trainyard-artifacts/jobs/{job_id}/lr_sweep.png"}
        )
        api.store.add_model(
            ModelRecord(
                id=A_MODEL,
                job_id=job_id,
                artifact_uri=f"s3://trainyard-artifacts/jobs/{job_id}/model.pt",
                arch="efficientnet_lite0",
                classes=["cat", "dog"],
                created_at=datetime.now(UTC),
                name=A_MODEL_NAME,
            )
        )
        api.store.fail(job_id, "test", "ended so that its event stream ends")
        launcher.states[job_id] = RayJobState.failed  # its driver has ended too: the owner may retry it
        revoked_key = api.new_key("team-a")
        tenancy = Tenancy(api.store.engine)
        [record] = [k for k in tenancy.list_keys("team-a") if k == tenancy.authenticate(revoked_key)]
        assert tenancy.revoke_key(record.id)
        yield World(
            api=api,
            app=apps[0],
            serve=fake_serve,
            job_id=job_id,
            a=a,
            revoked=api.client(revoked_key),
            b=api.tenant_client("team-b"),
            anonymous=api.client(None),
        )


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 includes routers lazily
            yield from _api_routes(route.original_router.routes)


def _v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    # DELETE last: the owner's DELETE undeploys team-a's model, which the other routes still need.
    found = sorted(
        (
            (method, route.path)
            for route in _api_routes(app.routes)
            if route.path.startswith("/v1")
            for method in route.methods or ()
        ),
        key=lambda r: (r[0] == "DELETE", r),
    )
    assert ("GET", "/v1/jobs/{job_id}") in found, f"the route walk found too little: {found}"
    return found


def _request(client: httpx.Client, world: World, method: str, path: str, call: Call) -> httpx.Response:
    name = A_MODEL_NAME if "/aliases/" in path else "lr_sweep.png"  # a model's name, or an artifact's
    url = path.format(job_id=world.job_id, model_id=A_MODEL, name=name, alias="production")
    return client.request(
        method, url, params=call.params, json=call.body, content=call.content, headers=call.headers, timeout=30
    )


def test_every_v1_route_is_covered(world: World) -> None:
    missing = set(_v1_routes(world.app)) - set(ROUTES)
    assert not missing, f"new /v1 routes {sorted(missing)}: add each to ROUTES with a request proving its tenant check"


@pytest.mark.parametrize("who", ["anonymous", "revoked"])
def test_without_a_valid_key_every_route_answers_401(world: World, who: str) -> None:
    client = getattr(world, who)
    for method, path in _v1_routes(world.app):
        for call in ROUTES[(method, path)]:
            response = _request(client, world, method, path, call)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.json()["error"]["field"] == "Authorization"
            assert SECRET_NAME not in response.text and world.job_id not in response.text


def test_another_tenant_sees_nothing_on_any_route(world: World) -> None:
    for method, path in _v1_routes(world.app):
        for call in ROUTES[(method, path)]:
            response = _request(world.b, world, method, path, call)
            assert SECRET_NAME not in response.text, (method, path)
            if call.kind == "item":
                # 404, exactly like an id that does not exist (never 403: ids cannot be probed).
                assert response.status_code == 404, (method, path, response.status_code, response.text)
                assert response.json()["error"]["code"] in ("job_not_found", "model_not_found"), (method, path)
            else:
                assert response.status_code in (200, 202), (method, path, response.text)
                assert world.job_id not in response.text and A_MODEL not in response.text, (method, path)
    assert world.serve.calls == []  # team-b's prediction never reached the model server
    # team-b's cancel did nothing to team-a's job.
    assert world.api.store.events(world.job_id)[-1].kind == "failed"


def test_the_owner_reaches_every_route(world: World) -> None:
    """The positive control: the same requests with team-a's own key are answered."""
    for method, path in _v1_routes(world.app):
        for call in ROUTES[(method, path)]:
            response = _request(world.a, world, method, path, call)
            if method == "DELETE":  # past the tenant check: refused only because the owner's alias move (above)
                assert response.json()["error"]["code"] == "model_has_aliases", response.text  # points at it
                continue
            if path.endswith("/revisions") and method == "POST":  # past the tenant check: no dataset validated yet
                assert response.json()["error"]["code"] == "no_dataset_listing", response.text
                continue
            assert response.status_code in (200, 202), (method, path, response.status_code, response.text)
            if call.kind == "collection" and path != "/v1/models":  # the model listing holds models only
                assert world.job_id in response.text, (method, path)
    assert {c["model_id"] for c in world.serve.calls} == {A_MODEL}  # predict and predict:batch


def test_an_admin_key_sees_every_tenant(world: World) -> None:
    jobs = world.api.http.get("/v1/jobs").json()["jobs"]
    assert world.job_id in [j["id"] for j in jobs]
    assert world.api.http.get(f"/v1/jobs/{world.job_id}").json()["name"] == SECRET_NAME
    assert [m["id"] for m in world.api.http.get("/v1/models").json()["models"]] == [A_MODEL]
    # …and team-b's listings hold team-b's jobs only.
    world.b.post("/v1/jobs", json={"dataset_uri": "s3://bucket/b-data", "name": "b-job"})
    assert [j["name"] for j in world.b.get("/v1/jobs").json()["jobs"]] == ["b-job"]
