"""Incidents are answered from rows without a model validation per record; this checks that the
answer is exactly what the documented models (IncidentRead, IncidentPublic) would answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.core.clock import ManualClock
from app.incidents.schemas import IncidentPublic, IncidentRead
from tests.factories import WEEKDAYS, Api, World, make_agreement, make_calendar, ok


def same_as_model(model: type[BaseModel], data: dict[str, Any]) -> None:
    assert set(data) == set(model.model_fields)
    assert model.model_validate(data).model_dump(mode="json") == data


async def test_answers_match_the_models(world: World, clock: ManualClock) -> None:
    cal = await make_calendar(
        world.manager,
        timezone="Europe/Moscow",
        hours={d: [["09:00", "18:00"]] for d in WEEKDAYS},
    )
    await make_agreement(
        world.manager,
        cal["id"],
        name="A",
        targets=[
            {"priority": p, "response_seconds": 600, "resolution_seconds": 3600 * p}
            for p in range(1, 6)
        ],
    )
    running = await world.incident(impact=1, urgency=2)
    paused = await world.incident()
    await world.move(paused, "on_hold", hold_reason="awaiting_customer", comment="Which one?")
    clock.advance(hours=30, microseconds=123456)
    resolved = await world.incident(major=True, contact_email="noc@example.com")
    await world.move(resolved, "resolved", resolution_code="solved", resolution_notes="Done")
    ids = [running["id"], paused["id"], resolved["id"]]

    async def check(who: Api, model: type[BaseModel]) -> None:
        page = ok(await who.get("/incidents"), 200)
        assert {i["id"] for i in page["items"]} == set(ids)
        for item in page["items"]:
            same_as_model(model, item)
            one = ok(await who.get(f"/incidents/{item['id']}"), 200)
            same_as_model(model, one)
            assert {c["state"] for c in one["sla"]} <= {"running", "paused", "met", "breached"}

    await check(world.agent, IncidentRead)
    await check(world.customer_a, IncidentPublic)
    created = ok(
        await world.agent.post(
            "/incidents", json={"title": "t", "organization_id": world.org_a["id"]}
        ),
        201,
    )
    same_as_model(IncidentRead, created)
    mine = ok(await world.customer_a.post("/incidents", json={"title": "t"}), 201)
    same_as_model(IncidentPublic, mine)
