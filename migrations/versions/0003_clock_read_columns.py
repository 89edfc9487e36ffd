"""sla clocks: running_since and calendar_version columns

Reading a clock then needs no JSON: `running_since` is the start of its open segment and
`calendar_version` names its calendar snapshot (see app/slm/models.py). Existing clocks are
filled in from the segments and snapshots they already have.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 23:30:41.240057
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

clocks = sa.table(
    "sla_clocks",
    sa.column("incident_id", sa.Uuid()),
    sa.column("kind", sa.String()),
    sa.column("calendar", sa.JSON()),
    sa.column("segments", sa.JSON()),
    sa.column("calendar_version", sa.Integer()),
    sa.column("running_since", sa.DateTime(timezone=True)),
)


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calendar_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("running_since", sa.DateTime(timezone=True), nullable=True))

    bind = op.get_bind()
    rows = bind.execute(
        sa.select(clocks.c.incident_id, clocks.c.kind, clocks.c.calendar, clocks.c.segments)
    ).all()
    for incident_id, kind, calendar, segments in rows:
        calendar, segments = _json(calendar), _json(segments)
        assert isinstance(calendar, dict) and isinstance(segments, list)
        last = segments[-1] if segments else None
        running_since = datetime.fromisoformat(last[0]) if last and last[1] is None else None
        bind.execute(
            sa.update(clocks)
            .where(clocks.c.incident_id == incident_id, clocks.c.kind == kind)
            .values(calendar_version=calendar["version"], running_since=running_since)
        )

    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        batch_op.alter_column("calendar_version", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        batch_op.drop_column("running_since")
        batch_op.drop_column("calendar_version")
