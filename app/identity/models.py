"""Identity and tenancy tables: organizations, users and their API keys, groups, contacts,
services."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    Uuid,
)

from app.core.db import UTCDateTime, id_column, metadata, record_columns

organizations = Table(
    "organizations",
    metadata,
    id_column(),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    # No foreign key: users reference organizations, and a cycle would complicate SQLite DDL;
    # the service checks that the account manager exists and is staff.
    Column("account_manager_id", Uuid, nullable=True),
    *record_columns(),
)

users = Table(
    "users",
    metadata,
    id_column(),
    Column("email", String(254), nullable=True, unique=True),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("organization_id", Uuid, ForeignKey("organizations.id"), nullable=True, index=True),
    Column("active", Boolean, nullable=False, default=True),
    *record_columns(),
)

groups = Table(
    "groups",
    metadata,
    id_column(),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=True),
    *record_columns(),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Uuid, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)
Index("ix_user_groups_group_id", user_groups.c.group_id)

api_keys = Table(
    "api_keys",
    metadata,
    id_column(),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    # 1 when issued, 2 once revoked (the ETag of its answers; migration 0008)
    Column("version", Integer, nullable=False, server_default="1"),
)

contacts = Table(
    "contacts",
    metadata,
    id_column(),
    Column("organization_id", Uuid, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("phone", String(50), nullable=True),
    *record_columns(),
)

services = Table(
    "services",
    metadata,
    id_column(),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("owner_group_id", Uuid, ForeignKey("groups.id"), nullable=True),
    *record_columns(),
)
