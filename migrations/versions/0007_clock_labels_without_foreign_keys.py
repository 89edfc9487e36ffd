"""sla_clocks: agreement_id and calendar_id without foreign keys

A clock carries what it counts with (its target and its calendar's snapshot); the agreement and
the calendar it was started from are labels, as they already are on the incident row's copy of
the clock (0006). Agreements and calendars are never deleted (they are versioned), while the
foreign keys had PostgreSQL check and lock (FOR KEY SHARE) both rows for every clock written:
about a tenth of its work per new incident (bench/README.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (constraint, column, referred table), named as app/core/db.py's convention names them
FOREIGN_KEYS = (
    ("fk_sla_clocks_agreement_id_agreements", "agreement_id", "agreements"),
    ("fk_sla_clocks_calendar_id_calendars", "calendar_id", "calendars"),
)


def upgrade() -> None:
    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        for name, _, _ in FOREIGN_KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("sla_clocks", schema=None) as batch_op:
        for name, column, table in FOREIGN_KEYS:
            batch_op.create_foreign_key(name, table, [column], ["id"])
