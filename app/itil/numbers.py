"""Human record numbers: `INC-MSK-0000042` — type prefix, region, sequence.

PostgreSQL draws the sequence from a native sequence (no lock held until commit, so concurrent
creates do not queue; a rolled-back number is skipped, never reused), either on its own or
inside the statement that writes the record (`drawn_number`). SQLite has no sequences; its
writers are serialised anyway, so a counter row does the same job.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    Sequence,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import versions
from app.core.db import metadata
from app.core.sql import Query

RECORD_PREFIXES = ("INC", "PRB", "CHG", "REL")

record_counters = Table(
    "record_counters",
    metadata,
    Column("prefix", String(8), primary_key=True),
    Column("value", Integer, nullable=False),
)

sequences = {
    prefix: Sequence(f"{prefix.lower()}_number_seq", metadata=metadata)
    for prefix in RECORD_PREFIXES
}

NUMBER_PATTERN = re.compile(r"^(INC|PRB|CHG|REL)-([A-Z0-9]{2,10})-(\d{7,})$")


def format_number(prefix: str, region: str, value: int) -> str:
    return f"{prefix}-{region.upper()}-{value:07d}"


def looks_like_number(value: str, prefix: str) -> bool:
    match = NUMBER_PATTERN.match(value.upper())
    return match is not None and match.group(1) == prefix


@dataclass(frozen=True, slots=True)
class DrawnNumber:
    """A new number drawn inside the write statement that uses `value` (PostgreSQL's one
    statement of a Batch, app/core/sql.py), formatted as `format_number` formats it, with the
    region from the statement's `number_region` parameter. It is drawn once however often the
    statement uses it (a CTE). Where the guard is false, nothing is drawn and the number is
    null: the number column's NOT NULL then fails the whole statement (`not_drawn`).
    `placeholder` stands for the number in JSON written by the same statement (the change
    log's copy of the record: app/core/changelog.py `fill`)."""

    value: ColumnElement[str]
    placeholder: str

    @property
    def fill(self) -> tuple[str, ColumnElement[str]]:
        return self.placeholder, self.value


def drawn_number(prefix: str, guard: ColumnElement[bool]) -> DrawnNumber:
    value = select(sequences[prefix].next_value().label("value")).where(guard).subquery()
    digits = cast(value.c.value, Text)
    region = func.upper(bindparam("number_region", type_=String))
    padded = func.lpad(digits, func.greatest(7, func.length(digits)), "0")
    number = literal(f"{prefix}-", String) + region + "-" + padded
    drawn = select(number.label("number")).cte(f"drawn_{prefix.lower()}")
    # random: no text a client sends can be taken for it
    placeholder = f"{prefix} number drawn by the write {secrets.token_hex(16)}"
    return DrawnNumber(select(drawn.c.number).scalar_subquery(), placeholder)


def not_drawn(exc: BaseException) -> bool:
    """Whether a write failed because its guard kept it from drawing a number."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == NOT_NULL_VIOLATION and (
        getattr(orig, "column_name", None) == "number"
    )


NOT_NULL_VIOLATION = "23502"

_NEXT_VALUE_AND_VERSION = {
    (prefix, topic): Query(select(seq.next_value().label("value"), versions.version_of(topic)))
    for prefix, seq in sequences.items()
    for topic in ("slm",)
}
_NEXT_VALUE = {
    prefix: Query(select(seq.next_value().label("value"))) for prefix, seq in sequences.items()
}


async def next_number(conn: AsyncConnection, prefix: str, region: str) -> str:
    if conn.dialect.name == "postgresql":
        value = (await _NEXT_VALUE[prefix].first(conn)).value
    else:
        bump = (
            sqlite.insert(record_counters)
            .values(prefix=prefix, value=1)
            .on_conflict_do_update(
                index_elements=[record_counters.c.prefix],
                set_={"value": record_counters.c.value + 1},
            )
            .returning(record_counters.c.value)
        )
        value = (await conn.execute(bump)).scalar_one()
    return format_number(prefix, region, int(value))


async def next_number_and_version(
    conn: AsyncConnection, prefix: str, region: str, topic: str
) -> tuple[str, int]:
    """A new number and, in the same round trip on PostgreSQL, the version of cached
    configuration (app/core/versions.py)."""
    if conn.dialect.name == "postgresql":
        row = await _NEXT_VALUE_AND_VERSION[prefix, topic].first(conn)
        version = getattr(row, f"{topic}_version")
        return format_number(prefix, region, int(row.value)), int(version)
    return await next_number(conn, prefix, region), await versions.read(conn, topic)
