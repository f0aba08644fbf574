"""Create or upgrade the job store's schema, then exit: ``python -m core.migrate``.

The chart runs this in an initContainer of every API pod, so the store is ready before any replica serves.
Several pods start at once: on PostgreSQL an advisory lock lets one migrate while the others wait, instead of
racing on CREATE TABLE. For now the upgrade is what `JobStore.create_schema` does (create, add new columns).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from core.settings import get_settings
from core.store import JobStore, make_engine

logger = logging.getLogger(__name__)

# Any constant shared by every Trainyard process; it names this lock among the database's advisory locks.
MIGRATION_LOCK_KEY = 0x7472_6169_6E79  # "trainy"


def migrate(url: str) -> None:
    if not url.startswith("postgresql"):
        # A SQLite file belongs to one machine's processes; from_url also creates its folder.
        JobStore.from_url(url).engine.dispose()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as lock:
            lock.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                JobStore(engine).create_schema()
            finally:
                lock.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
    finally:
        engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    migrate(settings.resolved_database_url)
    shown = sa.make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    logger.info("store schema is up to date (%s)", shown)


if __name__ == "__main__":
    main()
