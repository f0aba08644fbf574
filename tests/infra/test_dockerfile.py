"""infra/docker/Dockerfile, checked without a Docker engine: pins, what it installs, what it runs."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "infra" / "docker" / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_base_image_is_pinned_to_the_projects_python() -> None:
    args = dict(a.split("=", 1) for word, a in instructions() if word == "ARG" and "=" in a)
    (base,) = [a for word, a in instructions() if word == "FROM"]
    image = args[base.strip("${}")] if base.startswith("${") else base
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+", image)
    assert match, f"base image {image!r} is not pinned to a patch release"
    assert f">={match[1]}.{match[2]}" in PYPROJECT["project"]["requires-python"]


def test_it_installs_this_project_from_its_pyproject() -> None:
    runs = " ".join(a for word, a in instructions() if word == "RUN")
    assert "pip install ." in runs
    copied = {a.split()[0] for word, a in instructions() if word == "COPY"}
    assert "pyproject.toml" in copied
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages pip would miss: {packages - copied}"


def test_the_cpu_variant_installs_exactly_the_pinned_torch() -> None:
    """Run the Dockerfile's own pin extraction against pyproject.toml."""
    (script,) = re.findall(r"python -c '([^']+)'", DOCKERFILE)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    pinned = {d for d in PYPROJECT["project"]["dependencies"] if d.split("==")[0] in ("torch", "torchvision")}
    assert set(result.stdout.split()) == pinned
    assert all("==" in d for d in pinned)


def test_what_the_image_runs_exists() -> None:
    (cmd,) = [json.loads(a) for word, a in instructions() if word == "CMD"]
    assert cmd[:2] == ["uvicorn", "--factory"]
    module, attr = cmd[2].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # The chart's migration initContainer and the console scripts the package installs.
    assert callable(importlib.import_module("core.migrate").main)
    for target in PYPROJECT["project"]["scripts"].values():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def installed_packages() -> set[str]:
    runs = " ".join(a for word, a in instructions() if word == "RUN")
    words = shlex.split(runs.replace(";", " ").replace("&&", " "))
    start = words.index("install", words.index("apt-get"))
    return {w for w in words[start + 1 :] if not w.startswith("-")}


def test_kuberay_probes_find_wget() -> None:
    assert "wget" in installed_packages()


def test_rays_cluster_launcher_finds_rsync_and_ssh() -> None:
    """`ray up` copies files into the container with `rsync -e 'docker exec'`; the head's autoscaler, inside the
    container, sets up each new worker over ssh and rsync."""
    assert {"rsync", "openssh-client"} <= installed_packages()


def env() -> dict[str, str]:
    (line,) = [a for word, a in instructions() if word == "ENV"]
    return dict(shlex.split(item)[0].split("=", 1) for item in line.split())


def test_home_is_the_writable_trainyard_home_of_the_non_root_user() -> None:
    """Ray's launcher takes `~` inside the container from the image's HOME; the chart mounts its one writable
    home emptyDir at TRAINYARD_HOME over a read-only root, as the same uid and gid."""
    variables = env()
    assert variables["HOME"] == variables["TRAINYARD_HOME"] == "/var/lib/trainyard"
    runs = " ".join(a for word, a in instructions() if word == "RUN")
    useradd = re.search(r"useradd ([^&]+)", runs)
    assert useradd
    flags = shlex.split(useradd[1])
    assert flags[flags.index("--home-dir") + 1] == variables["HOME"] and "--create-home" in flags
    (user,) = [a for word, a in instructions() if word == "USER"]
    assert flags[-1] == user and user != "root"
    values = yaml.safe_load((REPO / "helm" / "trainyard" / "values.yaml").read_text())
    uid = int(flags[flags.index("--uid") + 1])
    assert values["podSecurityContext"]["runAsUser"] == values["podSecurityContext"]["runAsGroup"] == uid
    assert "--user-group" in flags  # gid = uid on a fresh image
