"""The CLI and the SDK find the local stack from any folder: `trainyard up` records its home in the user's
config folder; ./.trainyard, $TRAINYARD_HOME, --home, --url and TRAINYARD_URL still win, in that order of force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.local.config import StackConfig, record_stack_home, recorded_stack_home, stack_home, user_config_dir
from infra.local.stack import LocalStack
from trainyard.cli import app
from trainyard.config import ClientConfig


def _stack_in(folder: Path, api_port: int) -> Path:
    home = folder / ".trainyard"
    home.mkdir(parents=True)
    LocalStack(StackConfig(home=home, api_port=api_port)).save()
    (home / "api-key").write_text(f"ty_key-of-{api_port}\n")
    return home


def _status_home() -> str:
    result = CliRunner().invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["home"])


def test_a_recorded_stack_is_found_from_any_folder(client_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINYARD_HOME")
    checkout = _stack_in(client_env / "checkout", 18_201)
    record_stack_home(checkout)  # what `trainyard up` does once the stack runs
    assert (user_config_dir() / "stack-home").read_text().strip() == str(checkout.resolve())
    elsewhere = client_env / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert stack_home() == checkout.resolve()
    config = ClientConfig.resolve()
    assert config.url == "http://127.0.0.1:18201" and config.api_key is not None
    assert config.api_key.get_secret_value() == "ty_key-of-18201"
    assert _status_home() == str(checkout.resolve())  # `trainyard down` from here stops that stack

    # What is nearer or explicit wins: a stack in ./.trainyard, $TRAINYARD_HOME, --url, TRAINYARD_URL.
    _stack_in(elsewhere, 18_202)
    assert ClientConfig.resolve().url == "http://127.0.0.1:18202"
    other = _stack_in(client_env / "other", 18_203)
    monkeypatch.setenv("TRAINYARD_HOME", str(other))
    assert ClientConfig.resolve().url == "http://127.0.0.1:18203"
    assert ClientConfig.resolve(url="http://127.0.0.1:9").url == "http://127.0.0.1:9"
    monkeypatch.setenv("TRAINYARD_URL", "http://127.0.0.1:10")
    assert ClientConfig.resolve().url == "http://127.0.0.1:10"


def test_a_record_whose_stack_is_gone_is_ignored(client_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINYARD_HOME")
    gone = client_env / "purged" / ".trainyard"
    record_stack_home(gone)  # recorded, then `down --purge` deleted the folder
    monkeypatch.chdir(client_env)
    assert recorded_stack_home() is None
    assert stack_home() == client_env / ".trainyard"  # where a first `up` here would create one
    assert ClientConfig.resolve().url == "http://127.0.0.1:8080"
