"""The incident jobs: auto-close after SDMS_AUTO_CLOSE_DAYS, and eta_exceeded once per ETA."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.core.changelog import change_log
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database
from app.incidents.jobs import auto_close, eta_exceeded
from tests.factories import World, ok

RESOLVE = {"resolution_code": "solved", "resolution_notes": "Replaced the SIM card."}


async def _events(database: Database, event: str) -> list[str]:
    async with database.read() as conn:
        rows = await conn.execute(select(change_log.c.data).where(change_log.c.event == event))
        return [r.data["id"] for r in rows]


async def test_auto_close_after_the_configured_days(
    world: World, database: Database, settings: Settings, clock: ManualClock
) -> None:
    incident = await world.incident()
    await world.move(incident, "resolved", **RESOLVE)
    waiting = await world.incident()
    await world.move(waiting, "resolved", **RESOLVE)

    clock.advance(days=settings.auto_close_days, seconds=-1)
    assert await auto_close(database, settings, clock.now()) == 0
    clock.advance(seconds=1)
    # The customer answered on the second one: it is closed by the customer, not the job.
    ok(await world.customer_a.post(f"/incidents/{waiting['id']}/confirm"), 200)
    assert await auto_close(database, settings, clock.now()) == 1
    assert await auto_close(database, settings, clock.now()) == 0

    closed = ok(await world.agent.get(f"/incidents/{incident['id']}"), 200)
    assert closed["state"] == "closed"
    journal = ok(await world.customer_a.get(f"/incidents/{incident['id']}/journal"), 200)
    last = journal["items"][-1]
    assert (last["field"], last["new"], last["author_id"]) == ("state", "closed", None)
    assert "automatically" in last["body"]


async def test_a_reopened_incident_is_not_auto_closed(
    world: World, database: Database, settings: Settings, clock: ManualClock
) -> None:
    incident = await world.incident()
    await world.move(incident, "resolved", **RESOLVE)
    ok(
        await world.customer_a.post(f"/incidents/{incident['id']}/reject", json={"reason": "No"}),
        200,
    )
    clock.advance(days=30)
    assert await auto_close(database, settings, clock.now()) == 0


async def test_eta_exceeded_fires_once_per_eta(
    world: World, database: Database, settings: Settings, clock: ManualClock
) -> None:
    incident = await world.incident()
    eta = clock.now() + timedelta(hours=2)
    ok(
        await world.agent.patch(
            f"/incidents/{incident['id']}", json={"estimated_resolution_at": eta.isoformat()}
        ),
        200,
    )
    assert await eta_exceeded(database, settings, clock.now()) == 0
    clock.advance(hours=2)
    assert await eta_exceeded(database, settings, clock.now()) == 1
    clock.advance(minutes=5)
    assert await eta_exceeded(database, settings, clock.now()) == 0
    assert await _events(database, "incident.eta_exceeded") == [incident["id"]]

    # Setting the same ETA again does not fire again; a new ETA does, once.
    ok(
        await world.agent.patch(
            f"/incidents/{incident['id']}", json={"estimated_resolution_at": eta.isoformat()}
        ),
        200,
    )
    assert await eta_exceeded(database, settings, clock.now()) == 0
    new_eta = clock.now() + timedelta(hours=1)
    ok(
        await world.agent.patch(
            f"/incidents/{incident['id']}", json={"estimated_resolution_at": new_eta.isoformat()}
        ),
        200,
    )
    clock.advance(hours=1)
    assert await eta_exceeded(database, settings, clock.now()) == 1
    assert len(await _events(database, "incident.eta_exceeded")) == 2


async def test_no_eta_event_for_a_resolved_incident(
    world: World, database: Database, settings: Settings, clock: ManualClock
) -> None:
    incident = await world.incident()
    eta = clock.now() + timedelta(hours=1)
    ok(
        await world.agent.patch(
            f"/incidents/{incident['id']}", json={"estimated_resolution_at": eta.isoformat()}
        ),
        200,
    )
    await world.move(incident, "resolved", **RESOLVE)
    clock.advance(hours=2)
    await eta_exceeded(database, settings, clock.now())
    assert await _events(database, "incident.eta_exceeded") == []
