"""Service-level management over HTTP (section 7), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.core import versions
from app.core.changelog import change_log
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database
from app.slm.jobs import sla_events
from tests.factories import (
    OFFICE_UTC,
    WEEKDAYS,
    Api,
    World,
    make_org,
    ok,
    problem,
)
from tests.factories import make_agreement as agreement
from tests.factories import make_calendar as calendar

RESOLVE = {"resolution_code": "solved", "resolution_notes": "Reloaded the tariff plan."}


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def clocks_of(incident: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in incident["sla"]}


async def fetch(world: World, incident: dict[str, Any], who: Api | None = None) -> dict[str, Any]:
    return ok(await (who or world.agent).get(f"/incidents/{incident['id']}"), 200)  # type: ignore[no-any-return]


# --- calendars ------------------------------------------------------------------------------


async def test_calendar_rights_and_validation(world: World) -> None:
    body = {"name": "Office", "timezone": "Europe/Berlin", "hours": OFFICE_UTC}
    assert (await world.agent.post("/slm/calendars", json=body)).status_code == 403
    bad_bodies: list[dict[str, Any]] = [
        {"timezone": "Mars/Olympus"},
        {"hours": {"mon": [["18:00", "09:00"]]}},
        {"hours": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}},
        {"hours": {"funday": [["09:00", "12:00"]]}},
        {"hours": {"mon": [["24:00", "24:00"]]}},
        {"hours": {}},  # no working time at all and not always_on
        {"holidays": ["2026-13-01"]},
    ]
    for bad in bad_bodies:
        response = await world.manager.post("/slm/calendars", json={**body, **bad})
        assert response.status_code == 422, bad
    created = await calendar(
        world.manager, timezone="Europe/Berlin", holidays=["2026-12-25", "2026-01-01", "2026-12-25"]
    )
    assert created["holidays"] == ["2026-01-01", "2026-12-25"]
    assert created["hours"]["mon"] == [["09:00", "17:00"]]
    assert created["hours"]["sun"] == []
    # Portals use the calendars too.
    ok(await world.customer_a.get(f"/slm/calendars/{created['id']}"), 200)


async def test_add_and_elapsed_on_an_office_calendar(world: World) -> None:
    cal = await calendar(
        world.manager,
        timezone="Europe/Berlin",
        hours={d: [["09:00", "18:00"]] for d in WEEKDAYS},
        holidays=["2026-03-09"],
    )
    url = f"/slm/calendars/{cal['id']}"
    # Friday 17:00 Berlin (16:00 UTC) + 2 working hours; Monday is a holiday -> Tuesday 10:00.
    added = ok(
        await world.customer_a.post(
            f"{url}/add", json={"start": "2026-03-06T16:00:00Z", "seconds": 7200}
        ),
        200,
    )
    assert added["end"] == "2026-03-10T09:00:00Z"
    elapsed = ok(
        await world.customer_a.post(
            f"{url}/elapsed", json={"start": "2026-03-06T16:00:00Z", "end": "2026-03-10T09:00:00Z"}
        ),
        200,
    )
    assert elapsed["seconds"] == 7200
    # Across the spring-forward weekend, summer time: Monday 30 March 09:00 CEST = 07:00 UTC.
    added = ok(
        await world.customer_a.post(
            f"{url}/add", json={"start": "2026-03-27T17:00:00Z", "seconds": 3600}
        ),
        200,
    )
    assert added["end"] == "2026-03-30T08:00:00Z"
    bad = await world.customer_a.post(
        f"{url}/elapsed", json={"start": "2026-03-06T16:00:00Z", "end": "2026-03-05T16:00:00Z"}
    )
    assert bad.status_code == 422
    naive = await world.customer_a.post(
        f"{url}/add", json={"start": "2026-03-06T16:00:00", "seconds": 1}
    )
    assert naive.status_code == 422
    missing = "/slm/calendars/01890000-0000-7000-8000-000000000000/add"
    response = await world.agent.post(missing, json={"start": "2026-03-06T16:00:00Z", "seconds": 1})
    assert response.status_code == 404


async def test_add_and_elapsed_count_at_most_a_hundred_years(world: World) -> None:
    """What one request may make the calendar count is bounded (each change of the zone's
    offset crossed costs time), and nothing is counted past the year 3000."""
    minute_a_week = await calendar(
        world.manager, timezone="America/New_York", hours={"mon": [["09:00", "09:01"]]}
    )
    url = f"/slm/calendars/{minute_a_week['id']}"
    ten_years = 10 * 366 * 86_400  # the most seconds /add takes: here about 100,000 years
    too_far = await world.customer_a.post(
        f"{url}/add", json={"start": "2026-01-05T14:00:00Z", "seconds": ten_years}
    )
    body = problem(too_far, 422)
    assert body["errors"][0]["loc"] == ["body", "seconds"]
    assert "100 years" in body["detail"]
    # 5,200 working minutes: the Monday minutes of a hundred years, less a few.
    reached = ok(
        await world.customer_a.post(
            f"{url}/add", json={"start": "2026-01-05T14:00:00Z", "seconds": 5_200 * 60}
        ),
        200,
    )
    assert "2125-" in reached["end"]
    office = await calendar(world.manager)
    office_url = f"/slm/calendars/{office['id']}"
    near_the_end = await world.customer_a.post(
        f"{office_url}/add", json={"start": "2999-12-31T16:00:00Z", "seconds": 7200}
    )
    near = problem(near_the_end, 422)
    assert near["errors"][0]["loc"] == ["body", "seconds"]
    assert "before 3000-01-01T00:00:00Z" in near["detail"]
    # What /elapsed counts over a hundred years (36,525 days), /add reaches: here the last
    # working minute ends exactly a hundred years after start.
    mondays = await calendar(world.manager, hours={"mon": [["09:00", "09:01"]]})
    mondays_url = f"/slm/calendars/{mondays['id']}"
    start, end = "2000-01-04T09:01:00Z", "2100-01-04T09:01:00Z"  # Tuesday, 36,525 days on
    span = {"start": start, "end": end}
    worked = ok(await world.customer_a.post(f"{mondays_url}/elapsed", json=span), 200)
    assert worked["seconds"] == 5_218 * 60
    reach = {"start": start, "seconds": worked["seconds"]}
    assert ok(await world.customer_a.post(f"{mondays_url}/add", json=reach), 200)["end"] == end
    beyond = await world.customer_a.post(
        f"{mondays_url}/add", json={"start": start, "seconds": worked["seconds"] + 1}
    )
    assert "within 100 years of start" in problem(beyond, 422)["detail"]
    century = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
    assert ok(await world.customer_a.post(f"{office_url}/elapsed", json=century), 200)
    longer = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-02T00:00:01Z"}
    problem(await world.customer_a.post(f"{office_url}/elapsed", json=longer), 422)


async def test_a_target_its_calendar_takes_over_a_century_to_reach_is_refused(
    world: World,
) -> None:
    """A clock that would never be due costs every write of its incident a walk through the
    centuries: such a target is a 422 when the agreement is saved, and so is a calendar whose
    new hours would make an agreement's target one."""
    minute_a_week = await calendar(world.manager, hours={"mon": [["09:00", "09:01"]]})
    ten_years = 10 * 366 * 86_400
    targets = [
        {"priority": 1, "response_seconds": 60, "resolution_seconds": 3600},
        {"priority": 2, "response_seconds": 60, "resolution_seconds": ten_years},
    ]
    body = {"name": "Sparse", "calendar_id": minute_a_week["id"], "targets": targets}
    refused = problem(await world.manager.post("/slm/agreements", json=body), 422)
    assert [e["loc"] for e in refused["errors"]] == [["body", "targets", 1]]
    assert "priority 2 target of 316224000 s" in refused["detail"]
    office = await calendar(world.manager)
    per_target = {**body, "calendar_id": office["id"]}  # the long target on the sparse calendar
    per_target["targets"] = [targets[0], {**targets[1], "calendar_id": minute_a_week["id"]}]
    problem(await world.manager.post("/slm/agreements", json=per_target), 422)
    # On office hours the same target is reached (in about 42 years).
    standing = await agreement(world.manager, office["id"], targets=targets)
    incident = await world.incident(impact=1, urgency=1)
    assert incident["priority"] == 1
    assert clocks_of(incident)["resolution"]["due_at"] == "2026-03-02T10:00:00Z"
    # Office hours cut to a minute a week would leave that target out of reach: refused, and
    # the calendar keeps its hours.
    replaced = await world.manager.put(
        f"/slm/calendars/{office['id']}",
        json={"name": "Office", "timezone": "UTC", "hours": {"mon": [["09:00", "09:01"]]}},
        headers={"If-Match": f'"{office["version"]}"'},
    )
    assert standing["name"] in problem(replaced, 422)["detail"]
    assert ok(await world.manager.get(f"/slm/calendars/{office['id']}"), 200) == office
    # Nothing of the refused hours stays behind: the next replacement is judged, and counted
    # on, by its own hours.
    round_the_clock = {d: [["00:00", "24:00"]] for d in WEEKDAYS}
    accepted = ok(
        await world.manager.put(
            f"/slm/calendars/{office['id']}",
            json={"name": "Office", "timezone": "UTC", "hours": round_the_clock},
            headers={"If-Match": f'"{office["version"]}"'},
        ),
        200,
    )
    assert accepted["version"] == office["version"] + 1
    added = await world.customer_a.post(
        f"/slm/calendars/{office['id']}/add",
        json={"start": "2026-03-02T00:00:00Z", "seconds": 3600},
    )
    assert ok(added, 200)["end"] == "2026-03-02T01:00:00Z"


