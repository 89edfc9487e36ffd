"""The journal of a record: comments and every field change (who, when, field, old, new).

Written once here and used by every process (incidents now; problems, changes and releases
as they come). Customers see public comments and state changes only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Index,
    Row,
    String,
    Table,
    Text,
    Uuid,
    insert,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import JSON

from app.core.auth import Principal, Role
from app.core.changelog import Change
from app.core.db import UTCDateTime, metadata
from app.core.ids import new_id
from app.core.pagination import Keyset, PageParams, timestamp_key
from app.core.schemas import OutputModel
from app.core.sql import Batch, Query

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("record_type", String(20), nullable=False),
    Column("record_id", Uuid, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("public", Boolean, nullable=False),
    Column("author_id", Uuid, nullable=True),
    Column("author_role", String(20), nullable=True),
    Column("body", Text, nullable=True),
    Column("field", String(60), nullable=True),
    Column("old", JSON, nullable=True),
    Column("new", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
Index(
    "ix_journal_entries_record",
    journal_entries.c.record_id,
    journal_entries.c.created_at,
    journal_entries.c.id,
)


_INSERT_ENTRIES = Query(insert(journal_entries), json=("old", "new"))


class EntryKind(StrEnum):
    comment = "comment"
    field_change = "field_change"


class JournalEntryRead(OutputModel):
    id: uuid.UUID
    record_type: str
    record_id: uuid.UUID
    kind: EntryKind
    public: bool
    author_id: uuid.UUID | None = Field(
        description="null for changes made by SDMS itself or the bootstrap key; customers see "
        "it for entries written by customers only (of staff, the role alone)"
    )
    author_role: str | None = Field(
        default=None, description="the author's role when writing; null for SDMS itself"
    )
    body: str | None = Field(
        description="the comment, or the note given with a state change (its reason, shown "
        "with the state change to customers too)"
    )
    field: str | None
    old: Any = None
    new: Any = None
    created_at: datetime


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


class JournalWriter:
    """Collects the entries of one write, then inserts them and their change-log rows at once."""

    def __init__(
        self, record_type: str, record_id: uuid.UUID, author: Principal, now: datetime
    ) -> None:
        self.record_type = record_type
        self.record_id = record_id
        self.author_id = author.author_id
        self.author_role = author.author_role
        self.now = now
        self.rows: list[dict[str, Any]] = []

    def comment(self, body: str, *, public: bool) -> None:
        self._add(kind=EntryKind.comment, public=public, body=body)

    def field_changes(
        self, before: Mapping[Any, Any], changes: Mapping[str, Any], *, note: str | None = None
    ) -> None:
        """One entry per changed field. State changes are public; the note (a reason, a
        confirmation) goes with the state change, or with the first change when there is none."""
        changed = [f for f, new in changes.items() if before.get(f) != new]
        note_field = "state" if "state" in changed else (changed[0] if changed else None)
        for field in changed:
            self._add(
                kind=EntryKind.field_change,
                public=field == "state",
                field=field,
                old=_json_value(before.get(field)),
                new=_json_value(changes[field]),
                body=note if field == note_field else None,
            )

    def _add(self, **values: Any) -> None:
        self.rows.append(
            {
                "id": new_id(),
                "record_type": self.record_type,
                "record_id": self.record_id,
                "author_id": self.author_id,
                "author_role": self.author_role,
                "created_at": self.now,
                "body": None,
                "field": None,
                "old": None,
                "new": None,
                **values,
            }
        )

    def changes(self) -> list[Change]:
        return [
            Change(
                "journal_entry",
                row["id"],
                "journal_entry.created",
                JournalEntryRead.model_validate(row).model_dump(mode="json"),
            )
            for row in self.rows
        ]

    def into(self, batch: Batch) -> list[Change]:
        """Add the collected entries to the write batch; returns their change-log rows for the
        caller to append."""
        if not self.rows:
            return []
        batch.insert(_INSERT_ENTRIES, self.rows)
        return self.changes()

    @property
    def public_comment_written(self) -> bool:
        return any(r["kind"] == EntryKind.comment and r["public"] for r in self.rows)


def public_only() -> ColumnElement[bool]:
    """What a customer may read: public comments and state changes."""
    return or_(
        (journal_entries.c.kind == EntryKind.comment) & journal_entries.c.public.is_(True),
        (journal_entries.c.kind == EntryKind.field_change) & (journal_entries.c.field == "state"),
    )


def entry_views(rows: Sequence[Row[Any]], *, customer_view: bool) -> list[JournalEntryRead]:
    """Entries as the caller may see them: customers learn the role of a staff author, not who
    it is (as an incident's `assignee_id` and `created_by_id`, staff identities are internal)."""
    views = [JournalEntryRead.model_validate(r) for r in rows]
    if not customer_view:
        return views
    return [
        v if v.author_role in (None, Role.customer) else v.model_copy(update={"author_id": None})
        for v in views
    ]


async def list_entries(
    conn: AsyncConnection, *, record_id: uuid.UUID, params: PageParams, customer_view: bool
) -> tuple[Sequence[Row[Any]], str | None]:
    keyset = Keyset.choose(
        params.sort,
        {"created_at": timestamp_key("created_at", journal_entries.c.created_at)},
        journal_entries.c.id,
        "created_at",
        within=record_id,
    )
    stmt = select(journal_entries).where(journal_entries.c.record_id == record_id)
    if customer_view:
        stmt = stmt.where(public_only())
    rows = (await conn.execute(keyset.apply(stmt, params))).all()
    return keyset.page(rows, params)
