"""Version counters for configuration that processes cache.

A process may keep configuration it reads on every write (the SLM configuration) if it can
tell, for free, whether it is still current: every change bumps the topic's counter in its own
transaction, and a reader reads the counter inside a statement it runs anyway (opening an
incident reads it with the incident's number). Unlike a cache invalidated by messages, a
change is then visible to the very next write, on every process, on any backend.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, String, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import metadata
from app.core.sql import Query

config_versions = Table(
    "config_versions",
    metadata,
    Column("name", String(20), primary_key=True),
    Column("version", BigInteger, nullable=False),
)


def _bump(dialect_insert: Any) -> Query:
    # An upsert: a missing row (a truncated table) must not freeze every process's cache.
    stmt = dialect_insert(config_versions).values(name=bindparam("name"), version=1)
    return Query(
        stmt.on_conflict_do_update(
            index_elements=[config_versions.c.name],
            set_={"version": config_versions.c.version + 1},
        )
    )


_BUMP = {"postgresql": _bump(postgresql.insert), "sqlite": _bump(sqlite.insert)}
_READ = Query(select(config_versions.c.version).where(config_versions.c.name == bindparam("name")))


def version_of(name: str) -> Any:
    """The counter as a scalar subquery, to read inside another statement."""
    return (
        select(config_versions.c.version)
        .where(config_versions.c.name == name)
        .scalar_subquery()
        .label(f"{name}_version")
    )


async def bump(conn: AsyncConnection, name: str) -> None:
    """Inside the transaction that changes the configuration."""
    await _BUMP[conn.dialect.name].execute(conn, {"name": name})


async def read(conn: AsyncConnection, name: str) -> int:
    row = await _READ.first(conn, {"name": name})
    return int(row.version) if row is not None else 0
