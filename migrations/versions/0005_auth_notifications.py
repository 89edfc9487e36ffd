"""auth notifications: any change to users or api_keys notifies `sdms_auth` (PostgreSQL)

Processes cache who holds an API key while they LISTEN on that channel
(app/identity/principals.py); these triggers tell them of every change, whoever makes it.
SQLite has no notifications: nothing to do there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("users", "api_keys")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION sdms_notify_auth() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sdms_auth', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify_auth AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION sdms_notify_auth()"
        )
        # Also when triggers are off for replication or a restore (session_replication_role).
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_notify_auth")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_notify_auth ON {table}")
    op.execute("DROP FUNCTION sdms_notify_auth()")
