"""A test's store at the schema's head: a copy of one migrated SQLite file, instead of migrating each file again.

Alembic runs every revision on each new SQLite file, about 0.1 s a file and most of it waiting on the disk, and the
suite makes hundreds of them. A copy made with SQLite's backup API is the same database. PostgreSQL stores, and a
file that already exists, are migrated for real; tests/core/test_migrate.py tests the migrations themselves.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import sqlite3
import tempfile
from pathlib import Path

from core.migrate import migrate

_SQLITE = "sqlite:///"


def migrated(url: str) -> None:
    """Bring the store at `url` to the schema's head, as `python -m core.migrate` does before the API starts."""
    target = Path(url.removeprefix(_SQLITE)) if url.startswith(_SQLITE) else None
    if target is None or target.exists():
        migrate(url)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(_head_file()) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    # sqlite3's context manager commits but does not close: a connection left open would keep the file's WAL.
    source.close()
    copy.close()


@functools.cache
def _head_file() -> Path:
    """This process's migrated file, made on first use."""
    folder = Path(tempfile.mkdtemp(prefix="trainyard-schema-head-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    migrate(f"{_SQLITE}{folder / 'head.db'}")
    return folder / "head.db"
