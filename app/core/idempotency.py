"""Idempotency-Key: a create repeated with the same key and body replays the first answer.

The key is claimed with `INSERT .. ON CONFLICT DO NOTHING` inside the same transaction as the
write it guards. On PostgreSQL a second request with the same key blocks on the unique index
until the first commits, then finds the stored answer: two racing requests never both create.
On SQLite writers are serialised (`BEGIN IMMEDIATE`), which gives the same guarantee.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Uuid,
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import JSON

from app.core.config import Settings
from app.core.db import Database, UTCDateTime, metadata
from app.core.errors import Conflict, ErrorItem, Unprocessable

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal_id", Uuid, nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("headers", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("principal_id", "key"),
)
Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at)

_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes
    headers: dict[str, str]


def validate_key(key: str) -> str:
    if not _VALID_KEY.match(key):
        raise Unprocessable.field(
            ("header", "Idempotency-Key"), "must be 1-255 printable ASCII characters"
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Same request = same method, path and JSON body (key order and whitespace do not count)."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


async def claim(
    conn: AsyncConnection, *, principal_id: uuid.UUID, key: str, fingerprint: str, now: datetime
) -> StoredResponse | None:
    """Claim the key for this request, or return the answer stored for it.

    Returns None when this request holds the key and should do the work.
    """
    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        dialect_insert(idempotency_keys)
        .values(principal_id=principal_id, key=key, fingerprint=fingerprint, created_at=now)
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.key)
    )
    if (await conn.execute(stmt)).first() is not None:
        return None
    row = (
        await conn.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.principal_id == principal_id, idempotency_keys.c.key == key
            )
        )
    ).one()
    if row.fingerprint != fingerprint:
        detail = (
            "This Idempotency-Key was already used with a different request body or path; "
            "use a new key for a new request."
        )
        raise Unprocessable(
            detail,
            errors=[ErrorItem(loc=["header", "Idempotency-Key"], msg=detail)],
            slug="idempotency-key-reused",
        )
    if row.status_code is None:  # cannot be seen after the claimer committed; be explicit anyway
        raise Conflict("A request with this Idempotency-Key is still being processed.")
    return StoredResponse(row.status_code, row.body, dict(row.headers or {}))


async def store(
    conn: AsyncConnection,
    *,
    principal_id: uuid.UUID,
    key: str,
    status_code: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    await conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.principal_id == principal_id, idempotency_keys.c.key == key)
        .values(status_code=status_code, body=body, headers=headers)
    )


async def purge_expired(conn: AsyncConnection, *, now: datetime, ttl: timedelta) -> int:
    result = await conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at < now - ttl)
    )
    return int(result.rowcount or 0)


async def purge_job(db: Database, settings: Settings, now: datetime) -> int:
    """Background job: forget keys older than `SDMS_IDEMPOTENCY_TTL_HOURS` (at least 24 h)."""
    async with db.transaction() as conn:
        return await purge_expired(
            conn, now=now, ttl=timedelta(hours=settings.idempotency_ttl_hours)
        )
