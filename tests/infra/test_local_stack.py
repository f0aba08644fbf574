"""The single-machine stack's own commands: uploads that skip what is there, and `down --purge`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack, StackConfig, main


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
    with pytest.raises(SystemExit) as exit_info:
        main(["down", "--purge", "--home", str(home)])
    assert exit_info.value.code == 2
    assert (home / "s3" / "bucket" / "object").exists()

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    main(["down", "--purge", "--home", str(home)])
    assert (home / "trainyard.db").exists()

    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    main(["down", "--purge", "--home", str(home)])
    assert not home.exists()


def test_down_purge_yes_deletes_everything_without_asking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    _stopped_stack_with_data(home)
    main(["down", "--purge", "--yes", "--home", str(home)])
    assert not home.exists()
    assert "1 object files" in capsys.readouterr().out
