"""config versions: counters that tell processes their cached configuration is current

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 23:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "config_versions",
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_config_versions")),
    )
    op.bulk_insert(table, [{"name": "slm", "version": 1}])


def downgrade() -> None:
    op.drop_table("config_versions")
