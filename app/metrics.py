"""Domain gauges for `/metrics`, computed from the database at scrape time (so every worker
process answers the same numbers)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.core.changelog import change_log
from app.core.db import Database
from app.core.observability import gauge_text
from app.incidents.models import incidents
from app.slm.models import sla_clocks


async def incident_gauges(db: Database) -> bytes:
    async with db.read() as conn:
        by_state = (
            await conn.execute(select(incidents.c.state, func.count()).group_by(incidents.c.state))
        ).all()
        last_seq = (await conn.execute(select(func.max(change_log.c.seq)))).scalar()
    return gauge_text(
        "sdms_incidents", "Incidents by state", [({"state": s}, n) for s, n in by_state]
    ) + gauge_text(
        "sdms_change_log_last_seq",
        "Sequence of the newest change-log row",
        [({}, float(last_seq or 0))],
    )


async def sla_gauges(db: Database) -> bytes:
    """SLA clocks by kind and mode, and how many have passed their target."""
    async with db.read() as conn:
        by_mode = (
            await conn.execute(
                select(sla_clocks.c.kind, sla_clocks.c.mode, func.count()).group_by(
                    sla_clocks.c.kind, sla_clocks.c.mode
                )
            )
        ).all()
        breached = (
            await conn.execute(
                select(sla_clocks.c.kind, func.count())
                .where(sla_clocks.c.breach_notified.is_(True))
                .group_by(sla_clocks.c.kind)
            )
        ).all()
    return gauge_text(
        "sdms_sla_clocks",
        "SLA clocks by kind and state (running, paused, stopped)",
        [({"kind": k, "state": m}, n) for k, m, n in by_mode],
    ) + gauge_text(
        "sdms_sla_clocks_breached",
        "SLA clocks whose breach was signalled",
        [({"kind": k}, n) for k, n in breached],
    )
