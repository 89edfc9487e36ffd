"""The priority matrix: impact x urgency -> priority (1 highest - 5 lowest).

Pure derivation plus its one-row storage. Changing the matrix affects records created or
reclassified afterwards; existing priorities are not recomputed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, model_validator
from sqlalchemy import Column, Integer, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import JSON

from app.core.changelog import Change
from app.core.concurrency import check_if_match, parse_if_match
from app.core.context import Context
from app.core.db import metadata, record_columns
from app.core.errors import PreconditionFailed
from app.core.schemas import InputModel, OutputModel
from app.core.sql import Query

LEVELS = (1, 2, 3)
Matrix = Mapping[int, Mapping[int, int]]

DEFAULT_MATRIX: dict[int, dict[int, int]] = {
    1: {1: 1, 2: 2, 3: 3},
    2: {1: 2, 2: 3, 3: 4},
    3: {1: 3, 2: 4, 3: 5},
}

# The matrix is a singleton; the change log still wants an id for it.
_MATRIX_ENTITY_ID = uuid.UUID("00000000-0000-7000-8000-000000000001")

priority_matrix = Table(
    "priority_matrix",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("matrix", JSON, nullable=False),
    *record_columns(),
)


def derive_priority(matrix: Matrix, impact: int, urgency: int) -> int:
    return matrix[impact][urgency]


Priority = Annotated[int, Field(ge=1, le=5)]


class PriorityMatrixBody(InputModel):
    matrix: dict[int, dict[int, Priority]] = Field(
        description="impact (1-3) -> urgency (1-3) -> priority (1-5); keys are strings in JSON",
        examples=[
            {
                "1": {"1": 1, "2": 2, "3": 3},
                "2": {"1": 2, "2": 3, "3": 4},
                "3": {"1": 3, "2": 4, "3": 5},
            }
        ],
    )

    @model_validator(mode="after")
    def _complete(self) -> PriorityMatrixBody:
        if sorted(self.matrix) != list(LEVELS) or any(
            sorted(row) != list(LEVELS) for row in self.matrix.values()
        ):
            raise ValueError("the matrix needs exactly impacts 1-3, each with urgencies 1-3")
        return self


class PriorityMatrixRead(OutputModel):
    matrix: dict[int, dict[int, int]]
    version: int


def _from_json(stored: Mapping[str, Any]) -> dict[int, dict[int, int]]:
    return {int(i): {int(u): int(p) for u, p in row.items()} for i, row in stored.items()}


_MATRIX = Query(
    select(priority_matrix.c.matrix, priority_matrix.c.version).where(priority_matrix.c.id == 1)
)


async def load_matrix(conn: AsyncConnection) -> tuple[dict[int, dict[int, int]], int]:
    row = await _MATRIX.first(conn)
    if row is None:
        return DEFAULT_MATRIX, 0
    return _from_json(row.matrix), row.version


async def save_matrix(
    conn: AsyncConnection, *, ctx: Context, matrix: Matrix, if_match: str | None = None
) -> PriorityMatrixRead:
    """Replace the matrix (version 0 until it is first saved). With `If-Match`, only the
    version it names is replaced: checked on the locked row, and again by the write itself
    (two first saves racing both saw no row)."""
    stored = {str(i): {str(u): p for u, p in row.items()} for i, row in matrix.items()}
    seen: int | None = None
    if parse_if_match(if_match) is not None:  # `*` matches whatever version it is
        locked = select(priority_matrix.c.version).where(priority_matrix.c.id == 1)
        seen = (await conn.execute(locked.with_for_update())).scalar_one_or_none() or 0
        check_if_match(if_match, seen)
    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(priority_matrix).values(
        id=1, matrix=stored, created_at=ctx.now, updated_at=ctx.now, version=1
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[priority_matrix.c.id],
        set_={"matrix": stored, "updated_at": ctx.now, "version": priority_matrix.c.version + 1},
        where=None if seen is None else priority_matrix.c.version == seen,
    ).returning(priority_matrix.c.version)
    version = (await conn.execute(stmt)).scalar_one_or_none()
    if version is None:  # saved by another request since it was read (two first saves)
        raise PreconditionFailed(
            f"The priority matrix changed: it is no longer at version {seen}, which If-Match "
            "named. Fetch it again and retry."
        )
    view = PriorityMatrixRead(matrix=_from_json(stored), version=version)
    await ctx.log_changes(
        conn,
        Change(
            "priority_matrix",
            _MATRIX_ENTITY_ID,
            "priority_matrix.updated",
            view.model_dump(mode="json"),
            version,
        ),
    )
    return view
