"""Incident jobs: auto-close resolved incidents, and `incident.eta_exceeded` once per ETA."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from app.core.auth import SYSTEM
from app.core.changelog import Change
from app.core.config import Settings
from app.core.context import Context
from app.core.db import Database
from app.incidents import lifecycle
from app.incidents.lifecycle import IncidentFacts, State, TransitionRequest, Via
from app.incidents.models import incidents
from app.incidents.service import apply_plan, with_clocks

BATCH = 100


async def auto_close(db: Database, settings: Settings, now: datetime) -> int:
    """Close incidents resolved `SDMS_AUTO_CLOSE_DAYS` ago without the customer's answer."""
    cutoff = now - timedelta(days=settings.auto_close_days)
    ctx = Context(SYSTEM, now, settings)
    async with db.transaction() as conn:
        rows = (
            await conn.execute(
                select(incidents)
                .where(incidents.c.state == State.resolved, incidents.c.resolved_at <= cutoff)
                .order_by(incidents.c.resolved_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            row_ctx = ctx.after_lock(row.updated_at)  # journaled after what came before
            plan = lifecycle.plan_transition(
                IncidentFacts.of(row),
                TransitionRequest(
                    to=State.closed,
                    reason=f"Closed automatically {settings.auto_close_days} days after "
                    "resolution without an answer from the customer.",
                ),
                via=Via.auto_close,
                actor_id=None,
                now=row_ctx.now,
            )
            await apply_plan(conn, row_ctx, row, plan)
    return len(rows)


async def eta_exceeded(db: Database, settings: Settings, now: datetime) -> int:
    """Emit `incident.eta_exceeded` for unresolved incidents whose ETA has passed."""
    ctx = Context(SYSTEM, now, settings)
    async with db.transaction() as conn:
        rows = (
            await conn.execute(
                select(incidents)
                .where(incidents.c.eta_alert_at <= now)
                .order_by(incidents.c.eta_alert_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        ).all()
        changes = []
        for row in rows:
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == row.id)
                .values(eta_alert_at=None, eta_alerted_for=row.estimated_resolution_at)
            )
            if row.state in lifecycle.OPEN:
                data = (await with_clocks(conn, row, now)).admin_data()
                changes.append(
                    Change("incident", row.id, "incident.eta_exceeded", data, row.version)
                )
        await ctx.log_changes(conn, *changes)
    return len(rows)
