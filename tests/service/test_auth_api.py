"""Bearer API keys: what a request without a valid key gets, the open probes, the opt-out, and the admin command."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from core.tenancy import Tenancy
from service.admin import app as admin_app
from tests.utils.api_server import Api, ApiFactory, FakeLauncher


def test_a_request_without_a_key_is_401_naming_the_header_and_the_fix(api: Api) -> None:
    response = api.client(None).get("/v1/jobs")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="trainyard"'
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("missing_api_key", "Authorization")
    assert "Authorization: Bearer <key>" in error["message"]
    assert "python -m service.admin keys create --tenant" in error["message"]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Basic dXNlcjpwYXNz", "invalid_authorization"),
        ("Bearer", "invalid_authorization"),
        ("Bearer ty_nope", "invalid_api_key"),
    ],
)
def test_a_malformed_or_unknown_key_is_401(api: Api, header: str, code: str) -> None:
    response = api.client(None).get("/v1/models", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_probes_and_metrics_need_no_key(api: Api) -> None:
    anonymous = api.client(None)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200  # degraded: Ray is down in this fixture; no 401
    assert anonymous.get("/readyz/strict").status_code == 503
    assert anonymous.get("/metrics").status_code == 200


def test_keys_are_stored_only_as_hashes(api: Api) -> None:
    key = api.new_key("team-a")
    assert key.startswith("ty_") and len(key) >= 40
    assert api.tenant_client("team-a").get("/v1/jobs").status_code == 200
    db = Path(api.settings.resolved_database_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the file and its WAL
    assert key.encode() not in stored and api.admin_key.encode() not in stored


def test_the_admin_command_creates_lists_and_revokes_keys(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", api.settings.resolved_database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(admin_app, ["keys", "create", "--tenant", "team-cli"])
        assert created.exit_code == 0, created.output
        key = created.stdout.strip().splitlines()[-1]
        client = api.client(key)
        assert client.get("/v1/jobs").status_code == 200

        listed = runner.invoke(admin_app, ["keys", "list", "--tenant", "team-cli"])
        [line] = listed.stdout.strip().splitlines()
        key_id, tenant, role, state = line.split("\t")[:4]
        assert (tenant, role, state) == ("team-cli", "tenant", "active")
        assert key not in listed.stdout

        assert runner.invoke(admin_app, ["keys", "revoke", key_id]).exit_code == 0
        revoked = client.get("/v1/jobs")
        assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "invalid_api_key")
        again = runner.invoke(admin_app, ["keys", "revoke", key_id])
        assert again.exit_code == 2 and "no active key" in again.stderr

        bad = runner.invoke(admin_app, ["keys", "create", "--tenant", "Not Valid"])
        assert bad.exit_code == 2 and "tenant name 'Not Valid' is not valid" in bad.stderr
    finally:
        get_settings.cache_clear()


def test_auth_off_is_explicit_and_warns_at_every_start(make_api: ApiFactory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.main"):
        api = make_api(auth=False)
    assert api.client(None).post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}).status_code == 202
    assert any("TRAINYARD_AUTH=off" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_the_bootstrap_key_file_becomes_an_admin_key(make_api: ApiFactory, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("ty_bootstrap-key-of-the-local-stack-0123456789\n")
    api = make_api(bootstrap_key_file=key_file)
    team = api.tenant_client("team-a")
    job_id = team.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}).json()["id"]
    admin = api.client("ty_bootstrap-key-of-the-local-stack-0123456789")
    assert admin.get(f"/v1/jobs/{job_id}").status_code == 200  # an admin sees team-a's job
    tenancy = Tenancy(api.store.engine)
    record = tenancy.authenticate("ty_bootstrap-key-of-the-local-stack-0123456789")
    assert record is not None and record.admin and record.tenant == api.settings.bootstrap_tenant


def test_idempotency_keys_are_per_tenant(make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher())
    a, b = api.tenant_client("team-a"), api.tenant_client("team-b")
    body = {"dataset_uri": "s3://bucket/pets"}
    first = a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same"})
    replay = a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same"})
    other = b.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same"})
    assert first.json()["id"] == replay.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    # team-b's identical key makes team-b's own job, and learns nothing of team-a's.
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in other.headers
