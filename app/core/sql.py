"""Hot-path statements: SQLAlchemy Core to write them, the driver to run them on PostgreSQL.

Every statement is a Core statement, built once. Through SQLAlchemy, each execution still
costs a cache-key walk, an execution context and result processing: on the benchmark machine
about twice the CPU of the database round trip itself (bench/README.md). `Query` compiles its
statement once per shape and, on PostgreSQL, runs it on the asyncpg connection underneath the
request's SQLAlchemy connection, inside the same transaction. On SQLite (the embedded default,
not a throughput target) it goes through SQLAlchemy. Both routes answer rows with attribute
access and `_mapping`, like SQLAlchemy's, and every API test runs on both.

Only this module and `app.core.db` (`driver_of`, the driver's own write transactions) reach
beneath SQLAlchemy; tests/core/test_sql.py pins what they rely on (the adapter starts its
transaction lazily: `_begun` starts it first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import BindParameter, Executable, bindparam, func, literal_column, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import visitors

from app.core.db import driver_of, json_dumps

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

    def __iter__(self) -> Iterator[Any]:
        """The values, in the statement's order (as iterating SQLAlchemy's rows gives them)."""
        return iter(self._mapping.values())

    def __repr__(self) -> str:
        return f"Row({dict(self._mapping)!r})"


def as_dict(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """A row's mapping as a dict with plain `str` keys, as orjson wants them: the driver's
    records by zipping their keys with their values (`dict(record)` looks every key up again:
    measured 1.7 times slower), dicts in one C call; SQLAlchemy's mappings (keys may be
    `quoted_name`s, a str subclass) key by key."""
    kind = type(mapping)
    if kind is asyncpg.Record:
        return dict(zip(mapping.keys(), mapping, strict=True))
    if kind is dict:
        return dict(mapping)
    return {str(key): value for key, value in mapping.items()}


class DriverError(DBAPIError):
    """An error of the driver on the direct route, handled like SQLAlchemy's own DBAPI errors
    (constraint violations are 409, data errors 422: app/core/errors.py)."""


class Query:
    """A statement compiled once (per set of columns, for INSERTs) and run on the hot path.

    `json` names the parameters that hold JSON values (the driver wants them as text);
    `row_values` are SQL expressions an INSERT writes into every row; `wrapped` puts SQL around
    a column's value in every row (column name -> function of the value's bind parameter).
    """

    __slots__ = ("_base", "_compiled", "_multi", "_row_values", "_wrapped", "json", "statement")

    def __init__(
        self,
        statement: Executable,
        *,
        json: Iterable[str] = (),
        row_values: Mapping[str, Any] | None = None,
        wrapped: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        base: Any = statement
        self._base = base
        self._row_values = dict(row_values or {})
        self._wrapped = dict(wrapped or {})
        fixed = self._row({name: bindparam(name) for name in self._wrapped})
        self.statement: Executable = base.values(**fixed) if fixed else base
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
        record = await _fetchrow(conn, *self._sql(conn, params, None))
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
        return Row(await _fetchrow(conn, *self._sql(conn, params, tuple(params))))

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
            rows = [
                self._row({name: bindparam(f"r{i}_{name}") for name in columns})
                for i in range(count)
            ]
            json = {f"r{i}_{name}" for i in range(count) for name in columns if name in self.json}
            query = self._multi[columns, count] = Query(self._base.values(rows), json=json)
        return query

    def _row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """An INSERT's row: the values (bind parameters) wrapped where asked, and the row's
        own SQL expressions."""
        wrapped = self._wrapped
        row = {name: wrapped[name](v) if name in wrapped else v for name, v in values.items()}
        return {**row, **self._row_values}

    def _sql(
        self,
        conn: AsyncConnection,
        params: Mapping[str, Any] | None,
        columns: tuple[str, ...] | None,
    ) -> tuple[str, list[Any]]:
        sql, names, literals = self.compiled(conn, columns)
        return sql, self._args(names, literals, params or {})

    def compiled(
        self, conn: AsyncConnection, columns: tuple[str, ...] | None = None
    ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """The SQL, its parameter names in order, and the values of its own literals."""
        compiled = self._compiled.get(columns)
        if compiled is None:
            keys = list(columns) if columns is not None else None
            statement: Any = self.statement
            done = statement.compile(dialect=conn.dialect, column_keys=keys)
            literals = {k: v for k, v in done.params.items() if v is not None}
            compiled = (done.string, tuple(done.positiontup or ()), literals)
            self._compiled[columns] = compiled
        return compiled

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


async def _fetchrow(conn: AsyncConnection, sql: str, args: Sequence[Any]) -> Any:
    driver = await _begun(conn)
    try:
        return await driver.fetchrow(sql, *args)
    except asyncpg.PostgresError as exc:
        raise _wrapped(exc, sql) from exc


def _wrapped(exc: asyncpg.PostgresError, sql: str) -> DriverError:
    error = DriverError(sql, None, exc)
    error.orig = exc
    return error


def _renamed(statement: Any, prefix: str, renamed: dict[str, str]) -> Any:
    """The statement with every bind parameter renamed `prefix + name` (noted in `renamed`:
    new name to old)."""

    def replace(element: Any, **_: Any) -> Any:
        if isinstance(element, BindParameter):
            renamed[prefix + element.key] = element.key
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
    whole transaction fails with `Conflict`.

    On PostgreSQL the one statement may also compute values in SQL that its parts share (a
    record's number drawn from its sequence: app/itil/numbers.py): `params` are the values of
    such expressions' own parameters, and `answer` names expressions that `run` answers."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self._parts: list[tuple[Query, str, Any, bool]] = []
        self._params = dict(params or {})
        self._answers: dict[str, Any] = {}

    def insert(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        """INSERT rows (all with the same keys) with `query`, an `insert(table)` Query."""
        if rows:
            self._parts.append((query, "insert", list(rows), False))

    def execute(self, query: Query, params: Mapping[str, Any], *, expect_one: bool = False) -> None:
        """Run an UPDATE or DELETE `query` with `params`."""
        self._parts.append((query, "execute", params, expect_one))

    def answer(self, **columns: Any) -> None:
        """Have the statement answer these SQL expressions too (PostgreSQL only)."""
        self._answers.update(columns)

    async def run(self, conn: AsyncConnection) -> Any:
        """Write the parts; on PostgreSQL with answers, the row of them."""
        parts, self._parts = self._parts, []
        answers = self._answers
        if answers and (conn.dialect.name != "postgresql" or len(parts) < 2):
            raise RuntimeError("answers come from PostgreSQL's one statement of several parts")
        if not parts:
            return None
        if conn.dialect.name == "postgresql" and not driver_of(conn).is_in_transaction():
            # Outside a transaction (a one-statement write: WriteContext.run) every statement
            # commits by itself: only one statement with nothing to check after it is all or
            # nothing. A check that failed would answer 409 over a write already committed.
            many_rows = parts[0][1] == "insert" and len(parts[0][2]) > MULTI_ROW_MAX
            if any(part[3] for part in parts) or (len(parts) == 1 and many_rows):
                raise RuntimeError("outside a transaction, a Batch must be one statement")
        if conn.dialect.name != "postgresql" or len(parts) == 1:
            for query, kind, values, expect_one in parts:
                if kind == "insert":
                    await query.insert_many(conn, values)
                elif expect_one:
                    if await query.changed(conn, values) != 1:
                        raise _lost_race()
                else:
                    await query.execute(conn, values)
            return None
        combined = _combine(parts, answers)
        record = await _fetchrow(conn, *combined.arguments(conn, parts, self._params))
        if any(record[i] != 1 for i in range(combined.checks)):
            raise _lost_race()
        return Row(record) if answers else None


def _lost_race() -> Exception:
    from app.core.errors import Conflict

    return Conflict("The record was changed by another request at the same time; retry.")


_MISSING = object()
Part = tuple[Query, str, Any, bool]  # query, "insert" or "execute", rows or params, expect_one


class _Combined:
    """A batch shape's one statement, and where each of its positional arguments comes from
    (worked out once per shape: a write's hundred-odd arguments are then gathered straight from
    the parts, with no renamed-parameter dict in between). Consecutive arguments from one row
    of an INSERT, none of them JSON, are taken together (`itemgetter`, in C)."""

    __slots__ = ("checks", "origins", "query", "sources")

    def __init__(self, query: Query, origins: dict[str, tuple[int, int, str]], checks: int) -> None:
        self.query = query
        # parameter name -> (part, row, key): row -1 for a statement's params
        self.origins = origins
        self.checks = checks  # the answer's first columns: rows changed by expect_one parts
        # per run of arguments: (part, row, getter of a run of a row's values, or else key,
        # literal, is_json); part -1: a literal of the statement or else a batch's param
        self.sources: list[tuple[int, int, Any, Any, bool]] | None = None

    def _sources(self, names: Sequence[str], literals: Mapping[str, Any]) -> list[Any]:
        sources: list[Any] = []
        run: list[str] = []  # keys of the row being gathered
        for name in names:
            part, row, key = self.origins.get(name, (-1, -1, name))
            is_json = name in self.query.json
            if row >= 0 and not is_json:
                if run and sources[-1][:2] == (part, row):
                    run.append(key)
                    continue
                run = [key]
                sources.append((part, row, run, _MISSING, False))
            else:
                run = []
                sources.append((part, row, key, literals.get(name, _MISSING), is_json))
        # a run's keys become one getter of a tuple of values
        return [
            (part, row, _getter(key) if isinstance(key, list) else key, literal, is_json)
            for part, row, key, literal, is_json in sources
        ]

    def arguments(
        self, conn: AsyncConnection, parts: Sequence[Part], params: Mapping[str, Any]
    ) -> tuple[str, list[Any]]:
        sql, names, literals = self.query.compiled(conn)
        sources = self.sources
        if sources is None:
            sources = self.sources = self._sources(names, literals)
        args: list[Any] = []
        for part, row, key, literal, is_json in sources:
            if row >= 0 and not is_json:
                args += key(parts[part][2][row])
                continue
            if part < 0:
                value = params.get(key, _MISSING) if literal is _MISSING else literal
            elif row < 0:
                value = parts[part][2].get(key, literal)
            else:
                value = parts[part][2][row][key]
            if value is _MISSING:
                raise KeyError(key)
            args.append(json_dumps(value) if is_json else value)
        return sql, args


def _getter(keys: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    if len(keys) == 1:
        key = keys[0]
        return lambda row: (row[key],)
    return itemgetter(*keys)


_combined: dict[tuple[Any, ...], _Combined] = {}


def _combine(parts: Sequence[Part], answers: Mapping[str, Any]) -> _Combined:
    """One statement for the parts, composed and compiled once per shape."""
    key = tuple(
        (id(query), tuple(values[0]), len(values)) if kind == "insert" else (id(query), flag)
        for query, kind, values, flag in parts
    ) + tuple((name, id(column)) for name, column in answers.items())
    combined = _combined.get(key)
    if combined is None:
        combined = _combined[key] = _compose(parts, answers)
    return combined


def _compose(parts: Sequence[Part], answers: Mapping[str, Any]) -> _Combined:
    """The parts as one statement of CTEs, and where each of its parameters comes from."""
    ctes: list[Any] = []
    checks: list[Any] = []
    json: set[str] = set()
    origins: dict[str, tuple[int, int, str]] = {}
    for number, (query, kind, values, expect_one) in enumerate(parts):
        prefix = f"p{number}_"
        if kind == "insert":
            columns = tuple(values[0])
            rows = []
            for i in range(len(values)):
                names = {c: f"{prefix}r{i}_{c}" for c in columns}
                origins.update({name: (number, i, c) for c, name in names.items()})
                json |= {name for c, name in names.items() if c in query.json}
                rows.append(query._row({c: bindparam(name) for c, name in names.items()}))
            statement = query._base.values(rows)
        else:
            renamed: dict[str, str] = {}
            statement = _renamed(query.statement, prefix, renamed)
            origins.update({name: (number, -1, key) for name, key in renamed.items()})
            json |= {prefix + name for name in query.json}
            if expect_one:
                statement = statement.returning(literal_column("1"))
        cte = statement.cte(f"p{number}")
        ctes.append(cte)
        if expect_one:
            checks.append(select(func.count()).select_from(cte).scalar_subquery())
    answer = [
        *checks,
        *(column.label(name) for name, column in answers.items()),
    ] or [literal_column("1")]
    return _Combined(Query(select(*answer).add_cte(*ctes), json=json), origins, len(checks))
