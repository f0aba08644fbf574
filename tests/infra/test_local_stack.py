"""The single-machine stack's own commands: uploads that skip what is there, and `down --purge`."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LOOPBACK, LocalStack, StackConfig
from trainyard.cli.stack import down


def test_uploading_the_same_folder_again_sends_nothing(s3: Any, tmp_path: Path) -> None:
    folder = make_shapes(tmp_path / "shapes", train_per_class=2, valid_per_class=1, size=16)
    assert upload_folder(s3, folder, "upload-again", "shapes") == 9
    assert upload_folder(s3, folder, "upload-again", "shapes/") == 0

    changed = folder / "train" / "circle" / "circle_000.png"
    changed.write_bytes((folder / "valid" / "square" / "square_000.png").read_bytes())
    assert upload_folder(s3, folder, "upload-again", "shapes") == 1
    body = s3.get_object(Bucket="upload-again", Key="shapes/train/circle/circle_000.png")["Body"].read()
    assert body == changed.read_bytes()


def _stopped_stack_with_data(home: Path) -> LocalStack:
    stack = LocalStack(StackConfig.with_free_ports(home))
    stack.save()
    (stack.config.s3_data_dir / "bucket").mkdir(parents=True)
    (stack.config.s3_data_dir / "bucket" / "object").write_bytes(b"x" * 1000)
    (home / "trainyard.db").write_bytes(b"")
    return stack


def test_down_purge_asks_first_and_refuses_without_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    _stopped_stack_with_data(home)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(typer.Exit) as exit_info:
        down(home=home, purge=True)
    assert exit_info.value.exit_code == 2
    assert (home / "s3" / "bucket" / "object").exists()

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    down(home=home, purge=True)
    assert (home / "trainyard.db").exists()

    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    down(home=home, purge=True)
    assert not home.exists()


def test_down_purge_yes_deletes_everything_without_asking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    _stopped_stack_with_data(home)
    down(home=home, purge=True, yes=True)
    assert not home.exists()
    assert "1 object files" in capsys.readouterr().out


def test_the_local_s3_server_pages_long_listings(s3: Any) -> None:
    # A dataset of more than 1,000 objects is listed in pages; pyarrow (Ray Train's checkpoints) asks for
    # one key at a time when it checks whether a path is a directory.
    s3.create_bucket(Bucket="paged")
    keys = [f"set/train/a/{i}.png" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket="paged", Key=key, Body=b"x")
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(Bucket="paged", Prefix="set/", PaginationConfig={"PageSize": 2})
    )
    assert len(pages) == 3
    assert [o["Key"] for page in pages for o in page.get("Contents", [])] == sorted(keys)


def test_pyarrow_sees_a_checkpoint_folder_as_a_directory(stack: LocalStack, s3: Any) -> None:
    import pyarrow.fs

    from core.s3 import arrow_filesystem

    s3.create_bucket(Bucket="arrow-dirs")
    fs = arrow_filesystem()
    fs.create_dir("arrow-dirs/ckpt/checkpoint_1")
    with fs.open_output_stream("arrow-dirs/ckpt/checkpoint_1/model.pt") as out:
        out.write(b"weights")
    assert fs.get_file_info("arrow-dirs/ckpt/checkpoint_1").type == pyarrow.fs.FileType.Directory
    fs.delete_dir("arrow-dirs/ckpt/checkpoint_1")
    assert fs.get_file_info("arrow-dirs/ckpt/checkpoint_1").type == pyarrow.fs.FileType.NotFound


def test_the_suites_stacks_start_their_processes_with_openmp_threads_that_wait_asleep(stack: LocalStack) -> None:
    """Every process of a stack the suite starts shares two busy cores: its torch threads must not spin there
    (tests/conftest.py sets the policy; a stack's processes inherit it, the S3 server as much as Ray's)."""
    environ = Path(f"/proc/{stack.config.pids['s3']}/environ").read_bytes().split(b"\0")
    assert b"OMP_WAIT_POLICY=PASSIVE" in environ


def test_the_stack_makes_an_admin_key_that_its_api_the_sdk_and_the_cli_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainyard import Client
    from trainyard.config import ClientConfig

    home = tmp_path / "home"
    stack = LocalStack(StackConfig.with_free_ports(home))
    key_file = stack.config.api_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600  # like the Ray token beside it
    assert key_file.parent == stack.config.ray_token_file.parent
    key = key_file.read_text().strip()
    assert key.startswith("ty_") and LocalStack(stack.config).api_key == key  # made once, kept
    assert stack.env()["TRAINYARD_API_KEY"] == key

    stack.save()
    stack.start_api()
    try:
        with stack.api_client() as api:
            assert api.get("/v1/jobs").status_code == 200
            assert api.get("/v1/jobs", headers={"Authorization": ""}).status_code == 401
        # It keeps an idle connection open longer than clients keep theirs (httpx: 5 s): with both at 5 s, the
        # load benchmark's clients reused connections the server was closing and got ReadErrors.
        connection = http.client.HTTPConnection(LOOPBACK, stack.config.api_port, timeout=10)
        for idle_s in (6, 0):
            connection.request("GET", "/healthz")  # on the same connection: a closed one raises here
            assert connection.getresponse().read() == b'{"status":"ok"}'
            time.sleep(idle_s)
        connection.close()
        # A client that knows only the stack's home finds the key there, as `trainyard` does after `up`.
        for name in ("TRAINYARD_API_KEY", "TRAINYARD_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("TRAINYARD_HOME", str(home))
        monkeypatch.setenv("TRAINYARD_CONFIG", str(tmp_path / "no-config.toml"))
        config = ClientConfig.resolve()
        assert config.api_key is not None and config.api_key.get_secret_value() == key
        with Client() as client:
            assert client.list_jobs().jobs == []
    finally:
        stack.stop_api()


@pytest.mark.e2e
def test_down_stops_ray_in_order_without_sitting_out_the_grace_period(tmp_path: Path) -> None:
    # Told to stop all at once, a raylet whose GCS is going too keeps retrying it until the grace period runs
    # out and it is killed: 15 s of every test stack's teardown and of `trainyard down`.
    grace = 15.0
    stack = LocalStack(StackConfig.with_free_ports(tmp_path / "home"))
    try:
        stack.start_ray()
    finally:
        began = time.monotonic()
        stack.stop_ray(timeout=grace)
        took = time.monotonic() - began
    assert took < grace - 5, f"stopping Ray took {took:.1f} s: some process sat out the {grace:.0f} s grace period"
