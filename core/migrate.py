"""Bring the job store's schema to this release's Alembic head, then exit: ``python -m core.migrate``.

The chart runs this in an initContainer of every API pod and the local stack runs it before the API starts;
the API itself only checks that the store is at head (`require_head`) and refuses to serve otherwise.
Several pods start at once: on PostgreSQL an advisory lock lets one migrate while the others wait, instead of
racing on CREATE TABLE. The revisions live in `core/migrations/versions`; the environment is configured here,
in code, so the installed package (the Docker image) needs no alembic.ini.

A store created before Alembic (by `create_all` and the start-up column upgrade it replaced) has tables but
no `alembic_version`: it is stamped with the newest revision whose columns it already has, then upgraded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from core.settings import get_settings
from core.store import make_engine

logger = logging.getLogger(__name__)

# Any constant shared by every Trainyard process; it names this lock among the database's advisory locks.
MIGRATION_LOCK_KEY = 0x7472_6169_6E79  # "trainy"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# The jobs columns each revision from before Alembic added: how an unversioned store shows its revision.
# Frozen: every store created from now on carries alembic_version, so later revisions need no entry here.
PRE_ALEMBIC_COLUMNS: dict[str, set[str]] = {"0001": set(), "0002": {"artifacts"}, "0003": {"waiting", "cost"}}


class StoreNotMigrated(RuntimeError):
    """The store's schema is behind this release's head: `python -m core.migrate` has not run."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "core/migrations/versions holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _pre_alembic_revision(connection: Connection) -> str | None:
    """The revision an unversioned store already matches; None for an empty database."""
    inspector = sa.inspect(connection)
    if not inspector.has_table("jobs"):
        return None
    present = {c["name"] for c in inspector.get_columns("jobs")}
    matched = None
    for revision, added in PRE_ALEMBIC_COLUMNS.items():  # in revision order
        if not added <= present:
            break
        matched = revision
    return matched


def upgrade(connection: Connection) -> None:
    """Stamp a pre-Alembic store if needed, then upgrade to head, on `connection` (committed here)."""
    if current_revision(connection) is None and (found := _pre_alembic_revision(connection)) is not None:
        logger.info("store predates Alembic; its columns match revision %s: stamping it", found)
        command.stamp(alembic_config(connection), found)
        connection.commit()
    command.upgrade(alembic_config(connection), "head")
    connection.commit()


def migrate(url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name != "postgresql":
                # A SQLite file belongs to one machine's processes, started one after another by the stack.
                upgrade(conn)
                return
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                upgrade(conn)
            finally:
                conn.rollback()  # a failed revision leaves its transaction open; the unlock needs a fresh one
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _is_known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def require_head(engine: Engine) -> None:
    """Raise StoreNotMigrated unless the store is at this release's head (the API's start-up check).

    A store at a revision this release does not know is newer (a later release migrated it during a rolling
    upgrade): revisions only add, so this release still works on it, and it starts.
    """
    head = head_revision()
    with engine.connect() as conn:
        current = current_revision(conn)
    if current == head:
        return
    if current is not None and not _is_known(current):
        logger.warning("store is at revision %s, newer than this release's head %s", current, head)
        return
    shown = engine.url.render_as_string(hide_password=True)
    raise StoreNotMigrated(
        f"the job store {shown} is at schema revision {current or 'none (empty or pre-Alembic)'}, but this "
        f"release needs {head}: run `python -m core.migrate` with the same TRAINYARD_DATABASE_URL first "
        "(the local stack and the chart's initContainer do this before the API starts)"
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    migrate(settings.resolved_database_url)
    shown = sa.make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    logger.info("store schema is up to date at revision %s (%s)", head_revision(), shown)


if __name__ == "__main__":
    main()