async def test_always_on_counts_every_instant(world: World) -> None:
    cal = await calendar(world.manager, always_on=True, hours={}, holidays=["2026-03-07"])
    added = ok(
        await world.agent.post(
            f"/slm/calendars/{cal['id']}/add",
            json={"start": "2026-03-06T23:00:00Z", "seconds": 7200},
        ),
        200,
    )
    assert added["end"] == "2026-03-07T01:00:00Z"


async def test_replacing_a_calendar_needs_the_current_version(world: World) -> None:
    cal = await calendar(world.manager)
    body = {"name": "Office", "timezone": "UTC", "hours": OFFICE_UTC, "holidays": ["2026-03-03"]}
    stale = await world.manager.put(
        f"/slm/calendars/{cal['id']}", json=body, headers={"If-Match": '"7"'}
    )
    assert stale.status_code == 412
    replaced = ok(await world.manager.put(f"/slm/calendars/{cal['id']}", json=body), 200)
    assert (replaced["holidays"], replaced["version"]) == (["2026-03-03"], 2)


# --- agreements -----------------------------------------------------------------------------


async def test_agreement_rights_and_validation(world: World) -> None:
    cal = await calendar(world.manager)
    body = {
        "name": "A",
        "calendar_id": cal["id"],
        "targets": [{"priority": 1, "response_seconds": 900, "resolution_seconds": 14400}],
    }
    assert (await world.agent.post("/slm/agreements", json=body)).status_code == 403
    assert (await world.customer_a.post("/slm/agreements", json=body)).status_code == 403
    target: dict[str, Any] = body["targets"][0]
    bad_bodies: list[dict[str, Any]] = [
        {"targets": []},
        {"targets": [target, target]},
        {"targets": [{"priority": 6, "response_seconds": 1, "resolution_seconds": 1}]},
        {"targets": [{"priority": 1, "response_seconds": 0, "resolution_seconds": 1}]},
        {"calendar_id": "01890000-0000-7000-8000-000000000000"},
        {"organization_id": "01890000-0000-7000-8000-000000000000"},
        {"warn_at_percent": 100},
    ]
    for bad in bad_bodies:
        response = await world.manager.post("/slm/agreements", json={**body, **bad})
        assert response.status_code == 422, bad
    created = ok(await world.manager.post("/slm/agreements", json=body), 201)
    assert created["warn_at_percent"] == 75
    duplicate = await world.manager.post("/slm/agreements", json=body)
    assert duplicate.status_code == 409


