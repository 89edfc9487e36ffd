"""Version counters for configuration that processes cache.

A process may keep configuration it reads on every write (the SLM configuration) if it can
tell, for free, whether it is still current: every change bumps the topic's counter in its own
transaction, and a reader reads the counter inside a statement it runs anyway, or guards its
write with it (`unchanged`: on PostgreSQL, opening an incident writes only if the counter is
still at the cached configuration's version, and is done again otherwise). Unlike a cache
invalidated by messages, a change is then visible to the very next write, on every process,
on any backend.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, ColumnElement, String, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import metadata
from app.core.errors import Unavailable
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


def unchanged(name: str) -> ColumnElement[bool]:
    """True while the counter is still at the version that the statement's parameters give
    (`expected`): the guard of a write that relies on configuration cached at it."""
    current = select(config_versions.c.version).where(config_versions.c.name == name)
    return current.scalar_subquery() == bindparam(f"{name}_version", type_=BigInteger)


def expected(name: str, version: int) -> dict[str, int]:
    """The parameters of `unchanged(name)`: the version the write relies on."""
    return {f"{name}_version": version}


class Stale(Unavailable):
    """A guarded write found the configuration changed since it was cached, and wrote
    nothing. The write is done again with the configuration reloaded (`WriteContext.run`); a
    client sees this only if it changed every time: a 503 (nothing was done, the same request
    may succeed at once), not a 409 (the record's state does not forbid it)."""

    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("The configuration changed while this was being written; retry.")


async def bump(conn: AsyncConnection, name: str) -> None:
    """Inside the transaction that changes the configuration."""
    await _BUMP[conn.dialect.name].execute(conn, {"name": name})


async def read(conn: AsyncConnection, name: str) -> int:
    row = await _READ.first(conn, {"name": name})
    return int(row.version) if row is not None else 0
