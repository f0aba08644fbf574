"""scripts/setup-system (the first step of scripts/test) installs the Debian packages the suite needs, and only
those that are missing, after saying which and why: a fresh machine without Chromium gets it.

Run with a PATH of stand-ins: `apt-get` records what it was asked, and the tools present or missing are chosen
per test, so nothing is installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "setup-system"
# What the script itself runs besides the tools it looks for.
PLUMBING = ("bash", "dirname", "ls", "sed", "id", "tail", "env", "cat")
# The script finds PostgreSQL by its fixed Debian path, which no PATH can hide: where it is missing, the
# script would (rightly) ask for it too.
pytestmark = pytest.mark.skipif(
    not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")), reason="needs PostgreSQL's server binaries, as CI has"
)


def _path_with(tmp_path: Path, present: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose PATH holds the plumbing, `apt-get` recording its arguments, and `present` tools
    (name -> the script's body); returns it and the file apt-get's calls land in."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "apt-calls"
    bin_dir.mkdir()
    for tool in PLUMBING:
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    stubs = {"apt-get": f'echo "$@" >> {calls}', **present}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": str(bin_dir), "PYTHON": "python3.11", "HOME": str(tmp_path)}, calls


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, the script runs apt-get itself (CI runs as root)")
def test_a_machine_without_chromium_gets_it_after_being_told_why(tmp_path: Path) -> None:
    present = {
        "python3.11": "exit 0",  # has venv
        "node": "echo v20.20.2",
        "npm": "exit 0",
        "unzip": "exit 0",
    }
    env, calls = _path_with(tmp_path, present)
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Installing the Debian packages the tests need (apt-get install chromium):" in result.stdout
    assert "chromium: the report page test opens the page in headless Chromium" in result.stdout
    assert calls.read_text().splitlines() == ["update -qq", "install -y -qq chromium"]
    assert "older than 20" not in result.stderr


def test_nothing_missing_installs_nothing_and_says_nothing(tmp_path: Path) -> None:
    present = {tool: "exit 0" for tool in ("python3.11", "npm", "unzip", "chromium")} | {"node": "echo v20.1.0"}
    env, calls = _path_with(tmp_path, present)
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr == "" and not calls.exists()


def test_an_old_node_is_named_with_what_it_breaks(tmp_path: Path) -> None:
    present = {tool: "exit 0" for tool in ("python3.11", "npm", "unzip", "chromium")} | {"node": "echo v18.19.0"}
    env, calls = _path_with(tmp_path, present)
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not calls.exists()
    assert "Node.js v18.19.0 is older than 20" in result.stderr and "s3rver" in result.stderr
