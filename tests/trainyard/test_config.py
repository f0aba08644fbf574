"""Where the client finds the API: flags, then environment, then the config file, then the local stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainyard import Client
from trainyard.config import DEFAULT_URL, ClientConfig


def _write_config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def _write_stack(home: Path, api_port: int = 18080, s3_port: int = 19000) -> None:
    stack = home / "stack-home"
    stack.mkdir(exist_ok=True)
    (stack / "stack.json").write_text(json.dumps({"home": str(stack), "api_port": api_port, "s3_port": s3_port}))


def test_defaults_point_at_the_local_stack_default_port(client_env: Path) -> None:
    config = ClientConfig.resolve()
    assert (config.url, config.api_key, config.s3_endpoint_url) == (DEFAULT_URL, None, None)
    assert config.upload_bucket == "trainyard-uploads"


def test_a_running_local_stack_is_found_from_its_state_file(client_env: Path) -> None:
    _write_stack(client_env)
    config = ClientConfig.resolve()
    assert config.url == "http://127.0.0.1:18080"
    assert config.s3_endpoint_url == "http://127.0.0.1:19000"
    assert config.local_s3_key is not None


def test_config_file_beats_the_local_stack(client_env: Path) -> None:
    _write_stack(client_env)
    _write_config(client_env, 'url = "https://file.example"\napi_key = "from-file"\nupload_bucket = "my-data"\n')
    config = ClientConfig.resolve()
    assert config.url == "https://file.example"
    assert config.api_key is not None and config.api_key.get_secret_value() == "from-file"
    assert config.upload_bucket == "my-data"
    assert config.s3_endpoint_url == "http://127.0.0.1:19000"  # a key the file leaves out falls through


def test_environment_beats_the_config_file(client_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config(client_env, 'url = "https://file.example"\napi_key = "from-file"\n')
    monkeypatch.setenv("TRAINYARD_URL", "https://env.example")
    config = ClientConfig.resolve()
    assert config.url == "https://env.example"
    assert config.api_key is not None and config.api_key.get_secret_value() == "from-file"


def test_explicit_arguments_beat_everything_and_none_means_not_given(
    client_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_stack(client_env)
    _write_config(client_env, 'url = "https://file.example"\n')
    monkeypatch.setenv("TRAINYARD_URL", "https://env.example")
    monkeypatch.setenv("TRAINYARD_API_KEY", "from-env")
    config = ClientConfig.resolve(url="https://flag.example", api_key=None)
    assert config.url == "https://flag.example"
    assert config.api_key is not None and config.api_key.get_secret_value() == "from-env"


def test_the_api_key_is_sent_as_a_bearer_token(client_env: Path) -> None:
    with Client(url="http://127.0.0.1:1", api_key="sekret") as client:
        assert client._http.headers["Authorization"] == "Bearer sekret"
    with Client(url="http://127.0.0.1:1") as client:
        assert "Authorization" not in client._http.headers
