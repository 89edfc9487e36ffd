"""Database: one metadata for every domain, column helpers and the engine for both backends.

SDMS talks to the database through SQLAlchemy Core on an `AsyncConnection`: every table is a
`Table` on `metadata`, every statement is explicit. The ORM's unit-of-work is not used; see
docs/architecture.md for why (hot-path cost, explicit SQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    Uuid,
    any_,
    bindparam,
    event,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from app.core.ids import new_id

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite's rowid alias must be INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit column.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite stores naive UTC text that sorts correctly)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def id_column() -> Column[Any]:
    return Column("id", Uuid, primary_key=True, default=new_id)


def record_columns() -> list[Column[Any]]:
    """Columns every record of SDMS has: timestamps and the optimistic-concurrency version."""
    return [
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("version", Integer, nullable=False, default=1),
    ]


def json_dumps(value: Any) -> str:
    # As the API writes JSON (UTC as `Z`): the change log keeps records as the API shows them.
    return orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z).decode()


def _json_loads(value: Any) -> Any:
    # SQLite gives a column declared JSON numeric affinity: a stored scalar number comes back
    # already decoded.
    if isinstance(value, int | float):
        return value
    return orjson.loads(value)


def create_engine(
    url: str, *, pool_size: int = 20, max_overflow: int = 10, pool_timeout: float = 30
) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            json_serializer=json_dumps,
            json_deserializer=_json_loads,
        )
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,
        json_serializer=json_dumps,
        json_deserializer=_json_loads,
        # PostgreSQL's JIT compiles only queries it expects to be expensive: here, the
        # reports over many incidents, where compiling cost more than it saved (measured
        # at 1,000,000 incidents: ~1.2 s of JIT in a 2.5 s metrics query; bench/README.md).
        connect_args={"server_settings": {"jit": "off"}},
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, a busy timeout, and `BEGIN IMMEDIATE` for every write transaction.

    Deferred transactions that read first and write later fail with SQLITE_BUSY when another
    writer committed in between; taking the write lock up front makes writers queue instead.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and the two ways requests use it: autocommit reads and one-transaction writes.

    `concurrency`: how many requests hold a connection at once (the pool's size if not
    given); later ones wait their turn, in order of arrival (`request_connection`)."""

    def __init__(self, engine: AsyncEngine, concurrency: int | None = None) -> None:
        self.engine = engine
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # PostgreSQL: requests' connections kept checked out between requests, in autocommit
        # mode. Taking one from SQLAlchemy's pool and returning it costs ~80 µs of Python
        # (about 8 % of a create's CPU); these are handed from request to request instead.
        # One is kept only while the pool could still hand out another: then nobody can be
        # waiting for it (background jobs; requests wait for their turn first).
        self._kept: list[AsyncConnection] = []
        pool: Any = engine.pool
        size = pool.size() if hasattr(pool, "size") else 0
        overflow = getattr(pool, "_max_overflow", 0)  # QueuePool's; -1: no limit
        self._keep_below = size + overflow if overflow >= 0 else 1 << 30
        self._wait_limit = pool.timeout() if hasattr(pool, "timeout") else 30.0
        # Requests take turns: a connection handed back goes to the request that has waited
        # longest (asyncio's Semaphore lets no newcomer past a waiter). SQLAlchemy's pool
        # gives it to whoever asks next, so under load a few requests waited many times as
        # long as the rest. And a few requests at a time per process finish sooner than many
        # sharing the CPU with their database sessions: create's p99 / mean latency 1.6-1.7
        # instead of 1.9-2.1 at concurrency 32 on two cores (bench/README.md).
        turns = concurrency or size
        self._turns = asyncio.Semaphore(turns) if turns else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def request_connection(self) -> AsyncConnection:
        """A connection for one request, in autocommit mode (`end_request` when it is over):
        at once while fewer than `concurrency` requests hold one, else in turn."""
        turns = self._turns
        if turns is not None:
            try:  # as long as the pool would have let it wait for a connection
                async with asyncio.timeout(self._wait_limit):
                    await turns.acquire()
            except TimeoutError:
                raise PoolTimeout(
                    f"no turn for a connection within {self._wait_limit:g} s"
                ) from None
        try:
            kept = self._kept
            while kept:
                conn = kept.pop()
                if _reusable(conn):
                    return conn
                await release(conn)
            return await self.reader.connect()
        except BaseException:
            if turns is not None:
                turns.release()
            raise

    async def end_request(self, conn: AsyncConnection) -> None:
        """The request that had `conn` is over: keep it for the next request if it is clean
        (PostgreSQL, no transaction of any kind left open, not broken) and the pool has room,
        else return it to the pool (`release`); the next request waiting for one gets its turn."""
        try:
            if self.dialect == "postgresql" and self._pool_has_room() and _reusable(conn):
                self._kept.append(conn)
                return
            await release(conn)
        finally:
            if self._turns is not None:
                self._turns.release()

    def _pool_has_room(self) -> bool:
        pool: Any = self.engine.pool
        return bool(self._keep_below) and pool.checkedout() < self._keep_below

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction on a connection of its own, committed when the block ends without
        an exception (jobs, the CLI)."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def transaction_on(self, conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
        """One transaction on a connection taken from `read()` (a request's own connection),
        committed when the block ends without an exception. On SQLite the connection leaves
        autocommit mode for it (the pool resets that when the connection is returned)."""
        if conn.in_transaction():
            await conn.commit()  # ends the autocommit connection's implicit (empty) one
        if self.dialect == "postgresql":
            # The transaction is the driver's own (BEGIN ... COMMIT on the asyncpg connection)
            # and the connection stays in autocommit mode for SQLAlchemy, whose statements then
            # run inside it: switching SQLAlchemy's isolation level there and back on every
            # write cost more CPU than the write's own statements (measured with py-spy).
            driver = driver_of(conn)
            if conn.info.get(_DRIVER_TRANSACTION) or driver.is_in_transaction():
                raise RuntimeError("the connection is already inside a transaction")
            # Set until the transaction has ended cleanly: a connection still marked when the
            # request ends (cancelled during BEGIN, a write or the rollback) is discarded.
            conn.info[_DRIVER_TRANSACTION] = True
            transaction = driver.transaction(isolation="read_committed")
            await transaction.start()
            try:
                yield conn
            except BaseException:
                if not driver.is_closed():
                    await transaction.rollback()
                conn.info.pop(_DRIVER_TRANSACTION, None)
                raise
            try:
                await transaction.commit()
            except asyncpg.PostgresError as exc:  # as SQLAlchemy's own errors are
                raise DBAPIError("COMMIT", None, exc) from exc
            conn.info.pop(_DRIVER_TRANSACTION, None)
            return
        # SQLite: SERIALIZABLE makes the begin hook issue BEGIN IMMEDIATE.
        await conn.execution_options(isolation_level="SERIALIZABLE")
        async with conn.begin():
            yield conn

    async def dispose(self) -> None:
        kept, self._kept = self._kept, []
        for conn in kept:
            await conn.close()
        await self.engine.dispose()


