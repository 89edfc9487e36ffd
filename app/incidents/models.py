"""Incident tables: the incident record and its escalations."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
)

from app.core.db import UTCDateTime, id_column, metadata, record_columns
from app.slm.models import shown_clock_columns

incidents = Table(
    "incidents",
    metadata,
    id_column(),
    Column("number", String(32), nullable=False, unique=True),
    Column("region", String(10), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("organization_id", Uuid, ForeignKey("organizations.id"), nullable=False),
    Column("service_id", Uuid, ForeignKey("services.id"), nullable=True),
    Column("category", String(100), nullable=True),
    Column("channel", String(20), nullable=False),
    Column("contact_email", String(254), nullable=True),
    Column("impact", SmallInteger, nullable=False),
    Column("urgency", SmallInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("state", String(20), nullable=False),
    Column("hold_reason", String(30), nullable=True),
    Column("assignee_id", Uuid, ForeignKey("users.id"), nullable=True, index=True),
    Column("group_id", Uuid, ForeignKey("groups.id"), nullable=True, index=True),
    Column("major", Boolean, nullable=False),
    Column("request_type", String(30), nullable=False),
    Column("estimated_resolution_at", UTCDateTime, nullable=True),
    Column("resolution_code", String(40), nullable=True),
    Column("resolution_notes", Text, nullable=True),
    Column("escalation_level", SmallInteger, nullable=False),
    Column("reopen_count", Integer, nullable=False),
    # Problems and changes arrive with their own processes; until then these stay empty.
    Column("problem_id", Uuid, nullable=True),
    Column("caused_by_change_id", Uuid, nullable=True),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("responded_at", UTCDateTime, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("created_by_id", Uuid, nullable=True),
    # The ETA watch: when to emit `incident.eta_exceeded`, and for which ETA it was emitted.
    Column("eta_alert_at", UTCDateTime, nullable=True),
    Column("eta_alerted_for", UTCDateTime, nullable=True),
    # The SLA clocks as shown (`sla`): a copy kept by app/slm/service.py (see app/slm/models.py).
    *shown_clock_columns(),
    *record_columns(),
)
Index("ix_incidents_created", incidents.c.created_at, incidents.c.id)
Index(
    "ix_incidents_org_state_created",
    incidents.c.organization_id,
    incidents.c.state,
    incidents.c.created_at,
    incidents.c.id,
)
Index("ix_incidents_state_created", incidents.c.state, incidents.c.created_at, incidents.c.id)
Index("ix_incidents_state_resolved", incidents.c.state, incidents.c.resolved_at)
Index("ix_incidents_eta_alert_at", incidents.c.eta_alert_at)
Index("ix_incidents_opened_at", incidents.c.opened_at)

escalations = Table(
    "escalations",
    metadata,
    id_column(),
    Column("incident_id", Uuid, ForeignKey("incidents.id"), nullable=False, index=True),
    Column("escalation_level", SmallInteger, nullable=False),
    Column("reason", String(40), nullable=False),
    Column("note", Text, nullable=True),
    Column("created_by_id", Uuid, nullable=True),
    Column("created_by_role", String(20), nullable=True),  # when escalating; null: SDMS itself
    Column("created_at", UTCDateTime, nullable=False),
)