async def test_racing_agreements_for_one_scope_save_one(world: World) -> None:
    """On PostgreSQL, agreements on different calendars were checked side by side (each locks
    only its calendars): two for one organization were saved, and which applied depended on
    row order."""
    calendars = [await calendar(world.manager, name=f"Office {n}") for n in range(6)]
    targets = [{"priority": 1, "response_seconds": 900, "resolution_seconds": 14400}]
    for _ in range(5):  # a race: a few rounds, each for an organization of its own
        org = await make_org(world.admin)
        body = {"name": "Theirs", "organization_id": org["id"], "targets": targets}
        answers = await asyncio.gather(
            *(
                world.manager.post("/slm/agreements", json={**body, "calendar_id": c["id"]})
                for c in calendars
            )
        )
        assert sorted(answer.status_code for answer in answers) == [201, 409, 409, 409, 409, 409]
    listed = ok(await world.manager.get("/slm/agreements", params={"limit": 200}), 200)["items"]
    assert len(listed) == 5


async def test_customers_read_only_agreements_that_apply_to_them(world: World) -> None:
    cal = await calendar(world.manager)
    default = await agreement(world.manager, cal["id"], name="Default")
    theirs = await agreement(world.manager, cal["id"], name="B", organization_id=world.org_b["id"])
    mine = await agreement(world.manager, cal["id"], name="A", organization_id=world.org_a["id"])
    listed = ok(await world.customer_a.get("/slm/agreements"), 200)["items"]
    assert {a["id"] for a in listed} == {default["id"], mine["id"]}
    assert (await world.customer_a.get(f"/slm/agreements/{theirs['id']}")).status_code == 404


