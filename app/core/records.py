"""Statements every record table shares: insert, fetch (optionally locked), versioned update."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, ColumnElement, Row, Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.changelog import Change
from app.core.concurrency import check_if_match
from app.core.context import Context
from app.core.errors import Conflict, NotFound
from app.core.ids import new_id
from app.core.pagination import Keyset, PageParams, timestamp_key
from app.core.sql import Batch, Query, as_dict
from app.core.sql import Row as SqlRow


def json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))


_inserts: dict[str, Query] = {}
_updates: dict[tuple[str, frozenset[str], bool], Query] = {}


def inserting(table: Table) -> Query:
    """`INSERT INTO table .. RETURNING *` as a hot-path query (one per table)."""
    query = _inserts.get(table.name)
    if query is None:
        query = _inserts[table.name] = Query(
            insert(table).returning(table), json=json_columns(table)
        )
    return query


def _versioned(
    current: Row[Any], changes: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values a versioned update writes, and the parameters of `_updating`'s query."""
    values = {**changes, "updated_at": now, "version": current.version + 1}
    params = {f"_set_{name}": value for name, value in values.items()}
    params.update(_id=current.id, _version=current.version)
    return values, params


def _updating(table: Table, columns: frozenset[str], *, returning: bool = True) -> Query:
    """A versioned `UPDATE` of these columns (one query per set of columns), answering the
    updated row (`RETURNING *`) or nothing."""
    query = _updates.get((table.name, columns, returning))
    if query is None:
        stmt = (
            update(table)
            .where(table.c.id == bindparam("_id"), table.c.version == bindparam("_version"))
            .values({name: bindparam(f"_set_{name}") for name in columns})
        )
        if returning:
            stmt = stmt.returning(table)
        json = {f"_set_{name}" for name in columns & json_columns(table)}
        query = _updates[table.name, columns, returning] = Query(stmt, json=json)
    return query


async def insert_record(
    conn: AsyncConnection, table: Table, values: Mapping[str, Any], *, now: datetime
) -> Row[Any]:
    row = {"id": new_id(), "created_at": now, "updated_at": now, "version": 1, **values}
    inserted: Row[Any] = await inserting(table).insert(conn, row)
    return inserted


async def fetch_record(
    conn: AsyncConnection,
    table: Table,
    record_id: uuid.UUID,
    *conditions: ColumnElement[bool],
    lock: bool = False,
) -> Row[Any] | None:
    """One row by id, further narrowed by `conditions` (tenancy); locked for update if asked."""
    stmt = select(table).where(table.c.id == record_id, *conditions)
    if lock:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


async def update_record(
    conn: AsyncConnection,
    table: Table,
    current: Row[Any],
    changes: Mapping[str, Any],
    *,
    now: datetime,
) -> Row[Any]:
    """Write `changes` and bump the version, only if nobody else wrote the row meanwhile."""
    values, params = _versioned(current, changes, now)
    row: Row[Any] | None = await _updating(table, frozenset(values)).first(conn, params)
    if row is None:
        raise Conflict("The record was changed by another request at the same time; retry.")
    return row


def update_into(
    batch: Batch,
    table: Table,
    current: Row[Any],
    changes: Mapping[str, Any],
    *,
    now: datetime,
) -> SqlRow:
    """`update_record` as part of a write batch: answers the row as the update leaves it
    (computed here: the tables have no defaults or triggers on update), and the batch fails
    with Conflict if the row's version moved on meanwhile."""
    values, params = _versioned(current, changes, now)
    batch.execute(_updating(table, frozenset(values), returning=False), params, expect_one=True)
    return SqlRow({**as_dict(current._mapping), **values})


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class RecordStore:
    """Create, change, fetch and list one kind of simple record, with the rules every record
    shares: unique columns answer 409, `If-Match` answers 412, every write is change-logged."""

    def __init__(
        self,
        table: Table,
        *,
        entity: str,
        view: Callable[[Row[Any]], BaseModel],
        unique: Sequence[str] = (),
    ) -> None:
        self.table = table
        self.entity = entity
        self.view = view
        self.unique = tuple(unique)
        self.keyset_keys = {
            name: timestamp_key(name, table.c[name]) for name in ("created_at", "updated_at")
        }

    async def check_unique(
        self, conn: AsyncConnection, values: Mapping[str, Any], exclude: uuid.UUID | None = None
    ) -> None:
        for column in self.unique:
            if values.get(column) is None:
                continue
            stmt = select(self.table.c.id).where(self.table.c[column] == values[column])
            if exclude is not None:
                stmt = stmt.where(self.table.c.id != exclude)
            if (await conn.execute(stmt.limit(1))).first() is not None:
                raise Conflict(
                    f"A {self.entity} with {column} {values[column]!r} already exists.",
                    slug="duplicate",
                )

    async def create(
        self, conn: AsyncConnection, ctx: Context, values: Mapping[str, Any]
    ) -> Row[Any]:
        await self.check_unique(conn, values)
        row = await insert_record(conn, self.table, values, now=ctx.now)
        await self.log(conn, ctx, row, "created")
        return row

    async def get(
        self,
        conn: AsyncConnection,
        record_id: uuid.UUID,
        *conditions: ColumnElement[bool],
        lock: bool = False,
    ) -> Row[Any]:
        row = await fetch_record(conn, self.table, record_id, *conditions, lock=lock)
        if row is None:
            raise NotFound(f"No {self.entity} {record_id}.")
        return row

    async def update(
        self,
        conn: AsyncConnection,
        ctx: Context,
        current: Row[Any],
        changes: Mapping[str, Any],
        *,
        if_match: str | None,
    ) -> Row[Any]:
        check_if_match(if_match, current.version)
        changes = {k: v for k, v in changes.items() if getattr(current, k) != v}
        if not changes:
            return current
        await self.check_unique(conn, changes, exclude=current.id)
        row = await update_record(conn, self.table, current, changes, now=ctx.now)
        await self.log(conn, ctx, row, "updated")
        return row

    async def log(self, conn: AsyncConnection, ctx: Context, row: Row[Any], event: str) -> None:
        data = self.view(row).model_dump(mode="json")
        await ctx.log_changes(
            conn, Change(self.entity, row.id, f"{self.entity}.{event}", data, row.version)
        )

    async def page(
        self,
        conn: AsyncConnection,
        params: PageParams,
        *conditions: ColumnElement[bool],
    ) -> tuple[Sequence[Row[Any]], str | None]:
        keyset = Keyset.choose(params.sort, self.keyset_keys, self.table.c.id, "-created_at")
        created = self.table.c.created_at
        if params.created_after is not None:
            conditions = (*conditions, created >= params.created_after)
        if params.created_before is not None:
            conditions = (*conditions, created < params.created_before)
        stmt = keyset.apply(select(self.table).where(*conditions), params)
        rows = (await conn.execute(stmt)).all()
        return keyset.page(rows, params)
