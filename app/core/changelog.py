"""The change log: an append-only table written in the same transaction as the change it
describes (the transactional outbox). Webhooks, regional sync and SLA events read from it.

Ordering. `seq` comes from a sequence, so it is unique and increasing in the order rows were
*written*, which is not always the order transactions *commit*. On PostgreSQL every row also
records the writing transaction's id (`tx_id`, from `txid_current()`). A reader that must
never skip a row reads only rows with
`tx_id < txid_snapshot_xmin(txid_current_snapshot())` (all such transactions have ended),
in `(tx_id, seq)` order. On SQLite writers are serialised, so `seq` order is commit order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Index,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    cast,
    func,
    insert,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import JSON

from app.core.db import BigIntPK, UTCDateTime, json_dumps, metadata
from app.core.sql import Batch, Query

change_log = Table(
    "change_log",
    metadata,
    Column("seq", BigIntPK, primary_key=True, autoincrement=True),
    Column("tx_id", BigInteger, nullable=True),
    Column("region", String(10), nullable=False),
    Column("entity", String(40), nullable=False),
    Column("entity_id", Uuid, nullable=False),
    Column("entity_version", Integer, nullable=True),
    Column("event", String(60), nullable=False),
    Column("data", JSON, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
)
Index("ix_change_log_entity", change_log.c.entity, change_log.c.entity_id)


# On PostgreSQL each row also records its transaction (see the module docstring).
_APPEND = {
    "postgresql": Query(
        insert(change_log), json=("data",), row_values={"tx_id": func.txid_current()}
    ),
    "sqlite": Query(insert(change_log), json=("data",)),
}


@dataclass(frozen=True, slots=True)
class Change:
    entity: str
    entity_id: uuid.UUID
    event: str
    data: dict[str, Any]
    version: int | None = None


def rows(*, region: str, occurred_at: datetime, changes: Sequence[Change]) -> list[dict[str, Any]]:
    return [
        {
            "region": region,
            "entity": c.entity,
            "entity_id": c.entity_id,
            "entity_version": c.version,
            "event": c.event,
            "data": c.data,
            "occurred_at": occurred_at,
        }
        for c in changes
    ]


def _filling(placeholder: str, value: ColumnElement[str]) -> Query:
    key = (placeholder, id(value))
    query = _FILLING.get(key)
    if query is None:
        quoted = json_dumps(placeholder)  # as the data's JSON text holds it
        # null (the value not computed) writes null: a statement whose record number was not
        # drawn fails on that record's NOT NULL number, not here
        as_json = func.coalesce(cast(func.to_json(value), Text), "null")

        def filled(data: Any) -> Any:
            return cast(func.replace(cast(data, Text), quoted, as_json), JSON)

        query = _FILLING[key] = Query(
            insert(change_log),
            json=("data",),
            row_values={"tx_id": func.txid_current()},
            wrapped={"data": filled},
        )
    return query


_FILLING: dict[tuple[str, int], Query] = {}


def append_to(
    batch: Batch,
    *,
    dialect: str,
    region: str,
    occurred_at: datetime,
    changes: Sequence[Change],
    fill: tuple[str, ColumnElement[str]] | None = None,
) -> None:
    """Append changes with the transaction's other writes (app/core/sql.py Batch).

    `fill` (PostgreSQL): a placeholder string in the changes' data and an SQL value computed by
    the batch's statement (a record's number: app/itil/numbers.py): the placeholder's JSON
    text is replaced by the value's, a plain text replacement (a string placeholder is quoted
    in JSON, so it cannot match a part of another string)."""
    query = _APPEND[dialect] if fill is None else _filling(*fill)
    batch.insert(query, rows(region=region, occurred_at=occurred_at, changes=changes))


async def append(
    conn: AsyncConnection, *, region: str, occurred_at: datetime, changes: Sequence[Change]
) -> None:
    """Append changes inside the caller's transaction (one statement for all of them)."""
    if changes:
        await _APPEND[conn.dialect.name].insert_many(
            conn, rows(region=region, occurred_at=occurred_at, changes=changes)
        )
