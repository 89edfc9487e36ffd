"""Hot-path statements: SQLAlchemy Core to write them, the driver to run them on PostgreSQL.

Every statement is a Core statement, built once. Through SQLAlchemy, each execution still
costs a cache-key walk, an execution context and result processing: on the benchmark machine
about twice the CPU of the database round trip itself (bench/README.md). `Query` compiles its
statement once per shape and, on PostgreSQL, runs it on the asyncpg connection underneath the
request's SQLAlchemy connection, inside the same transaction. On SQLite (the embedded default,
not a throughput target) it goes through SQLAlchemy. Both routes answer rows with attribute
access and `_mapping`, like SQLAlchemy's, and every API test runs on both.

Only this module touches the asyncpg adapter beneath SQLAlchemy; tests/core/test_sql.py pins
what it relies on (the adapter starts its transaction lazily: `_begun` starts it first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Executable, bindparam
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import json_dumps

# Up to this many rows, an INSERT is one multi-row statement; beyond, a pipelined batch.
MULTI_ROW_MAX = 20


class Row:
    """A result row: attributes and `_mapping`, as SQLAlchemy's rows have them."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"Row({dict(self._mapping)!r})"


class DriverError(DBAPIError):
    """An error of the driver on the direct route, handled like SQLAlchemy's own DBAPI errors
    (constraint violations are 409, data errors 422: app/core/errors.py)."""


class Query:
    """A statement compiled once (per set of columns, for INSERTs) and run on the hot path.

    `json` names the parameters that hold JSON values (the driver wants them as text);
    `row_values` are SQL expressions an INSERT writes into every row.
    """

    __slots__ = ("_base", "_compiled", "_multi", "_row_values", "json", "statement")

    def __init__(
        self,
        statement: Executable,
        *,
        json: Iterable[str] = (),
        row_values: Mapping[str, Any] | None = None,
    ) -> None:
        base: Any = statement
        self._base = base
        self._row_values = dict(row_values or {})
        self.statement: Executable = base.values(**self._row_values) if row_values else base
        self.json = frozenset(json)
        # per set of INSERT columns (None otherwise): SQL, parameter names in order, and the
        # values of the statement's own literals (`id == 1` compiles to a parameter too)
        self._compiled: dict[
            tuple[str, ...] | None, tuple[str, tuple[str, ...], dict[str, Any]]
        ] = {}
        # INSERTs of a few rows: one multi-row VALUES statement per (columns, number of rows)
        self._multi: dict[tuple[tuple[str, ...], int], Query] = {}

    async def all(
        self, conn: AsyncConnection, params: Mapping[str, Any] | None = None
    ) -> list[Any]:
        if conn.dialect.name != "postgresql":
            return list(await conn.execute(self.statement, dict(params or {})))
        sql, args = self._sql(conn, params, None)
        driver = await _begun(conn)
        try:
            return [Row(record) for record in await driver.fetch(sql, *args)]
        except asyncpg.PostgresError as exc:
            raise _wrapped(exc, sql) from exc

    async def first(self, conn: AsyncConnection, params: Mapping[str, Any] | None = None) -> Any:
        if conn.dialect.name != "postgresql":
            return (await conn.execute(self.statement, dict(params or {}))).first()
        sql, args = self._sql(conn, params, None)
        driver = await _begun(conn)
        try:
            record = await driver.fetchrow(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _wrapped(exc, sql) from exc
        return None if record is None else Row(record)

    async def execute(self, conn: AsyncConnection, params: Mapping[str, Any]) -> None:
        """A statement that answers no rows (an UPDATE or DELETE without RETURNING)."""
        if conn.dialect.name != "postgresql":
            await conn.execute(self.statement, dict(params))
            return
        sql, args = self._sql(conn, params, None)
        driver = await _begun(conn)
        try:
            await driver.execute(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _wrapped(exc, sql) from exc

    async def insert(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Any:
        """An INSERT .. RETURNING of one row, its columns being the keys of `params`."""
        if conn.dialect.name != "postgresql":
            return (await conn.execute(self.statement, dict(params))).one()
        sql, args = self._sql(conn, params, tuple(params))
        driver = await _begun(conn)
        try:
            return Row(await driver.fetchrow(sql, *args))
        except asyncpg.PostgresError as exc:
            raise _wrapped(exc, sql) from exc

    async def insert_many(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """INSERT several rows that all have the same keys, in one pipelined batch."""
        if not rows:
            return
        if conn.dialect.name != "postgresql":
            await conn.execute(self.statement, [dict(r) for r in rows])
            return
        columns = tuple(rows[0])
        if len(rows) <= MULTI_ROW_MAX:
            # One Bind/Execute: asyncpg's executemany costs more for a handful of rows.
            multi = self._multi_row(columns, len(rows))
            params = {f"r{i}_{name}": row[name] for i, row in enumerate(rows) for name in columns}
            await multi.execute(conn, params)
            return
        sql, _ = self._sql(conn, rows[0], columns)
        _, names, literals = self._compiled[columns]
        driver = await _begun(conn)
        try:
            await driver.executemany(sql, [self._args(names, literals, row) for row in rows])
        except asyncpg.PostgresError as exc:
            raise _wrapped(exc, sql) from exc

    def _multi_row(self, columns: tuple[str, ...], count: int) -> Query:
        query = self._multi.get((columns, count))
        if query is None:
            rows: list[dict[str, Any]] = [
                {**{name: bindparam(f"r{i}_{name}") for name in columns}, **self._row_values}
                for i in range(count)
            ]
            json = {f"r{i}_{name}" for i in range(count) for name in columns if name in self.json}
            query = self._multi[columns, count] = Query(self._base.values(rows), json=json)
        return query

    def _sql(
        self,
        conn: AsyncConnection,
        params: Mapping[str, Any] | None,
        columns: tuple[str, ...] | None,
    ) -> tuple[str, list[Any]]:
        compiled = self._compiled.get(columns)
        if compiled is None:
            keys = list(columns) if columns is not None else None
            statement: Any = self.statement
            done = statement.compile(dialect=conn.dialect, column_keys=keys)
            literals = {k: v for k, v in done.params.items() if v is not None}
            compiled = (done.string, tuple(done.positiontup or ()), literals)
            self._compiled[columns] = compiled
        sql, names, literals = compiled
        return sql, self._args(names, literals, params or {})

    def _args(
        self, names: tuple[str, ...], literals: Mapping[str, Any], params: Mapping[str, Any]
    ) -> list[Any]:
        json = self.json
        values = [params[n] if n in params else literals[n] for n in names]
        return [json_dumps(v) if n in json else v for n, v in zip(names, values, strict=True)]


async def _begun(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, with SQLAlchemy's transaction begun if `conn` is
    in one (the adapter sends BEGIN lazily, with its first statement)."""
    adapter: Any = conn.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if adapter._transaction is None and adapter.isolation_level != "autocommit":
        await adapter._start_transaction()
    return adapter._connection


def _wrapped(exc: asyncpg.PostgresError, sql: str) -> DriverError:
    error = DriverError(sql, None, exc)
    error.orig = exc
    return error
