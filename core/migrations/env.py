"""Alembic's environment for the job store, configured in code by `core.migrate.alembic_config`.

`core.migrate` hands over the connection it holds (under PostgreSQL's advisory lock); the `alembic` command
line (for writing a new revision) gets the store's URL from Trainyard's settings instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from core.store import make_engine, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead, so one revision fits both.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from core.settings import get_settings

    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `python -m core.migrate` against the store")
run_migrations_online()
