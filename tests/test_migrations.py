"""The alembic history builds exactly the schema the code declares, on both backends."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.migrate import alembic_config, head_revision, upgrade
from app.models import metadata
from tests.pg import PostgresServer

_databases = itertools.count(1)


async def _differences(url: str) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_on_empty_postgresql_yields_the_models_schema(
    pg_server: PostgresServer | None,
) -> None:
    if pg_server is None:
        pytest.skip("PostgreSQL server binaries not installed")
    url = pg_server.create_database(f"migrations_{next(_databases)}")
    await asyncio.to_thread(upgrade, url)
    assert await _differences(url) == []


async def test_upgrade_on_empty_sqlite_yields_the_models_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    await asyncio.to_thread(upgrade, url)
    assert await _differences(url) == []


async def test_the_history_goes_down_and_up_again(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    from alembic import command

    urls = [f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"]
    if pg_server is not None:
        urls.append(pg_server.create_database(f"migrations_{next(_databases)}"))
    for url in urls:
        await asyncio.to_thread(upgrade, url)
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        assert await _tables(url) == {"alembic_version"}
        await asyncio.to_thread(upgrade, url)
        assert await _differences(url) == []
    assert head_revision() is not None
