"""Shared fixtures: the real local stack (S3-compatible server, Ray head) on loopback, started once.

Tests that only need S3 ask for `s3`; tests that need Ray ask for `ray_stack`. Both set this process's
environment like the stack's, so `core.settings.get_settings()` here sees what the Ray processes see.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.s3 import s3_client
from core.settings import Settings, get_settings
from infra.local.stack import LocalStack, StackConfig
from tests.utils.mlflow_server import MlflowServer


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    home = tmp_path_factory.mktemp("trainyard-home")
    local = LocalStack(StackConfig.with_free_ports(home))
    saved = dict(os.environ)
    local.export_env()
    local.start_s3()
    yield local
    local.down()
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ray_stack(stack: LocalStack) -> LocalStack:
    stack.start_ray()
    return stack


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    return get_settings()


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    return s3_client()


@pytest.fixture(scope="session")
def permissive_s3() -> Iterator[Any]:
    """A moto S3 server, for keys that real S3 accepts but the local stack's s3rver refuses.

    S3 keys are opaque strings, so real buckets can hold `a/../../b` or `a//b`; s3rver maps keys to files
    and rejects them. Tests of how Trainyard handles such hostile keys need a server that stores them as S3
    does: moto's, in memory, on loopback.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from core.s3 import client_config
    from infra.local.stack import LOOPBACK, free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    yield boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{port}",
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
        region_name="us-east-1",
        config=client_config(compatible_server=True),
    )
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server on loopback, shared by the session (tests tell their runs apart by job id).

    Started, not waited for: its first start takes tens of seconds, which a test overlaps with its own set-up
    before it calls `wait_ready()`.
    """
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
