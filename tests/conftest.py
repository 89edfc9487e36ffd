"""Test fixtures: every API test runs on SQLite and on a real PostgreSQL started here.

Isolation: SQLite tests get a fresh copy of a migrated template file; PostgreSQL tests share one
migrated database that is truncated (identities and sequences restarted) before each test.
Schemas come from the alembic history itself, so every test also exercises the migrations.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import select, text

from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database, create_engine
from app.core.migrate import upgrade
from app.core.sql import as_dict
from app.incidents.models import incidents
from app.main import create_app
from app.models import metadata
from app.slm.models import sla_clocks
from app.slm.service import shown
from tests.factories import Api, World, build_world
from tests.pg import PostgresServer, find_bin_dir

ADMIN_KEY = "sdms_test_bootstrap_admin_key"
# A Monday morning, so business-hours tests start inside office hours.
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

BACKENDS = ["sqlite", "postgresql"]

# No deadline for property tests: how long an example takes says nothing about its outcome,
# and on a busy two-core machine one of them took 383 ms against hypothesis' default 200.
hypothesis_settings.register_profile("sdms", deadline=None)
hypothesis_settings.load_profile("sdms")


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | None]:
    if find_bin_dir() is None:
        if _postgres_required():
            pytest.fail("CI=true but no PostgreSQL server binaries were found")
        yield None
        return
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer | None) -> str | None:
    if pg_server is None:
        return None
    url = pg_server.create_database("sdms_test")
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="sdms-sqlite-"))
    template = directory / "template.db"
    upgrade(f"sqlite+aiosqlite:///{template}")
    yield template
    shutil.rmtree(directory, ignore_errors=True)


# Everything but the schema's version and the configuration counters, which processes compare
# with what they cached: those are bumped instead, as any change of configuration is.
TRUNCATE = ", ".join(
    table.name
    for table in metadata.sorted_tables
    if table.name not in ("alembic_version", "config_versions")
)


@pytest.fixture(params=BACKENDS)
async def database(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    pg_url: str | None,
    tmp_path: Path,
) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "sdms.db"
        shutil.copyfile(sqlite_template, path)
        db = Database(create_engine(f"sqlite+aiosqlite:///{path}"))
    else:
        if pg_url is None:
            pytest.skip("PostgreSQL server binaries not installed")
        db = Database(create_engine(pg_url, pool_size=20, max_overflow=20))
        async with db.transaction() as conn:
            await conn.execute(text(f"TRUNCATE {TRUNCATE} RESTART IDENTITY CASCADE"))
            await conn.execute(text("UPDATE config_versions SET version = version + 1"))
            for prefix in ("inc", "prb", "chg", "rel"):
                await conn.execute(text(f"ALTER SEQUENCE {prefix}_number_seq RESTART WITH 1"))
    try:
        yield db
        await _assert_rows_carry_their_clocks(db)
    finally:
        await db.dispose()


async def _assert_rows_carry_their_clocks(db: Database) -> None:
    """After every API test: each incident row's copy of its SLA clocks (app/slm/models.py) is
    what its clocks say, whatever the test did to it."""
    async with db.read() as conn:
        clocks = [as_dict(r._mapping) for r in await conn.execute(select(sla_clocks))]
        rows = [r._mapping for r in await conn.execute(select(incidents))]
    for row in rows:
        expected = shown(c for c in clocks if c["incident_id"] == row["id"])
        assert {name: row[name] for name in expected} == expected, row["number"]


@pytest.fixture
def backend(database: Database) -> str:
    return database.dialect


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings(database: Database) -> Settings:
    return Settings(
        database_url=str(database.engine.url),
        region="msk",
        admin_api_key=ADMIN_KEY,
        embedded_worker=False,
    )


@pytest.fixture
async def client(
    database: Database, settings: Settings, clock: ManualClock
) -> AsyncIterator[AsyncClient]:
    app = create_app(settings, clock=clock, database=database, jobs=[])
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://sdms.test") as http:
        yield http


@pytest.fixture
def api(client: AsyncClient) -> Api:
    return Api(client)


@pytest.fixture
def admin(api: Api) -> Api:
    return api.as_key(ADMIN_KEY)


@pytest.fixture
async def world(admin: Api) -> World:
    return await build_world(admin)