async def test_the_most_specific_agreement_applies(world: World) -> None:
    cal = await calendar(world.manager, always_on=True, hours={})
    service_id, org = world.service["id"], world.org_a["id"]

    def only(priority: int, hours: int) -> list[dict[str, int]]:
        return [{"priority": priority, "response_seconds": 600, "resolution_seconds": hours * 3600}]

    await agreement(world.manager, cal["id"], name="default", targets=only(5, 1))
    await agreement(
        world.manager, cal["id"], name="service", service_id=service_id, targets=only(5, 2)
    )
    await agreement(world.manager, cal["id"], name="org", organization_id=org, targets=only(5, 3))
    both = await agreement(
        world.manager,
        cal["id"],
        name="org+service",
        organization_id=org,
        service_id=service_id,
        targets=only(5, 4),
    )

    def target(incident: dict[str, Any]) -> int:
        return int(clocks_of(incident)["resolution"]["target_seconds"] // 3600)

    assert target(await world.incident(service_id=service_id)) == 4
    assert (
        clocks_of(await world.incident(service_id=service_id))["resolution"]["agreement_id"]
        == both["id"]
    )
    assert target(await world.incident()) == 3
    assert target(await world.incident(world.customer_b, service_id=service_id)) == 2
    assert target(await world.incident(world.customer_b)) == 1


async def test_no_agreement_no_clocks(world: World) -> None:
    unmeasured = await world.incident()
    assert unmeasured["sla"] == []
    cal = await calendar(world.manager)
    await agreement(
        world.manager,
        cal["id"],
        targets=[{"priority": 1, "response_seconds": 60, "resolution_seconds": 600}],
    )
    assert (await world.incident(impact=3, urgency=3))["sla"] == []  # no target for priority 5
    major = await world.incident(major=True)
    assert [c["kind"] for c in major["sla"]] == ["response", "resolution"]
    # A read answers what the write did (its caller's fields), with or without clocks.
    for created in (unmeasured, major):
        for fetched in (
            await fetch(world, created),
            ok(await world.agent.get(f"/incidents/{created['number']}"), 200),
        ):
            assert {name: fetched[name] for name in created} == created


# --- clocks on incidents --------------------------------------------------------------------


async def office_agreement(world: World) -> dict[str, Any]:
    cal = await calendar(world.manager)
    return await agreement(world.manager, cal["id"])


async def test_clocks_start_at_opened_and_count_business_time(
    world: World, clock: ManualClock
) -> None:
    await office_agreement(world)
    incident = await world.incident(impact=2, urgency=2)  # priority 3: 3 h response, 12 h fix
    sla = clocks_of(incident)
    assert sla["response"]["target_seconds"] == 3 * 3600
    assert sla["response"]["due_at"] == "2026-03-02T12:00:00Z"
    # 12 working hours from Monday 09:00 on 09-17: Tuesday 13:00.
    assert sla["resolution"]["due_at"] == "2026-03-03T13:00:00Z"
    assert (sla["resolution"]["state"], sla["resolution"]["elapsed_seconds"]) == ("running", 0)
    clock.advance(hours=10)  # Monday 19:00: only 8 working hours counted
    sla = clocks_of(await fetch(world, incident))
    assert sla["resolution"]["elapsed_seconds"] == 8 * 3600
    assert sla["resolution"]["percent"] == pytest.approx(66.67)
    assert sla["response"]["state"] == "breached"
    assert sla["response"]["breached"] is True


async def test_response_stops_at_the_first_public_staff_comment(
    world: World, clock: ManualClock
) -> None:
    await office_agreement(world)
    incident = await world.incident()
    url = f"/incidents/{incident['id']}/comments"
    clock.advance(minutes=10)
    ok(await world.customer_a.post(url, json={"body": "Any news?"}), 201)
    ok(await world.agent.post(url, json={"body": "internal note"}), 201)
    assert clocks_of(await fetch(world, incident))["response"]["state"] == "running"
    clock.advance(minutes=5)
    ok(await world.agent.post(url, json={"body": "Looking into it", "public": True}), 201)
    response = clocks_of(await fetch(world, incident))["response"]
    assert (response["state"], response["elapsed_seconds"]) == ("met", 900)
    assert response["stopped_at"] == "2026-03-02T09:15:00Z"


@pytest.mark.parametrize("how", ["in_progress", "resolved"])
async def test_response_stops_at_work_or_resolution(
    world: World, clock: ManualClock, how: str
) -> None:
    await office_agreement(world)
    incident = await world.incident()
    clock.advance(minutes=20)
    await world.move(incident, how, **(RESOLVE if how == "resolved" else {}))
    sla = clocks_of(await fetch(world, incident))
    assert (sla["response"]["state"], sla["response"]["elapsed_seconds"]) == ("met", 1200)
    assert sla["resolution"]["state"] == ("met" if how == "resolved" else "running")


async def test_resolution_pauses_awaiting_customer_and_resumes_on_reply(
    world: World, clock: ManualClock
) -> None:
    await office_agreement(world)
    incident = await world.incident()  # priority 5: 20 h to resolve
    clock.advance(hours=2)
    await world.move(incident, "on_hold", hold_reason="awaiting_customer", comment="Logs please?")
    paused = clocks_of(await fetch(world, incident))["resolution"]
    assert (paused["state"], paused["due_at"], paused["elapsed_seconds"]) == ("paused", None, 7200)
    clock.advance(hours=24)  # a day on hold counts nothing
    ok(
        await world.customer_a.post(
            f"/incidents/{incident['id']}/comments", json={"body": "Attached."}
        ),
        201,
    )
    resumed = clocks_of(await fetch(world, incident))["resolution"]
    assert (resumed["state"], resumed["elapsed_seconds"]) == ("running", 7200)
    # Resumed Tuesday 11:00 with 18 h to go: Tue 11-17 (6), Wed 9-17 (8), Thu 9-13 (4).
    assert resumed["due_at"] == "2026-03-05T13:00:00Z"


async def test_other_holds_do_not_pause(world: World, clock: ManualClock) -> None:
    await office_agreement(world)
    incident = await world.incident()
    await world.move(incident, "on_hold", hold_reason="awaiting_change")
    clock.advance(hours=1)
    resolution = clocks_of(await fetch(world, incident))["resolution"]
    assert (resolution["state"], resolution["elapsed_seconds"]) == ("running", 3600)


async def test_reopen_resumes_with_elapsed_kept(world: World, clock: ManualClock) -> None:
    await office_agreement(world)
    incident = await world.incident()
    clock.advance(hours=1)
    await world.move(incident, "resolved", **RESOLVE)
    clock.advance(hours=3)
    stopped = clocks_of(await fetch(world, incident))["resolution"]
    assert (stopped["state"], stopped["elapsed_seconds"]) == ("met", 3600)
    ok(
        await world.customer_a.post(
            f"/incidents/{incident['id']}/reject", json={"reason": "Still broken"}
        ),
        200,
    )
    clock.advance(hours=1)
    resumed = clocks_of(await fetch(world, incident))["resolution"]
    assert (resumed["state"], resumed["elapsed_seconds"], resumed["stopped_at"]) == (
        "running",
        7200,
        None,
    )


async def test_priority_change_retargets_as_if_held_from_opened(
    world: World, clock: ManualClock
) -> None:
    office = await calendar(world.manager)
    on_call = await calendar(world.manager, name="On call", always_on=True, hours={})
    targets = [
        {"priority": p, "response_seconds": 3600, "resolution_seconds": 8 * 3600}
        for p in range(2, 6)
    ]
    targets.append(
        {
            "priority": 1,
            "response_seconds": 900,
            "resolution_seconds": 4 * 3600,
            "calendar_id": on_call["id"],
        }
    )
    await agreement(world.manager, office["id"], targets=targets)
    clock.set(datetime(2026, 3, 6, 16, 0, tzinfo=UTC))  # Friday 16:00
    incident = await world.incident(impact=2, urgency=2)
    await world.move(incident, "on_hold", hold_reason="awaiting_vendor")
    clock.advance(hours=1)
    await world.move(incident, "in_progress")
    clock.set(datetime(2026, 3, 9, 9, 30, tzinfo=UTC))  # Monday 09:30
    before = clocks_of(await fetch(world, incident))["resolution"]
    # Office hours: paused Friday 16-17, running from 17:00, counted only Monday 09:00-09:30.
    assert before["elapsed_seconds"] == 1800
    updated = ok(
        await world.agent.patch(f"/incidents/{incident['id']}", json={"impact": 1, "urgency": 1}),
        200,
    )
    after = clocks_of(updated)["resolution"]
    assert updated["priority"] == 1
    assert after["target_seconds"] == 4 * 3600
    # On the 24x7 calendar: Fri 16:00-17:00 paused, running from 17:00 to Mon 09:30 = 64.5 h.
    assert after["elapsed_seconds"] == int(64.5 * 3600)
    assert after["state"] == "breached"
    # Due as if priority 1 had held: 4 h of 24x7 from Friday 17:00 = Friday 21:00.
    assert after["due_at"] == "2026-03-06T21:00:00Z"


async def test_a_service_change_brings_the_clocks_under_an_agreement_or_out_of_it(
    world: World, clock: ManualClock
) -> None:
    """Clocks begin when an incident comes under an agreement (as if it had been from the
    start) and go when it leaves the last one; a read and a list both show it."""
    on_call = await calendar(world.manager, name="On call", always_on=True, hours={})
    await agreement(world.manager, on_call["id"], service_id=world.service["id"])
    incident = await world.incident()
    assert incident["sla"] == []
    clock.advance(minutes=30)
    url = f"/incidents/{incident['id']}"
    moved = ok(await world.agent.patch(url, json={"service_id": world.service["id"]}), 200)
    listed = ok(await world.agent.get("/incidents", params={"service_id": world.service["id"]}))
    for shown in (moved, await fetch(world, incident), listed["items"][0]):
        sla = clocks_of(shown)
        assert sla.keys() == {"response", "resolution"}
        assert sla["resolution"]["elapsed_seconds"] == 1800  # counted from opened_at
        assert sla["resolution"]["state"] == "running"
    left = ok(await world.agent.patch(url, json={"service_id": None}), 200)
    listed = ok(await world.agent.get("/incidents", params={"organization_id": world.org_a["id"]}))
    for shown in (left, await fetch(world, incident), listed["items"][0]):
        assert shown["sla"] == []


async def test_a_process_that_never_parsed_the_calendar_reads_it_from_a_clock(
    world: World, clock: ManualClock
) -> None:
    """Another worker (or this one after a restart) shows running clocks on a calendar version
    it has not parsed: it reads the snapshot the clocks keep, in a read or a list."""
    from app.slm import service as slm_service

    await office_agreement(world)
    incident = await world.incident()
    clock.advance(hours=10)  # Monday 19:00: 8 working hours counted on 09-17
    for listed in (False, True):
        slm_service._parsed.clear()
        sla = clocks_of(await _first_listed(world) if listed else await fetch(world, incident))
        assert sla["resolution"]["elapsed_seconds"] == 8 * 3600
        assert len(slm_service._parsed) == 1  # parsed again


async def _first_listed(world: World) -> dict[str, Any]:
    return ok(await world.agent.get("/incidents"), 200)["items"][0]  # type: ignore[no-any-return]


async def test_clocks_stop_when_cancelled(world: World, clock: ManualClock) -> None:
    await office_agreement(world)
    incident = await world.incident()
    clock.advance(minutes=30)
    cancelled = await world.move(incident, "cancelled", reason="Raised twice")
    assert {c["state"] for c in cancelled["sla"]} == {"met"}
    clock.advance(days=30)
    assert {c["state"] for c in (await fetch(world, incident))["sla"]} == {"met"}


async def test_customers_see_their_clocks(world: World) -> None:
    await office_agreement(world)
    incident = await world.incident()
    mine = await fetch(world, incident, world.customer_a)
    assert {c["kind"] for c in mine["sla"]} == {"response", "resolution"}


# --- rebuild --------------------------------------------------------------------------------


async def test_rebuild_changes_nothing_on_an_untouched_incident(
    world: World, clock: ManualClock
) -> None:
    await office_agreement(world)
    incident = await world.incident()
    clock.advance(hours=1)
    await world.move(incident, "on_hold", hold_reason="awaiting_customer", comment="Which?")
    clock.advance(hours=3)
    ok(
        await world.customer_a.post(
            f"/incidents/{incident['id']}/comments", json={"body": "This one"}
        ),
        201,
    )
    clock.advance(hours=1)
    await world.move(incident, "resolved", **RESOLVE)
    ok(
        await world.customer_a.post(f"/incidents/{incident['id']}/reject", json={"reason": "no"}),
        200,
    )
    clock.advance(minutes=10)
    before = await fetch(world, incident)
    url = f"/incidents/{incident['id']}/sla/rebuild"
    assert (await world.agent.post(url)).status_code == 403
    rebuilt = ok(await world.manager.post(url), 200)
    assert rebuilt["sla"] == before["sla"]
    assert rebuilt["version"] == before["version"]


async def test_a_customer_reply_that_resumes_the_incident_acknowledges_it(
    world: World, clock: ManualClock
) -> None:
    """Waiting for the customer straight from new: the question (a public staff comment) is
    the response, and the customer's reply moves the incident to in_progress, which
    acknowledges it as any move into in_progress does. Rebuilding the clocks from the journal
    changes nothing."""
    await office_agreement(world)
    incident = await world.incident()
    clock.advance(minutes=20)
    await world.move(
        incident, "on_hold", hold_reason="awaiting_customer", comment="Which firmware version?"
    )
    clock.advance(minutes=10)
    ok(
        await world.customer_a.post(
            f"/incidents/{incident['id']}/comments", json={"body": "Version 7.2"}
        ),
        201,
    )
    resumed = await fetch(world, incident)
    assert resumed["state"] == "in_progress"
    assert resumed["acknowledged_at"] == z(clock.now())
    response = clocks_of(resumed)["response"]
    assert (response["state"], response["elapsed_seconds"]) == ("met", 20 * 60)
    assert clocks_of(resumed)["resolution"]["state"] == "running"
    rebuilt = ok(await world.manager.post(f"/incidents/{incident['id']}/sla/rebuild"), 200)
    assert rebuilt["sla"] == resumed["sla"]


async def test_a_write_timed_before_the_last_change_is_journaled_after_it(
    world: World, clock: ManualClock
) -> None:
    """A write whose time was read before the incident's last change (it waited for the
    incident's lock, or its host's clock lags) is journaled, and moves the clocks, after that
    change: the journal stays in the order of the writes, and a rebuild from it agrees with the
    live clocks. Before, the hold below went into the journal before the move it followed, and
    a rebuild saw a paused resolution clock that was running."""
    cal = await calendar(world.manager, always_on=True, hours={})
    await agreement(world.manager, cal["id"])
    incident = await world.incident()
    clock.advance(minutes=5)
    await world.move(incident, "in_progress")
    clock.advance(minutes=5)
    await world.move(incident, "on_hold", hold_reason="awaiting_vendor")
    last_change = clock.now()
    clock.advance(seconds=-30)  # this write's time was read before the hold was made
    resumed = await world.move(incident, "in_progress")
    assert resumed["updated_at"] == z(last_change + timedelta(microseconds=1))  # after it
    journal = ok(await world.agent.get(f"/incidents/{incident['id']}/journal"), 200)["items"]
    moves = [(e["old"], e["new"]) for e in journal if e["field"] == "state"]
    assert moves[-2:] == [("in_progress", "on_hold"), ("on_hold", "in_progress")]
    times = [datetime.fromisoformat(e["created_at"]) for e in journal]
    assert times == sorted(times)
    clock.set(last_change + timedelta(minutes=1))
    live = await fetch(world, incident)
    assert clocks_of(live)["resolution"]["state"] == "running"
    rebuilt = ok(await world.manager.post(f"/incidents/{incident['id']}/sla/rebuild"), 200)
    assert rebuilt["sla"] == live["sla"]


async def test_a_read_that_meets_clocks_being_moved_reads_again(
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reads are not one transaction: an incident row read just before a rebuild or a
    re-target moved its clocks can name a calendar version that no clock has any more (the
    review raced lists with rebuilds: 500s). Such a read is made again; a 503 with Retry-After
    if the clocks keep moving, never a 500."""
    from app.incidents.models import incidents
    from app.slm import service as slm_service

    cal = await calendar(world.manager, always_on=True, hours={})
    await agreement(world.manager, cal["id"])
    incident = await world.incident()
    one, listed = f"/incidents/{incident['id']}", {"organization_id": world.org_a["id"]}
    row = incidents.c.id == uuid.UUID(incident["id"])
    read_sla = slm_service.sla_of
    reads = []

    async def moved_once(*args: Any) -> Any:
        reads.append(args)
        if len(reads) % 2:
            raise slm_service.ClocksMoved("moved by a rebuild")
        return await read_sla(*args)

    monkeypatch.setattr(slm_service, "sla_of", moved_once)
    assert ok(await world.agent.get(one), 200)["sla"] == incident["sla"]
    assert [i["id"] for i in ok(await world.agent.get("/incidents", params=listed), 200)["items"]]
    assert len(reads) == 4
    monkeypatch.undo()

    column = incidents.c.sla_resolution_calendar_version
    async with database.transaction() as conn:
        await conn.execute(incidents.update().where(row).values({column: 999}))
    try:
        for response in (
            await world.agent.get(one),
            await world.agent.get("/incidents", params=listed),
        ):
            assert (
                problem(response, 503)["detail"]
                == "SLA clocks are being recomputed; try again shortly."
            )
            assert response.headers["retry-after"] == "5"
        assert caplog.text.count("3 reads in a row") == 2  # an operator sees it persist
    finally:
        async with database.transaction() as conn:
            await conn.execute(incidents.update().where(row).values({column: cal["version"]}))


async def test_rebuild_applies_a_holiday_added_afterwards(world: World, clock: ManualClock) -> None:
    cal = await calendar(world.manager)
    await agreement(world.manager, cal["id"])
    incident = await world.incident()
    clock.advance(days=1)  # Tuesday 09:00: 8 working hours counted
    assert clocks_of(await fetch(world, incident))["resolution"]["elapsed_seconds"] == 8 * 3600
    ok(
        await world.manager.put(
            f"/slm/calendars/{cal['id']}",
            json={
                "name": "Office",
                "timezone": "UTC",
                "hours": OFFICE_UTC,
                "holidays": ["2026-03-02"],
            },
        ),
        200,
    )
    # The running clock keeps the calendar it started with until rebuilt.
    assert clocks_of(await fetch(world, incident))["resolution"]["elapsed_seconds"] == 8 * 3600
    rebuilt = ok(await world.manager.post(f"/incidents/{incident['id']}/sla/rebuild"), 200)
    assert clocks_of(rebuilt)["resolution"]["elapsed_seconds"] == 0


# --- events ---------------------------------------------------------------------------------


async def _events(database: Database) -> list[tuple[str, dict[str, Any]]]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(change_log.c.event, change_log.c.data)
            .where(change_log.c.event.like("sla.%"))
            .order_by(change_log.c.seq)
        )
        return [(r.event, r.data) for r in rows]


async def test_warning_and_breach_fire_once_and_breach_escalates(
    world: World, clock: ManualClock, database: Database, settings: Settings
) -> None:
    await office_agreement(world)
    incident = await world.incident(impact=1, urgency=1)  # 1 h response, 4 h resolution
    await world.move(incident, "in_progress")  # response met
    assert await sla_events(database, settings, clock.now()) == 0
    clock.set(datetime(2026, 3, 2, 11, 59, tzinfo=UTC))
    assert await sla_events(database, settings, clock.now()) == 0
    clock.set(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))  # 75 % of 4 h
    assert await sla_events(database, settings, clock.now()) == 1
    assert await sla_events(database, settings, clock.now()) == 0
    clock.set(datetime(2026, 3, 2, 13, 0, tzinfo=UTC))
    assert await sla_events(database, settings, clock.now()) == 1
    clock.advance(hours=5)
    assert await sla_events(database, settings, clock.now()) == 0
    events = await _events(database)
    assert [(e, d["kind"]) for e, d in events] == [
        ("sla.warning", "resolution"),
        ("sla.breached", "resolution"),
    ]
    warning, breach = events[0][1], events[1][1]
    assert warning == {
        "incident_id": incident["id"],
        "number": incident["number"],
        "kind": "resolution",
        "percent": 75.0,
        "due_at": "2026-03-02T13:00:00Z",
    }
    assert breach["percent"] == 100.0
    escalated = await fetch(world, incident)
    assert escalated["escalation_level"] == 1
    url = f"/incidents/{incident['id']}/escalations"
    escalations = ok(await world.agent.get(url), 200)["items"]
    assert [(e["escalation_level"], e["reason"], e["created_by_id"]) for e in escalations] == [
        (1, "sla_breach", None)
    ]


async def test_a_breach_is_due_in_working_hours_never_at_midnight(
    world: World, clock: ManualClock, database: Database, settings: Settings
) -> None:
    await office_agreement(world)
    clock.set(datetime(2026, 3, 6, 15, 0, tzinfo=UTC))  # Friday 15:00
    incident = await world.incident(impact=1, urgency=1)
    await world.move(incident, "in_progress")
    resolution = clocks_of(incident)["resolution"]
    assert resolution["due_at"] == "2026-03-09T11:00:00Z"  # Monday 11:00, not the weekend
    for hour in (18, 23):  # Friday evening: the weekend is not counted
        clock.set(datetime(2026, 3, 6, hour, 0, tzinfo=UTC))
        assert await sla_events(database, settings, clock.now()) == 0
    clock.set(datetime(2026, 3, 9, 0, 0, tzinfo=UTC))  # Monday midnight: nothing yet
    assert await sla_events(database, settings, clock.now()) == 0
    clock.set(datetime(2026, 3, 9, 10, 0, tzinfo=UTC))
    assert await sla_events(database, settings, clock.now()) == 1
    clock.set(datetime(2026, 3, 9, 11, 0, tzinfo=UTC))
    assert await sla_events(database, settings, clock.now()) == 1
    assert [e for e, _ in await _events(database)] == ["sla.warning", "sla.breached"]


async def test_an_escalated_incident_is_not_escalated_again(
    world: World, clock: ManualClock, database: Database, settings: Settings
) -> None:
    await office_agreement(world)
    incident = await world.incident(impact=1, urgency=1)
    ok(
        await world.customer_a.post(
            f"/incidents/{incident['id']}/escalations", json={"reason": "poor_experience"}
        ),
        201,
    )
    clock.advance(hours=5)
    await sla_events(database, settings, clock.now())
    assert (await fetch(world, incident))["escalation_level"] == 1


# --- reports --------------------------------------------------------------------------------


async def known_data(world: World, clock: ManualClock) -> None:
    """Org A, P1: one acknowledged after 30 min and resolved after 1 h (both met), one opened at
    10:00 and left open (response due 11:00, resolution due 14:00: both breached by Tuesday).
    Org B, P5: opened 10:00, acknowledged 11:00, resolved 12:00 (both met)."""
    await office_agreement(world)
    met = await world.incident(impact=1, urgency=1)
    clock.advance(minutes=30)
    await world.move(met, "in_progress")
    clock.advance(minutes=30)
    await world.move(met, "resolved", **RESOLVE)
    await world.incident(impact=1, urgency=1)
    other = await world.incident(world.customer_b)
    clock.advance(hours=1)
    await world.move(other, "in_progress")
    clock.advance(hours=1)
    await world.move(other, "resolved", **RESOLVE)
    clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))


async def test_metrics_on_a_known_data_set(world: World, clock: ManualClock) -> None:
    await known_data(world, clock)
    params = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-08T00:00:00Z", "group_by": "priority"}
    items = ok(await world.manager.get("/slm/metrics", params=params), 200)["items"]
    assert items == [
        {
            "key": 1,
            "opened": 2,
            "resolved": 1,
            "response_met": 1,
            "response_breached": 1,
            "resolution_met": 1,
            "resolution_breached": 1,
            "compliance_percent": 50.0,
            "mtta_seconds": 1800,
            "mttr_seconds": 3600,
        },
        {
            "key": 5,
            "opened": 1,
            "resolved": 1,
            "response_met": 1,
            "response_breached": 0,
            "resolution_met": 1,
            "resolution_breached": 0,
            "compliance_percent": 100.0,
            "mtta_seconds": 3600,
            "mttr_seconds": 7200,
        },
    ]
    # Durations are whole seconds (API conventions), not 1800.0.
    assert all(type(i[k]) is int for i in items for k in ("mtta_seconds", "mttr_seconds"))
    by_org = ok(
        await world.manager.get("/slm/metrics", params={**params, "group_by": "organization"}), 200
    )["items"]
    assert {i["key"]: i["opened"] for i in by_org} == {world.org_a["id"]: 2, world.org_b["id"]: 1}
    empty = ok(
        await world.manager.get(
            "/slm/metrics", params={"from": "2027-01-01T00:00:00Z", "to": "2027-02-01T00:00:00Z"}
        ),
        200,
    )
    assert empty["items"] == []


async def test_customers_get_their_own_sla_report_only(world: World, clock: ManualClock) -> None:
    await known_data(world, clock)
    items = ok(
        await world.customer_b.get("/slm/metrics", params={"group_by": "organization"}), 200
    )["items"]
    assert [i["key"] for i in items] == [world.org_b["id"]]
    response = await world.customer_b.get("/slm/metrics", params={"group_by": "group"})
    assert response.status_code == 403
    breaches = ok(await world.customer_b.get("/slm/breaches"), 200)["items"]
    assert breaches == []
    backlog = ok(await world.customer_b.get("/slm/backlog"), 200)["items"]
    assert backlog == []


async def test_metrics_as_csv(world: World, clock: ManualClock) -> None:
    await known_data(world, clock)
    response = await world.manager.get(
        "/slm/metrics", params={"group_by": "region"}, headers={"Accept": "text/csv"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().splitlines()
    assert lines[0] == (
        "key,opened,resolved,response_met,response_breached,resolution_met,"
        "resolution_breached,compliance_percent,mtta_seconds,mttr_seconds"
    )
    assert lines[1].startswith("msk,3,2,2,1,2,1,66.67,")


async def test_backlog_and_breaches(world: World, clock: ManualClock) -> None:
    await known_data(world, clock)
    backlog = ok(await world.manager.get("/slm/backlog", params={"group_by": "priority"}), 200)[
        "items"
    ]
    assert backlog == [{"key": 1, "count": 1}]
    breaches = ok(await world.manager.get("/slm/breaches"), 200)["items"]
    assert [(b["priority"], b["kind"]) for b in breaches] == [(1, "resolution"), (1, "response")]
    assert breaches[0]["breached_at"] == "2026-03-02T14:00:00Z"
    assert breaches[1]["breached_at"] == "2026-03-02T11:00:00Z"
    assert breaches[0]["due_at"] == "2026-03-02T14:00:00Z"
    page = ok(await world.manager.get("/slm/breaches", params={"limit": 1}), 200)
    rest = ok(await world.manager.get("/slm/breaches", params={"cursor": page["next_cursor"]}), 200)
    assert [b["kind"] for b in page["items"] + rest["items"]] == ["resolution", "response"]
    window = ok(
        await world.manager.get(
            "/slm/breaches", params={"from": "2026-03-02T13:00:00Z", "to": "2026-03-02T15:00:00Z"}
        ),
        200,
    )["items"]
    assert [b["kind"] for b in window] == ["resolution"]


async def agreement_changed_to_900(world: World) -> tuple[str, dict[str, Any]]:
    """An agreement on an always-on calendar whose resolution target goes from 600 s (seen by
    an incident made in between) to 900 s: its id and its body as last written."""
    cal = await calendar(world.manager, always_on=True, hours={})
    agreement_body: dict[str, Any] = {
        "name": "A",
        "calendar_id": cal["id"],
        "targets": [{"priority": 5, "response_seconds": 60, "resolution_seconds": 600}],
    }
    created = ok(await world.manager.post("/slm/agreements", json=agreement_body), 201)
    assert clocks_of(await world.incident())["resolution"]["target_seconds"] == 600
    agreement_body["targets"][0]["resolution_seconds"] = 900
    ok(await world.manager.put(f"/slm/agreements/{created['id']}", json=agreement_body), 200)
    return created["id"], agreement_body


async def test_a_keyed_create_sees_a_configuration_change(world: World) -> None:
    """A create with an Idempotency-Key that finds the configuration changed is done again in
    a new transaction, and its key then replays what was written."""
    await agreement_changed_to_900(world)
    keyed = {"Idempotency-Key": "after-the-change"}
    body = {"title": "Calls drop"}
    first = ok(await world.customer_a.post("/incidents", json=body, headers=keyed), 201)
    assert clocks_of(first)["resolution"]["target_seconds"] == 900
    again = await world.customer_a.post("/incidents", json=body, headers=keyed)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first
    numbers = [i["number"] for i in ok(await world.agent.get("/incidents"), 200)["items"]]
    assert sorted(numbers) == ["INC-MSK-0000001", "INC-MSK-0000002"]


async def test_a_create_that_always_finds_the_configuration_changed_is_refused(
    world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done again twice, then a 503 that the client may retry at once; nothing is written."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite reads the configuration's version before it writes")
    await world.incident()
    before = ok(await world.agent.get("/incidents"), 200)["items"]
    monkeypatch.setattr(versions, "expected", lambda name, version: {f"{name}_version": -1})
    response = await world.customer_a.post("/incidents", json={"title": "Calls drop"})
    assert problem(response, 503)["type"] == "urn:sdms:problem:unavailable"
    assert "configuration changed" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"
    monkeypatch.undo()
    assert ok(await world.agent.get("/incidents"), 200)["items"] == before
    assert (await world.incident())["number"] == "INC-MSK-0000002"


async def test_metrics_input_is_validated(world: World) -> None:
    for params in ({"group_by": "colour"}, {"from": "yesterday"}, {"to": "2026-03-01T00:00:00"}):
        assert (await world.manager.get("/slm/metrics", params=params)).status_code == 422
    assert (
        await world.manager.get("/slm/backlog", params={"group_by": "region"})
    ).status_code == 422
    response = await world.manager.get("/slm/metrics", params={"from": z(datetime.now(UTC))})
    assert response.status_code == 200


async def test_configuration_changes_apply_to_the_next_incident(
    world: World, clock: ManualClock
) -> None:
    """The configuration is cached per process; a change is seen by the very next write."""
    agreement_id, agreement_body = await agreement_changed_to_900(world)
    assert clocks_of(await world.incident())["resolution"]["target_seconds"] == 900
    other = await calendar(world.manager, name="Office")
    agreement_body["calendar_id"] = other["id"]
    ok(await world.manager.put(f"/slm/agreements/{agreement_id}", json=agreement_body), 200)
    clock.set(datetime(2026, 3, 7, 10, 0, tzinfo=UTC))  # a Saturday: office hours resume Monday
    incident = await world.incident()
    assert clocks_of(incident)["resolution"]["due_at"] == "2026-03-09T09:15:00Z"
    matrix = {
        "1": {"1": 5, "2": 5, "3": 5},
        "2": {"1": 5, "2": 5, "3": 5},
        "3": {"1": 5, "2": 5, "3": 5},
    }
    ok(await world.admin.put("/slm/priority-matrix", json={"matrix": matrix}), 200)
    assert (await world.incident(impact=1, urgency=1))["priority"] == 5
