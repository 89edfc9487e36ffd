"""api_keys: a version, as every record has (1 when issued, 2 once revoked)

Answers about a key (issuing, revoking) carry its `ETag` like those of every other record.
Keys issued before are at version 1, or 2 if already revoked.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 19:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.execute("UPDATE api_keys SET version = 2 WHERE revoked_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("version")
