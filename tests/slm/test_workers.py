"""Two `sdms worker` processes on one database: every SLA event is emitted exactly once."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from app.core.changelog import change_log
from app.core.db import Database
from app.incidents.models import escalations
from app.slm.models import sla_clocks
from tests.factories import World, make_agreement, make_calendar, same_targets

INCIDENTS = 120


@pytest.mark.slow
async def test_two_workers_emit_each_event_once(world: World, database: Database) -> None:
    cal = await make_calendar(world.manager, name="24x7", always_on=True, hours={})
    await make_agreement(
        world.manager, cal["id"], name="Fast", warn_at_percent=50, targets=same_targets(60, 120)
    )
    # The test clock says March 2026; the workers run on the real clock, months later, so every
    # clock is past its warning and its breach when they start.
    await asyncio.gather(*(world.incident() for _ in range(INCIDENTS)))

    env = {
        **os.environ,
        "SDMS_DATABASE_URL": str(database.engine.url.render_as_string(hide_password=False)),
        "SDMS_WORKER_INTERVAL_SECONDS": "0.2",
        "SDMS_REGION": "msk",
        "SDMS_LOG_LEVEL": "WARNING",
    }
    workers = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "worker", env=env)
        for _ in range(2)
    ]
    expected = INCIDENTS * 2 * 2  # per incident: 2 clocks x (warning + breach)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with database.read() as conn:
                pending = (
                    await conn.execute(
                        select(func.count())
                        .select_from(sla_clocks)
                        .where(sla_clocks.c.next_check_at.is_not(None))
                    )
                ).scalar_one()
            if pending == 0:
                break
            await asyncio.sleep(0.2)
        # Give a straggler the chance to emit a duplicate, if the locking were wrong.
        await asyncio.sleep(1)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            await asyncio.wait_for(worker.wait(), timeout=30)
    assert all(w.returncode is not None for w in workers)

    async with database.read() as conn:
        events = (
            await conn.execute(
                select(change_log.c.event, change_log.c.data).where(
                    change_log.c.event.like("sla.%")
                )
            )
        ).all()
        raised = (
            (
                await conn.execute(
                    select(escalations.c.incident_id).where(escalations.c.reason == "sla_breach")
                )
            )
            .scalars()
            .all()
        )
    per_clock = Counter((e.event, e.data["incident_id"], e.data["kind"]) for e in events)
    assert len(events) == expected
    assert set(per_clock.values()) == {1}
    assert len(raised) == INCIDENTS
    assert len(set(raised)) == INCIDENTS
