"""escalations: the author's role when escalating, as journal entries keep theirs

Customers see the note and the author of an escalation only when a customer made it; the role
it was made in decides, not the author's role today. Escalations made before get their
author's present role (null for SDMS itself and the built-in admin key, as before).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 20:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_role", sa.String(length=20), nullable=True))
    op.execute(
        "UPDATE escalations SET created_by_role = "
        "(SELECT users.role FROM users WHERE users.id = escalations.created_by_id) "
        "WHERE created_by_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.drop_column("created_by_role")
