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
from sqlalchemy import BindParameter, Executable, bindparam, func, literal_column, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import visitors

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


def as_dict(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """A row's mapping as a dict with plain `str` keys, as orjson wants them: the driver's
    records and dicts in one C call; SQLAlchemy's mappings (keys may be `quoted_name`s, a str
    subclass) key by key."""
    kind = type(mapping)
    if kind is asyncpg.Record or kind is dict:
        return dict(mapping)
    return {str(key): value for key, value in mapping.items()}


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

    async def changed(self, conn: AsyncConnection, params: Mapping[str, Any]) -> int:
        """Run an UPDATE or DELETE; answers how many rows it changed."""
        if conn.dialect.name != "postgresql":
            return int((await conn.execute(self.statement, dict(params))).rowcount)
        sql, args = self._sql(conn, params, None)
        driver = await _begun(conn)
        try:
            status: str = await driver.execute(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _wrapped(exc, sql) from exc
        return int(status.rsplit(" ", 1)[-1])

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


def _renamed(statement: Any, prefix: str) -> Any:
    """The statement with every bind parameter renamed `prefix + name`."""

    def replace(element: Any, **_: Any) -> Any:
        if isinstance(element, BindParameter):
            return bindparam(
                prefix + element.key,
                value=element.value,
                type_=element.type,
                expanding=element.expanding,
            )
        return None

    return visitors.replacement_traverse(statement, {}, replace)


class Batch:
    """The writes of a transaction that need nothing back from each other, sent together:
    on PostgreSQL as one statement of data-modifying CTEs (one round trip for a record, its
    journal entries, its SLA clocks and its change-log rows), on SQLite one after another.
    A part may require that it changed exactly one row (`expect_one`); if it did not, the
    whole transaction fails with `Conflict`."""

    def __init__(self) -> None:
        self._parts: list[tuple[Query, str, Any, bool]] = []

    def insert(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        """INSERT rows (all with the same keys) with `query`, an `insert(table)` Query."""
        if rows:
            self._parts.append((query, "insert", list(rows), False))

    def execute(self, query: Query, params: Mapping[str, Any], *, expect_one: bool = False) -> None:
        """Run an UPDATE or DELETE `query` with `params`."""
        self._parts.append((query, "execute", params, expect_one))

    async def run(self, conn: AsyncConnection) -> None:
        parts, self._parts = self._parts, []
        if not parts:
            return
        if conn.dialect.name != "postgresql" or len(parts) == 1:
            for query, kind, values, expect_one in parts:
                if kind == "insert":
                    await query.insert_many(conn, values)
                elif expect_one:
                    if await query.changed(conn, values) != 1:
                        raise _lost_race()
                else:
                    await query.execute(conn, values)
            return
        combined, params = _combine(parts)
        row = await combined.first(conn, params)
        if any(count != 1 for count in row._mapping.values()):
            raise _lost_race()


def _lost_race() -> Exception:
    from app.core.errors import Conflict

    return Conflict("The record was changed by another request at the same time; retry.")


_combined: dict[tuple[Any, ...], Query] = {}


def _combine(parts: Sequence[tuple[Query, str, Any, bool]]) -> tuple[Query, dict[str, Any]]:
    """One statement for the parts (compiled once per shape) and its parameters."""
    shape: list[Any] = []
    params: dict[str, Any] = {}
    for number, (query, kind, values, expect_one) in enumerate(parts):
        prefix = f"p{number}_"
        if kind == "insert":
            columns = tuple(values[0])
            shape.append((id(query), columns, len(values)))
            for i, row in enumerate(values):
                params.update({f"{prefix}r{i}_{name}": row[name] for name in columns})
        else:
            shape.append((id(query), expect_one))
            params.update({prefix + name: value for name, value in values.items()})
    key = tuple(shape)
    combined = _combined.get(key)
    if combined is None:
        combined = _combined[key] = _compose(parts)
    return combined, params


def _compose(parts: Sequence[tuple[Query, str, Any, bool]]) -> Query:
    ctes: list[Any] = []
    checks: list[Any] = []
    json: set[str] = set()
    for number, (query, kind, values, expect_one) in enumerate(parts):
        prefix = f"p{number}_"
        if kind == "insert":
            columns = tuple(values[0])
            rows = [
                {**{c: bindparam(f"{prefix}r{i}_{c}") for c in columns}, **query._row_values}
                for i in range(len(values))
            ]
            statement = query._base.values(rows)
            json |= {
                f"{prefix}r{i}_{c}" for i in range(len(values)) for c in columns if c in query.json
            }
        else:
            statement = _renamed(query.statement, prefix)
            json |= {prefix + name for name in query.json}
            if expect_one:
                statement = statement.returning(literal_column("1"))
        cte = statement.cte(f"p{number}")
        ctes.append(cte)
        if expect_one:
            checks.append(select(func.count()).select_from(cte).scalar_subquery())
    answer = checks or [literal_column("1")]
    return Query(select(*answer).add_cte(*ctes), json=json)