def driver_of(conn: AsyncConnection) -> Any:
    """The asyncpg connection beneath a SQLAlchemy connection (PostgreSQL)."""
    return conn.sync_connection.connection.dbapi_connection._connection  # type: ignore[union-attr]


_DRIVER_TRANSACTION = "sdms.driver_transaction"


def _driver_clean(conn: AsyncConnection) -> bool:
    """The driver's connection (PostgreSQL) is open and surely outside any transaction: none
    begun by the driver, none of ours left unfinished (a request cancelled mid-write)."""
    driver = driver_of(conn)
    return not (
        conn.info.get(_DRIVER_TRANSACTION) or driver.is_closed() or driver.is_in_transaction()
    )


def _reusable(conn: AsyncConnection) -> bool:
    """Whether a request's connection can serve another request as it is: open, SQLAlchemy
    outside any transaction, the driver's connection clean."""
    if conn.closed or conn.invalidated or conn.in_transaction():
        return False
    return _driver_clean(conn)


async def release(conn: AsyncConnection) -> None:
    """Return a request's connection to the pool. One that may be inside a driver transaction
    (a request cancelled mid-write), or whose driver connection was lost, is discarded
    instead: the pool cannot roll back what it does not know was begun."""
    postgresql = conn.dialect.name == "postgresql"
    if postgresql and not conn.closed and not conn.invalidated and not _driver_clean(conn):
        await conn.invalidate()
    await conn.close()


Condition = Callable[[], ColumnElement[bool]]


@dataclass(frozen=True, slots=True)
class Bound:
    """SQL conditions written with named parameters, the values of those parameters, and what
    the SQL text depends on (`shape`): statements of one shape compile to the same SQL, so the
    conditions themselves are only built (`conditions`) when a shape is compiled."""

    factories: list[Condition] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    shape: list[Any] = field(default_factory=list)

    def add(self, condition: Condition, shape: Any, **params: Any) -> None:
        self.factories.append(condition)
        self.shape.append(shape)
        self.params.update(params)

    @property
    def conditions(self) -> list[ColumnElement[bool]]:
        return [build() for build in self.factories]


def one_of(
    bound: Bound, column: ColumnElement[Any], name: str, values: Sequence[Any], dialect: str
) -> None:
    """`column IN values`, written so that the SQL text does not depend on how many values there
    are: `=` for one, `= ANY(array)` on PostgreSQL. (An expanding IN is re-rendered at every
    execution, and on PostgreSQL every length is another prepared statement.)"""
    if len(values) == 1:
        bound.add(lambda: column == bindparam(name), (name, 1), **{name: values[0]})
    elif dialect == "postgresql":
        array_type = postgresql.ARRAY(column.type)
        bound.add(
            lambda: column == any_(bindparam(name, type_=array_type)),
            (name, "n"),
            **{name: list(values)},
        )
    else:
        bound.add(
            lambda: column.in_(bindparam(name, expanding=True)), (name, "n"), **{name: values}
        )
