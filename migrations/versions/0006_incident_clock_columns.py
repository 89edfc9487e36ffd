"""incidents: a copy of what showing their SLA clocks needs

Per kind of clock (`response`, `resolution`), the fields of `sla_clocks` that an incident's
`sla` is made of, on the incident's row (app/slm/models.py), so that an incident or a page of
them is read with its `sla` in one statement. Existing incidents get them from their clocks.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 10:00:00
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("response", "resolution")
FIELDS: dict[str, Callable[[], Any]] = {
    "agreement_id": sa.Uuid,
    "calendar_id": sa.Uuid,
    "calendar_version": sa.Integer,
    "target_seconds": sa.Integer,
    "mode": lambda: sa.String(10),
    "elapsed_closed_us": sa.BigInteger,
    "running_since": lambda: sa.DateTime(timezone=True),
    "due_at": lambda: sa.DateTime(timezone=True),
    "stopped_at": lambda: sa.DateTime(timezone=True),
}


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        for kind in KINDS:
            for field, type_ in FIELDS.items():
                batch_op.add_column(sa.Column(f"sla_{kind}_{field}", type_(), nullable=True))

    clocks = sa.table(
        "sla_clocks",
        sa.column("incident_id", sa.Uuid()),
        sa.column("kind", sa.String()),
        *(sa.column(field, type_()) for field, type_ in FIELDS.items()),
    )
    for kind in KINDS:
        incidents = sa.table(
            "incidents",
            sa.column("id", sa.Uuid()),
            *(sa.column(f"sla_{kind}_{field}", type_()) for field, type_ in FIELDS.items()),
        )
        op.execute(
            sa.update(incidents)
            .where(clocks.c.incident_id == incidents.c.id, clocks.c.kind == kind)
            .values({f"sla_{kind}_{field}": clocks.c[field] for field in FIELDS})
        )


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        for kind in KINDS:
            for field in FIELDS:
                batch_op.drop_column(f"sla_{kind}_{field}")
