"""`python -m core.migrate` (Alembic), the command the stack and the chart's initContainer run before the API."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core.migrate import StoreNotMigrated, head_revision, migrate
from core.settings import Settings
from core.store import JobStore, make_engine, metadata
from service.main import create_app
from tests.core.first_release_schema import JOB_ID, create_first_release_store
from tests.utils.postgres import postgres_bin, temporary_postgres

REPO = Path(__file__).resolve().parents[2]
TABLES = {"jobs", "job_events", "job_epochs", "models", "alembic_version"}
_databases = itertools.count()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    if postgres_bin("initdb") is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed here (CI installs it)")
    with temporary_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the module's server."""
    name = f"store_{next(_databases)}"
    engine = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return sa.make_url(postgres_server).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


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


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_migrate_creates_the_store_in_a_new_sqlite_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'store.db'}"
    proc = start_migrate(url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert tables(url) >= TABLES
    assert revision_of(url) == head_revision()
    assert "store schema is up to date" in out


def test_pods_starting_together_migrate_one_at_a_time_on_postgresql(postgres_url: str) -> None:
    procs = [start_migrate(postgres_url) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert tables(postgres_url) >= TABLES
    assert revision_of(postgres_url) == head_revision()


def test_the_first_release_store_upgrades_to_head_keeping_its_job(empty_url: str) -> None:
    create_first_release_store(empty_url)
    assert revision_of(empty_url) is None  # made by create_all, before Alembic

    migrate(empty_url)

    assert revision_of(empty_url) == head_revision()
    store = JobStore.from_url(empty_url)
    try:
        job = store.get_job(JOB_ID)
        assert job is not None and job.name == "first" and job.model_id == "mdl-first" and job.attempt == 1
        assert job.best == {"epoch": 1, "val_accuracy": 0.9}
        assert [e.kind for e in store.events(JOB_ID)] == ["succeeded"]
        assert store.epochs(JOB_ID) == [{"epoch": 1, "val_accuracy": 0.9}]
        model = store.get_model("mdl-first")
        assert model is not None and model.classes == ["cat", "dog"]
        # The columns added since the first release now exist and take values.
        store.set_result(JOB_ID, "artifacts", {"lr_sweep.png": "s3://b/k"})
        store.set_waiting(JOB_ID, {"resources": {"CPU": 2}})
        store.set_result(JOB_ID, "cost", {"usd": 0.01})
        upgraded = store.get_job(JOB_ID)
        assert upgraded is not None and upgraded.artifacts == {"lr_sweep.png": "s3://b/k"}
        assert upgraded.waiting == {"resources": {"CPU": 2}} and upgraded.cost == {"usd": 0.01}
        # Its unique Idempotency-Key still holds: the same key and body return the first job.
        assert store._by_idempotency_key("key-first") is not None
    finally:
        store.engine.dispose()
    migrate(empty_url)  # a second run (every pod start) changes nothing
    assert revision_of(empty_url) == head_revision()


def test_a_store_the_replaced_start_up_upgrade_made_is_stamped_not_altered_twice(tmp_path: Path) -> None:
    """The columns the old start-up upgrade added (artifacts, waiting, cost) mark it as revision 0003."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    create_first_release_store(url)
    engine = make_engine(url)
    with engine.begin() as conn:  # what JobStore._add_missing_columns did on the last release before Alembic
        for column in ("artifacts", "waiting", "cost"):
            conn.exec_driver_sql(f'ALTER TABLE jobs ADD COLUMN "{column}" JSON')
        conn.exec_driver_sql("""UPDATE jobs SET cost = '{"usd": 0.5}'""")
    engine.dispose()

    migrate(url)  # re-adding any of those columns would fail with "duplicate column"

    assert revision_of(url) == head_revision()
    store = JobStore.from_url(url)
    try:
        job = store.get_job(JOB_ID)
        assert job is not None and job.cost == {"usd": 0.5} and job.attempt == 1
    finally:
        store.engine.dispose()


def test_the_migrations_build_exactly_the_tables_core_store_declares(empty_url: str) -> None:
    """`alembic check`: a column or index added to core/store/tables.py without a revision fails here."""
    migrate(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == [], f"core/store/tables.py and the migrations disagree; add a revision: {differences}"


def test_the_api_refuses_to_start_on_a_store_behind_its_schema(tmp_path: Path) -> None:
    create_first_release_store(f"sqlite:///{tmp_path / 'trainyard.db'}")
    app = create_app(Settings(home=tmp_path))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(StoreNotMigrated, match=r"run `python -m core\.migrate`"):
        asyncio.run(start())


def test_the_migrations_ship_with_the_package() -> None:
    """The Docker image installs the package (`pip install .`): env.py, the revisions and the template go with it."""
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    included = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "core*" in included  # core.migrations and core.migrations.versions are packages under it
    assert "migrations/script.py.mako" in pyproject["tool"]["setuptools"]["package-data"]["core"]
    for package in ("core/migrations", "core/migrations/versions"):
        assert (REPO / package / "__init__.py").exists()


def test_the_tests_copy_of_a_migrated_store_is_the_store_a_migration_builds(tmp_path: Path) -> None:
    from tests.utils.schema import migrated

    def schema(path: Path) -> list[tuple[str, ...]]:
        """Every table, index and trigger as SQLite keeps it, and last the revision the store is stamped with."""
        with sa.create_engine(f"sqlite:///{path}").connect() as conn:
            rows = conn.execute(sa.text("SELECT type, name, sql FROM sqlite_master ORDER BY name")).all()
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        return [tuple(row) for row in rows] + [("revision", revision)]

    migrate(f"sqlite:///{tmp_path / 'built.db'}")
    migrated(f"sqlite:///{tmp_path / 'copied' / 'store.db'}")  # a folder that does not exist yet, as migrate allows
    assert schema(tmp_path / "copied" / "store.db") == schema(tmp_path / "built.db")
    assert schema(tmp_path / "built.db")[-1][1] == head_revision()
