"""`python -m core.migrate`, the command the chart's initContainer runs before each API pod serves."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.utils.postgres import postgres_bin, temporary_postgres

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if postgres_bin("initdb") is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed here (CI installs it)")
    with temporary_postgres() as url:
        yield url


def start_migrate(database_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TRAINYARD_DATABASE_URL": database_url, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "core.migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_creates_the_store_in_a_new_sqlite_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'store.db'}"
    proc = start_migrate(url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert {"jobs", "job_events", "job_epochs", "models"} <= tables(url)
    assert "store schema is up to date" in out


def test_pods_starting_together_migrate_one_at_a_time_on_postgresql(postgres_url: str) -> None:
    procs = [start_migrate(postgres_url) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert {"jobs", "job_events", "job_epochs", "models"} <= tables(postgres_url)
