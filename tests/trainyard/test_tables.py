"""`trainyard list` and `trainyard models` as a person reads them: full ids at any width, names and aliases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from core.store import ModelRecord
from tests.utils.models import deployed_job
from trainyard.cli.tables import Col, print_table

from .conftest import LiveApi

REPO = Path(__file__).resolve().parents[2]


def _trainyard(api: LiveApi, columns: int, *args: str) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "trainyard", "--url", api.url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    if "--json" not in args:
        assert all(len(line) <= columns for line in result.stdout.splitlines()), result.stdout
    return result.stdout


@pytest.fixture
def deployed(live_api: LiveApi) -> list[ModelRecord]:
    """Two versions of `antsbees`, each deployed by a succeeded job."""
    return [deployed_job(live_api.store, "antsbees") for _ in range(2)]


@pytest.mark.parametrize("columns", [80, 200])
def test_full_ids_names_and_aliases_at_any_width(live_api: LiveApi, deployed: list[ModelRecord], columns: int) -> None:
    listed = _trainyard(live_api, columns, "models")
    for model in deployed:
        assert model.id in listed, listed  # whole, on one line: ready to copy
    assert "antsbees@1" in listed and "antsbees@2" in listed and "latest" in listed
    jobs = _trainyard(live_api, columns, "list")
    for model in deployed:
        assert model.job_id in jobs and model.id in jobs, jobs
    # The --json twins hold the same records.
    as_json = json.loads(_trainyard(live_api, columns, "models", "--json"))
    assert [(m["name"], m["version"], m["aliases"]) for m in as_json["models"]] == [
        ("antsbees", 2, ["latest"]),
        ("antsbees", 1, []),
    ]
    assert len(json.loads(_trainyard(live_api, columns, "list", "--json"))["jobs"]) == 2


def test_other_columns_give_way_and_ids_never_wrap() -> None:
    ids = ["mdl-20261207015501-66fa1234", "mdl-20261207015502-66fa5678"]
    rows = [[i, "x" * 60, "a fairly long text that must wrap"] for i in ids]
    for width in (60, 80, 130, 30):
        console = Console(width=width, record=True)
        print_table(console, [Col("model", is_id=True), Col("classes"), Col("note")], rows)
        lines = console.export_text().splitlines()
        assert all(any(i in line for line in lines) for i in ids), (width, lines)
        if width >= 60:  # a table: the other columns wrapped inside the width
            assert all(len(line.rstrip()) <= width for line in lines), (width, lines)
            assert (width < 130) == (len(lines) > 3), (width, lines)  # 130: room for all
        else:  # too narrow for a table: one block per row, the ids on a line of their own
            assert lines[0].strip() == "  ".join(ids[:1]) and lines[1].startswith("  classes: "), lines
