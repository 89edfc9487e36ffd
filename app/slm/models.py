"""Service-level tables: business calendars, agreements, and the SLA clocks of incidents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Uuid,
)
from sqlalchemy.types import JSON

from app.core.db import UTCDateTime, id_column, metadata, record_columns
from app.slm.clocks import Kind

calendars = Table(
    "calendars",
    metadata,
    id_column(),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("always_on", Boolean, nullable=False),
    Column("hours", JSON, nullable=False),  # {"mon": [["09:00", "18:00"]], ...}
    Column("holidays", JSON, nullable=False),  # ["2026-01-01", ...]
    *record_columns(),
)

agreements = Table(
    "agreements",
    metadata,
    id_column(),
    Column("name", String(200), nullable=False),
    Column("organization_id", Uuid, ForeignKey("organizations.id"), nullable=True, index=True),
    Column("service_id", Uuid, ForeignKey("services.id"), nullable=True, index=True),
    Column("calendar_id", Uuid, ForeignKey("calendars.id"), nullable=False),
    Column("warn_at_percent", SmallInteger, nullable=False),
    # [{"priority", "response_seconds", "resolution_seconds", "calendar_id"?}, ...]
    Column("targets", JSON, nullable=False),
    *record_columns(),
)

# One row per clock of an incident. The clock is stored as the working-time segments it ran
# ([start, end-or-null] pairs) and a snapshot of the calendar it counts on, so that
# re-targeting needs nothing else. Derived on every write: the scheduling columns (`due_at`,
# `breach_at`, `next_check_at`, which the SLA worker polls through an index) and what reading
# the clock needs without decoding JSON (`running_since`, `elapsed_closed_us`, and
# `calendar_version`, which names the snapshot for the process's cache of parsed calendars).
sla_clocks = Table(
    "sla_clocks",
    metadata,
    Column("incident_id", Uuid, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),
    # Which agreement and calendar the clock was started from: labels, without foreign keys
    # (like the incident row's copy of them). The clock carries what it counts with (its
    # target, its calendar's snapshot), agreements and calendars are never deleted (they are
    # versioned), and a foreign key would have PostgreSQL check both rows and lock them
    # (FOR KEY SHARE) on every clock written: about a tenth of its work per new incident, on
    # the few rows that every concurrent create shares (migration 0007, bench/README.md).
    Column("agreement_id", Uuid, nullable=False),
    Column("calendar_id", Uuid, nullable=False),
    Column("calendar", JSON, nullable=False),
    Column("calendar_version", Integer, nullable=False),
    Column("target_seconds", Integer, nullable=False),
    Column("warn_at_percent", SmallInteger, nullable=False),
    Column("segments", JSON, nullable=False),
    Column("mode", String(10), nullable=False),  # running | paused | stopped
    Column("elapsed_closed_us", BigInteger, nullable=False),
    Column("running_since", UTCDateTime, nullable=True),
    Column("stopped_at", UTCDateTime, nullable=True),
    Column("due_at", UTCDateTime, nullable=True),
    Column("warn_at", UTCDateTime, nullable=True),
    Column("breach_at", UTCDateTime, nullable=True),
    Column("warned", Boolean, nullable=False),
    Column("breach_notified", Boolean, nullable=False),
    Column("next_check_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("incident_id", "kind"),
)
Index("ix_sla_clocks_next_check_at", sla_clocks.c.next_check_at)
Index("ix_sla_clocks_breach_at", sla_clocks.c.breach_at)


# What showing a clock needs (the fields of `sla_clocks` a clock's view is made of), also kept
# on its incident's row, one set of columns per kind (`sla_response_due_at`, ...), written with
# the clock in the same statement: an incident, or a page of fifty, is read with its `sla` in
# one statement, with no second read of the clocks. All null: no clock of that kind.
CLOCK_KINDS = tuple(kind.value for kind in Kind)  # response first
SHOWN_CLOCK_FIELDS: dict[str, Any] = {  # field: column type
    "agreement_id": Uuid,
    "calendar_id": Uuid,
    "calendar_version": Integer,
    "target_seconds": Integer,
    "mode": String(10),
    "elapsed_closed_us": BigInteger,
    "running_since": UTCDateTime,
    "due_at": UTCDateTime,
    "stopped_at": UTCDateTime,
}


def shown_clock_column(kind: str, field: str) -> str:
    return f"sla_{kind}_{field}"


def shown_clock_columns() -> list[Column[object]]:
    """The incident row's copy of its clocks (for app/incidents/models.py)."""
    return [
        Column(shown_clock_column(kind, field), type_, nullable=True)
        for kind in CLOCK_KINDS
        for field, type_ in SHOWN_CLOCK_FIELDS.items()
    ]
