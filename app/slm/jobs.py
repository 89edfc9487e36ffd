"""The SLA event job: `sla.warning` and `sla.breached`, each once per clock.

Due clocks are found through the index on `next_check_at` (never a scan of open incidents).
Each batch locks the due clocks *and* their incidents with `FOR UPDATE .. SKIP LOCKED` on
PostgreSQL: a worker never waits for an incident being written (it skips it and comes back),
and PostgreSQL re-checks a clock row that another worker updated meanwhile, so two workers
never emit the same event. Incident writes lock the incident first and then its clocks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.auth import SYSTEM
from app.core.changelog import Change
from app.core.config import Settings
from app.core.context import Context
from app.core.db import Database
from app.incidents import lifecycle
from app.incidents.lifecycle import IncidentFacts
from app.incidents.models import incidents
from app.incidents.service import record_escalation
from app.slm.clocks import Kind
from app.slm.models import sla_clocks
from app.slm.service import clock_percent

BATCH = 100


async def sla_events(db: Database, settings: Settings, now: datetime) -> int:
    ctx = Context(SYSTEM, now, settings)
    async with db.transaction() as conn:
        due = (
            await conn.execute(
                select(sla_clocks, incidents.c.number)
                .join(incidents, incidents.c.id == sla_clocks.c.incident_id)
                .where(sla_clocks.c.next_check_at <= now)
                .order_by(sla_clocks.c.next_check_at)
                .limit(BATCH)
                .with_for_update(of=[sla_clocks, incidents], skip_locked=True)
            )
        ).all()
        for clock in due:
            await _emit_due_events(conn, ctx, clock)
    return len(due)


async def _emit_due_events(conn: AsyncConnection, ctx: Context, clock: Any) -> None:
    now = ctx.now
    data = {
        "incident_id": str(clock.incident_id),
        "number": clock.number,
        "kind": clock.kind,
        "percent": clock_percent(clock._mapping, now),
        "due_at": clock.due_at.isoformat().replace("+00:00", "Z") if clock.due_at else None,
    }
    warned, notified = clock.warned, clock.breach_notified
    events = []
    if not warned and clock.warn_at is not None and clock.warn_at <= now:
        warned = True
        events.append(Change("incident", clock.incident_id, "sla.warning", data))
    breached = not notified and clock.breach_at is not None and clock.breach_at <= now
    if breached:
        notified = True
        events.append(Change("incident", clock.incident_id, "sla.breached", data))
    pending = [
        instant
        for instant, done in ((clock.warn_at, warned), (clock.breach_at, notified))
        if instant is not None and not done
    ]
    await conn.execute(
        update(sla_clocks)
        .where(sla_clocks.c.incident_id == clock.incident_id, sla_clocks.c.kind == clock.kind)
        .values(warned=warned, breach_notified=notified, next_check_at=min(pending, default=None))
    )
    await ctx.log_changes(conn, *events)
    if breached and clock.kind == Kind.resolution:
        await _escalate_for_breach(conn, ctx, clock.incident_id)


async def _escalate_for_breach(conn: AsyncConnection, ctx: Context, incident_id: Any) -> None:
    """A resolution breach raises the escalation level to at least 1 (reason `sla_breach`)."""
    row = (await conn.execute(select(incidents).where(incidents.c.id == incident_id))).one()
    facts = IncidentFacts.of(row)
    if facts.escalation_level >= 1 or facts.state in lifecycle.FINAL:
        return
    await record_escalation(
        conn,
        ctx.after_lock(row.updated_at),  # journaled after what came before
        row,
        level=1,
        reason="sla_breach",
        note="The resolution target of the service-level agreement was exceeded.",
    )
