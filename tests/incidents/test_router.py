"""Incident management over HTTP (section 3), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from app.core.changelog import change_log
from app.core.clock import ManualClock
from app.core.db import Database
from app.itil.numbers import record_counters
from tests.factories import Api, World, make_user, ok, problem

NUMBER = re.compile(r"^INC-MSK-\d{7}$")
INTERNAL = ("assignee_id", "group_id", "problem_id", "caused_by_change_id", "created_by_id")


# --- create ---------------------------------------------------------------------------------


async def test_create_requires_a_key(api: Api) -> None:
    response = await api.post("/incidents", json={"title": "x"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_customer_creates_for_its_own_organization(world: World) -> None:
    incident = await world.incident(world.customer_a, organization_id=world.org_b["id"])
    assert incident["organization_id"] == world.org_a["id"]
    assert incident["state"] == "new"
    assert NUMBER.match(incident["number"])
    assert incident["channel"] == "api"
    assert incident["request_type"] == "incident"
    assert incident["sla"] == []
    assert incident["opened_at"] == incident["created_at"]
    for field in INTERNAL:
        assert field not in incident


async def test_numbers_are_sequential_and_unique(world: World) -> None:
    numbers = [(await world.incident())["number"] for _ in range(3)]
    assert numbers == ["INC-MSK-0000001", "INC-MSK-0000002", "INC-MSK-0000003"]


async def test_numbers_grow_past_seven_digits(world: World, database: Database) -> None:
    async with database.transaction() as conn:
        if database.dialect == "postgresql":
            await conn.execute(text("SELECT setval('inc_number_seq', 9999999)"))
        else:
            await conn.execute(insert(record_counters).values(prefix="INC", value=9999999))
    assert (await world.incident())["number"] == "INC-MSK-10000000"
    assert (await world.incident())["number"] == "INC-MSK-10000001"


async def test_staff_must_name_an_existing_organization(world: World) -> None:
    response = await world.agent.post("/incidents", json={"title": "No org"})
    assert response.status_code == 422
    assert ["body", "organization_id"] in [e["loc"] for e in response.json()["errors"]]
    response = await world.agent.post(
        "/incidents",
        json={"title": "Ghost org", "organization_id": "01890000-0000-7000-8000-000000000000"},
    )
    assert response.status_code == 422


async def test_references_must_exist(world: World) -> None:
    for field in ("service_id", "group_id", "assignee_id"):
        response = await world.agent.post(
            "/incidents",
            json={
                "title": "t",
                "organization_id": world.org_a["id"],
                field: "01890000-0000-7000-8000-000000000000",
            },
        )
        assert response.status_code == 422, field


async def test_assignee_must_be_staff(world: World) -> None:
    response = await world.agent.post(
        "/incidents",
        json={
            "title": "t",
            "organization_id": world.org_a["id"],
            "assignee_id": world.customer_a_user["id"],
        },
    )
    assert response.status_code == 422


@pytest.mark.parametrize("field", ["assignee_id", "group_id", "opened_at"])
async def test_customers_cannot_set_internal_fields(world: World, field: str) -> None:
    value = world.agent_user["id"] if field == "assignee_id" else world.group["id"]
    if field == "opened_at":
        value = "2026-01-01T00:00:00Z"
    response = await world.customer_a.post("/incidents", json={"title": "t", field: value})
    assert response.status_code == 422


async def test_priority_comes_from_impact_and_urgency(world: World) -> None:
    incident = await world.incident(impact=2, urgency=3)
    assert incident["priority"] == 4
    incident = await world.incident(impact=1, urgency=2)
    assert incident["priority"] == 2
    assert (await world.incident())["priority"] == 5  # defaults: impact 3, urgency 3


async def test_major_forces_impact_and_urgency_one(world: World) -> None:
    incident = await world.incident(major=True, impact=3, urgency=3)
    assert (incident["impact"], incident["urgency"], incident["priority"]) == (1, 1, 1)


async def test_priority_follows_a_changed_matrix(world: World) -> None:
    matrix = {
        "1": {"1": 1, "2": 1, "3": 2},
        "2": {"1": 2, "2": 3, "3": 3},
        "3": {"1": 3, "2": 4, "3": 4},
    }
    assert (
        await world.agent.put("/slm/priority-matrix", json={"matrix": matrix})
    ).status_code == 403
    ok(await world.admin.put("/slm/priority-matrix", json={"matrix": matrix}), 200)
    assert ok(await world.customer_a.get("/slm/priority-matrix"), 200)["matrix"] == matrix
    assert (await world.incident(impact=3, urgency=3))["priority"] == 4
    bad = {"matrix": {"1": {"1": 1}}}
    assert (await world.admin.put("/slm/priority-matrix", json=bad)).status_code == 422


async def test_replacing_the_matrix_honours_if_match(world: World) -> None:
    path = "/slm/priority-matrix"
    first = ok(await world.admin.get(path), 200)
    assert (first["version"], first["matrix"]["3"]["3"]) == (0, 5)  # the default, never saved
    lenient = {**first["matrix"], "3": {"1": 3, "2": 4, "3": 4}}
    stale = {"If-Match": '"1"'}
    problem(await world.admin.put(path, json={"matrix": lenient}, headers=stale), 412)
    saved = await world.admin.put(path, json={"matrix": lenient}, headers={"If-Match": '"0"'})
    assert (ok(saved, 200)["version"], saved.headers["etag"]) == (1, '"1"')
    strict = {**lenient, "3": {"1": 3, "2": 4, "3": 5}}
    refused = await world.admin.put(path, json={"matrix": strict}, headers={"If-Match": '"0"'})
    problem(refused, 412)
    assert ok(await world.admin.get(path), 200) == {"matrix": lenient, "version": 1}
    ok(await world.admin.put(path, json={"matrix": strict}, headers=stale), 200)
    assert ok(await world.admin.put(path, json={"matrix": strict}), 200)["version"] == 3


async def test_integration_imports_with_opened_at(world: World, clock: ManualClock) -> None:
    opened = (clock.now() - timedelta(days=3)).isoformat().replace("+00:00", "Z")
    incident = await world.incident(world.integration, opened_at=opened)
    assert incident["opened_at"] == opened
    assert incident["created_at"] != opened
    response = await world.agent.post(
        "/incidents",
        json={"title": "t", "organization_id": world.org_a["id"], "opened_at": opened},
    )
    assert response.status_code == 403
    future = (clock.now() + timedelta(hours=1)).isoformat()
    response = await world.integration.post(
        "/incidents",
        json={"title": "t", "organization_id": world.org_a["id"], "opened_at": future},
    )
    assert response.status_code == 422
    naive = "2026-01-01T10:00:00"
    response = await world.integration.post(
        "/incidents",
        json={"title": "t", "organization_id": world.org_a["id"], "opened_at": naive},
    )
    assert response.status_code == 422


async def test_create_refuses_state_and_derived_fields(world: World) -> None:
    for field, value in (("state", "resolved"), ("priority", 1), ("number", "INC-X-1")):
        response = await world.agent.post(
            "/incidents", json={"title": "t", "organization_id": world.org_a["id"], field: value}
        )
        assert response.status_code == 422, field


# --- read -----------------------------------------------------------------------------------


async def test_get_by_id_or_number_with_etag(world: World) -> None:
    incident = await world.incident()
    by_id = await world.agent.get(f"/incidents/{incident['id']}")
    by_number = await world.agent.get(f"/incidents/{incident['number'].lower()}")
    assert ok(by_id, 200) == ok(by_number, 200)
    assert by_id.headers["etag"] == '"1"'
    assert by_id.json()["assignee_id"] is None  # staff see internal fields


async def test_customers_of_another_organization_get_404(world: World) -> None:
    incident = await world.incident(world.customer_a)
    for ref in (incident["id"], incident["number"]):
        response = await world.customer_b.get(f"/incidents/{ref}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    for path, body in (
        ("/comments", {"body": "hi"}),
        ("/escalations", {"reason": "poor_experience"}),
        ("/confirm", None),
        ("/reject", {"reason": "no"}),
    ):
        response = await world.customer_b.post(f"/incidents/{incident['id']}{path}", json=body)
        assert response.status_code == 404, path
    assert (await world.customer_b.get(f"/incidents/{incident['id']}/journal")).status_code == 404
    assert (
        await world.customer_b.get(f"/incidents/{incident['id']}/escalations")
    ).status_code == 404


async def test_unknown_incident_is_404(world: World) -> None:
    for ref in ("01890000-0000-7000-8000-000000000000", "INC-MSK-0999999", "nonsense"):
        assert (await world.agent.get(f"/incidents/{ref}")).status_code == 404


async def test_list_is_confined_to_the_customers_organization(world: World) -> None:
    mine = await world.incident(world.customer_a)
    theirs = await world.incident(world.customer_b)
    listed = ok(await world.customer_a.get("/incidents"), 200)["items"]
    assert [i["id"] for i in listed] == [mine["id"]]
    for item in listed:
        for field in INTERNAL:
            assert field not in item
    everything = ok(await world.agent.get("/incidents"), 200)["items"]
    assert {i["id"] for i in everything} == {mine["id"], theirs["id"]}
    # Naming another organization does not widen a customer's view.
    listed = ok(
        await world.customer_a.get("/incidents", params={"organization_id": world.org_b["id"]}),
        200,
    )["items"]
    assert listed == []
    response = await world.customer_a.get(
        "/incidents", params={"assignee_id": world.agent_user["id"]}
    )
    assert response.status_code == 403


async def test_list_filters(world: World, clock: ManualClock) -> None:
    first = await world.incident(title="Billing export fails", impact=1, urgency=1)
    clock.advance(minutes=5)
    second = await world.incident(world.customer_b, title="Portal slow")
    await world.move(second, "in_progress")

    async def ids(**params: Any) -> list[str]:
        items = ok(await world.agent.get("/incidents", params=params), 200)["items"]
        return [i["id"] for i in items]

    assert await ids(state="new") == [first["id"]]
    assert await ids(state=["new", "in_progress"]) == [second["id"], first["id"]]
    assert await ids(priority=1) == [first["id"]]
    assert await ids(organization_id=world.org_b["id"]) == [second["id"]]
    assert await ids(assignee_id=world.agent_user["id"]) == [second["id"]]
    assert await ids(q="billing") == [first["id"]]
    assert await ids(q="100%") == []
    cut = (clock.now() - timedelta(minutes=1)).isoformat()
    assert await ids(created_after=cut) == [second["id"]]
    assert await ids(created_before=cut) == [first["id"]]
    assert await ids(region="msk", sort="priority") == [first["id"], second["id"]]
    assert (await world.agent.get("/incidents", params={"state": "bogus"})).status_code == 422
    assert (await world.agent.get("/incidents", params={"priority": 9})).status_code == 422


# --- patch ----------------------------------------------------------------------------------


async def test_patch_refuses_state_and_derived_fields(world: World) -> None:
    incident = await world.incident()
    bodies: list[dict[str, Any]] = [
        {"state": "closed"},
        {"priority": 1},
        {"sla": []},
        {"escalation_level": 2},
    ]
    for body in bodies:
        response = await world.agent.patch(f"/incidents/{incident['id']}", json=body)
        assert response.status_code == 422, body
    assert (
        "transitions"
        in (
            await world.agent.patch(f"/incidents/{incident['id']}", json={"state": "closed"})
        ).json()["detail"]
    )


async def test_patch_reclassifies_and_journals_every_change(world: World) -> None:
    incident = await world.incident()
    response = await world.agent.patch(
        f"/incidents/{incident['id']}",
        json={"impact": 1, "group_id": world.group["id"], "category": "billing"},
        headers={"If-Match": '"1"'},
    )
    updated = ok(response, 200)
    assert response.headers["etag"] == '"2"'
    assert (updated["impact"], updated["priority"], updated["version"]) == (1, 3, 2)
    journal = ok(await world.agent.get(f"/incidents/{incident['id']}/journal"), 200)["items"]
    changes = {e["field"]: (e["old"], e["new"]) for e in journal if e["kind"] == "field_change"}
    assert changes["impact"] == (3, 1)
    assert changes["priority"] == (5, 3)
    assert changes["group_id"] == (None, world.group["id"])
    assert changes["category"] == (None, "billing")
    assert all(e["author_id"] == world.agent_user["id"] for e in journal if e["field"] != "state")


async def test_patch_with_a_stale_etag_changes_nothing(world: World) -> None:
    incident = await world.incident()
    ok(await world.agent.patch(f"/incidents/{incident['id']}", json={"title": "First"}), 200)
    response = await world.agent.patch(
        f"/incidents/{incident['id']}", json={"title": "Second"}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 412
    assert ok(await world.agent.get(f"/incidents/{incident['id']}"), 200)["title"] == "First"


async def test_customers_cannot_patch(world: World) -> None:
    incident = await world.incident()
    response = await world.customer_a.patch(f"/incidents/{incident['id']}", json={"title": "x"})
    assert response.status_code == 403


async def test_patch_cannot_clear_required_fields(world: World) -> None:
    incident = await world.incident()
    for field in ("title", "impact", "organization_id", "channel"):
        response = await world.agent.patch(f"/incidents/{incident['id']}", json={field: None})
        assert response.status_code == 422, field


# --- transitions over HTTP -------------------------------------------------------------------

REQUIRED = {
    "on_hold": {"hold_reason": "awaiting_vendor"},
    "resolved": {"resolution_code": "solved", "resolution_notes": "Fixed the trunk."},
    "closed": {"confirmation_note": "Confirmed by phone."},
    "cancelled": {"reason": "Duplicate report."},
    "in_progress": {"reason": "Customer says it is back."},
    "new": {},
}
PATH_TO = {
    "new": [],
    "in_progress": ["in_progress"],
    "on_hold": ["on_hold"],
    "resolved": ["resolved"],
    "closed": ["resolved", "closed"],
    "cancelled": ["cancelled"],
}
ALLOWED = {
    "new": {"in_progress", "on_hold", "resolved", "cancelled"},
    "in_progress": {"on_hold", "resolved", "cancelled"},
    "on_hold": {"in_progress", "resolved", "cancelled"},
    "resolved": {"closed", "in_progress"},
    "closed": set(),
    "cancelled": set(),
}


@pytest.mark.parametrize("source", list(PATH_TO))
async def test_every_transition_pair_over_http(world: World, source: str) -> None:
    async def incident_in(state: str) -> dict[str, Any]:
        incident = await world.incident()
        for step in PATH_TO[state]:
            incident = await world.move(incident, step, **REQUIRED[step])
        assert incident["state"] == state
        return incident

    refused = await incident_in(source)
    for target in REQUIRED:
        if target in ALLOWED[source]:
            moved = await world.move(await incident_in(source), target, **REQUIRED[target])
            assert moved["state"] == target
        else:
            response = await world.agent.post(
                f"/incidents/{refused['id']}/transitions", json={"to": target, **REQUIRED[target]}
            )
            assert response.status_code == 409, (source, target)
            detail = response.json()["detail"]
            for allowed in ALLOWED[source]:
                assert allowed in detail
    after = ok(await world.agent.get(f"/incidents/{refused['id']}"), 200)
    assert after["version"] == refused["version"]  # refused moves changed nothing


async def test_transition_requirements_over_http(world: World) -> None:
    incident = await world.incident()
    url = f"/incidents/{incident['id']}/transitions"
    for body, missing in (
        ({"to": "on_hold"}, "hold_reason"),
        ({"to": "on_hold", "hold_reason": "awaiting_customer"}, "comment"),
        ({"to": "resolved", "resolution_code": "solved"}, "resolution_notes"),
        ({"to": "cancelled"}, "reason"),
    ):
        response = await world.agent.post(url, json=body)
        assert response.status_code == 422, body
        assert ["body", missing] in [e["loc"] for e in response.json()["errors"]]
    assert (await world.agent.post(url, json={"to": "bogus"})).status_code == 422
    # A required field already on the record is enough.
    ok(
        await world.agent.patch(
            f"/incidents/{incident['id']}",
            json={"resolution_code": "workaround", "resolution_notes": "Use the backup."},
        ),
        200,
    )
    resolved = await world.move(incident, "resolved")
    assert resolved["resolution_code"] == "workaround"
    assert resolved["resolved_at"] is not None


async def test_start_work_acknowledges_and_assigns(world: World, clock: ManualClock) -> None:
    incident = await world.incident()
    clock.advance(minutes=7)
    moved = await world.move(incident, "in_progress")
    assert moved["assignee_id"] == world.agent_user["id"]
    assert moved["acknowledged_at"] == clock.now().isoformat().replace("+00:00", "Z")


async def test_customers_use_confirm_and_reject_not_transitions(world: World) -> None:
    incident = await world.incident()
    response = await world.customer_a.post(
        f"/incidents/{incident['id']}/transitions", json={"to": "cancelled", "reason": "x"}
    )
    assert response.status_code == 403
    resolved = await world.move(incident, "resolved", **REQUIRED["resolved"])
    assert (await world.agent.post(f"/incidents/{incident['id']}/confirm")).status_code == 403
    rejected = ok(
        await world.customer_a.post(
            f"/incidents/{resolved['id']}/reject", json={"reason": "Still dropping calls"}
        ),
        200,
    )
    assert (rejected["state"], rejected["reopen_count"]) == ("in_progress", 1)
    assert rejected["resolution_code"] is None
    await world.move(rejected, "resolved", **REQUIRED["resolved"])
    closed = ok(await world.customer_a.post(f"/incidents/{incident['id']}/confirm"), 200)
    assert closed["state"] == "closed"
    assert closed["closed_at"] is not None
    assert (
        await world.customer_a.post(f"/incidents/{incident['id']}/reject", json={"reason": "x"})
    ).status_code == 409


async def test_reject_needs_a_reason_and_confirm_needs_a_resolution(world: World) -> None:
    incident = await world.incident()
    assert (await world.customer_a.post(f"/incidents/{incident['id']}/confirm")).status_code == 409
    # Nor can a customer reject what was never resolved: that would acknowledge the incident
    # and stop its response clock. Not from new, nor from on hold.
    held = await world.incident()
    await world.move(held, "on_hold", hold_reason="awaiting_vendor")
    for unresolved in (incident, held):
        url = f"/incidents/{unresolved['id']}"
        before = ok(await world.agent.get(url), 200)
        refused = await world.customer_a.post(f"{url}/reject", json={"reason": "x"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"] == "urn:sdms:problem:transition-not-allowed"
        assert "Only a resolved incident" in refused.json()["detail"]
        assert ok(await world.agent.get(url), 200) == before
    await world.move(incident, "resolved", **REQUIRED["resolved"])
    response = await world.customer_a.post(f"/incidents/{incident['id']}/reject", json={})
    assert response.status_code == 422


async def test_final_incidents_only_take_agent_comments(world: World) -> None:
    incident = await world.incident()
    await world.move(incident, "cancelled", reason="Raised twice")
    url = f"/incidents/{incident['id']}"
    assert (await world.agent.patch(url, json={"title": "x"})).status_code == 409
    assert (
        await world.agent.post(f"{url}/transitions", json={"to": "in_progress"})
    ).status_code == 409
    assert (
        await world.agent.post(f"{url}/escalations", json={"reason": "poor_experience"})
    ).status_code == 409
    assert (await world.customer_a.post(f"{url}/comments", json={"body": "hi"})).status_code == 409
    ok(await world.agent.post(f"{url}/comments", json={"body": "For the record."}), 201)


# --- comments and journal -------------------------------------------------------------------


async def test_comments_and_what_customers_see(world: World) -> None:
    incident = await world.incident()
    url = f"/incidents/{incident['id']}"
    note = ok(await world.agent.post(f"{url}/comments", json={"body": "Checking logs."}), 201)
    assert note["public"] is False  # staff default: internal work note
    reply = ok(
        await world.agent.post(f"{url}/comments", json={"body": "We are on it.", "public": True}),
        201,
    )
    assert reply["public"] is True
    mine = ok(await world.customer_a.post(f"{url}/comments", json={"body": "Thanks"}), 201)
    assert mine["public"] is True
    response = await world.customer_a.post(f"{url}/comments", json={"body": "x", "public": False})
    assert response.status_code == 403
    await world.move(incident, "in_progress")
    ok(await world.agent.patch(url, json={"category": "telephony"}), 200)

    staff_view = ok(await world.agent.get(f"{url}/journal"), 200)["items"]
    customer_view = ok(await world.customer_a.get(f"{url}/journal"), 200)["items"]
    assert "Checking logs." in [e["body"] for e in staff_view]
    assert "Checking logs." not in [e["body"] for e in customer_view]
    assert {e["field"] for e in customer_view if e["kind"] == "field_change"} == {"state"}
    times = [datetime.fromisoformat(e["created_at"]) for e in staff_view]
    assert times == sorted(times)
    states = [(e["old"], e["new"]) for e in customer_view if e["field"] == "state"]
    assert states == [(None, "new"), ("new", "in_progress")]
    # Who wrote: the customer sees its own organization's authors, and of staff the role only.
    authors = {e["body"] or e["new"]: (e["author_role"], e["author_id"]) for e in customer_view}
    assert authors["Thanks"] == ("customer", world.customer_a_user["id"])
    assert authors["We are on it."] == ("agent", None)
    assert authors["in_progress"] == ("agent", None)
    staff_authors = {e["body"] or e["new"]: e["author_id"] for e in staff_view}
    assert staff_authors["We are on it."] == world.agent_user["id"]


async def test_customer_reply_resumes_an_incident_awaiting_it(world: World) -> None:
    incident = await world.incident()
    waiting = await world.move(
        incident, "on_hold", hold_reason="awaiting_customer", comment="Which firmware version?"
    )
    assert waiting["hold_reason"] == "awaiting_customer"
    journal = ok(await world.customer_a.get(f"/incidents/{incident['id']}/journal"), 200)["items"]
    assert "Which firmware version?" in [e["body"] for e in journal]  # the question is public
    ok(
        await world.customer_a.post(
            f"/incidents/{incident['id']}/comments", json={"body": "Version 7.2"}
        ),
        201,
    )
    resumed = ok(await world.agent.get(f"/incidents/{incident['id']}"), 200)
    assert (resumed["state"], resumed["hold_reason"]) == ("in_progress", None)


async def test_waiting_for_the_customer_starts_only_with_the_question(world: World) -> None:
    """A PATCH cannot turn another hold into waiting for the customer: that wait starts with
    the question asked (a public comment), which only the transition carries."""
    incident = await world.incident()
    held = await world.move(incident, "on_hold", hold_reason="awaiting_change")
    url = f"/incidents/{incident['id']}"
    refused = await world.agent.patch(url, json={"hold_reason": "awaiting_customer"})
    assert problem(refused, 422)["errors"][0]["loc"] == ["body", "hold_reason"]
    assert ok(await world.agent.get(url), 200) == held
    # Between the other hold reasons a PATCH is enough, and out of waiting for the customer.
    vendor = ok(await world.agent.patch(url, json={"hold_reason": "awaiting_vendor"}), 200)
    assert vendor["hold_reason"] == "awaiting_vendor"


async def test_a_resolved_incident_keeps_its_resolution(world: World) -> None:
    incident = await world.incident()
    resolved = await world.move(incident, "resolved", **REQUIRED["resolved"])
    url = f"/incidents/{incident['id']}"
    for patch in (
        {"resolution_code": None},
        {"resolution_notes": None},
        {"resolution_notes": ""},
        {"resolution_code": None, "resolution_notes": None},
    ):
        problem(await world.agent.patch(url, json=patch), 422)
    assert ok(await world.agent.get(url), 200) == resolved
    better = ok(await world.agent.patch(url, json={"resolution_notes": "Rebooted the SBC."}), 200)
    assert better["resolution_notes"] == "Rebooted the SBC."


async def test_confirm_and_reject_honour_if_match(world: World) -> None:
    incident = await world.incident()
    resolved = await world.move(incident, "resolved", **REQUIRED["resolved"])
    url = f"/incidents/{incident['id']}"
    stale = {"If-Match": f'"{resolved["version"] - 1}"'}
    current = {"If-Match": f'"{resolved["version"]}"'}
    problem(await world.customer_a.post(f"{url}/confirm", headers=stale), 412)
    refused = await world.customer_a.post(f"{url}/reject", json={"reason": "no"}, headers=stale)
    problem(refused, 412)
    assert ok(await world.agent.get(url), 200) == resolved
    reopened = ok(
        await world.customer_a.post(f"{url}/reject", json={"reason": "no"}, headers=current), 200
    )
    assert reopened["state"] == "in_progress"
    await world.move(reopened, "resolved", **REQUIRED["resolved"])
    again = ok(await world.agent.get(url), 200)
    closed = await world.customer_a.post(
        f"{url}/confirm", headers={"If-Match": f'"{again["version"]}"'}
    )
    assert ok(closed, 200)["state"] == "closed"


async def test_a_vendor_hold_is_not_resumed_by_the_customer(world: World) -> None:
    incident = await world.incident()
    await world.move(incident, "on_hold", hold_reason="awaiting_vendor")
    ok(
        await world.customer_a.post(f"/incidents/{incident['id']}/comments", json={"body": "?"}),
        201,
    )
    assert ok(await world.agent.get(f"/incidents/{incident['id']}"), 200)["state"] == "on_hold"


async def test_journal_pages_oldest_first(world: World) -> None:
    incident = await world.incident()
    for n in range(5):
        ok(
            await world.agent.post(f"/incidents/{incident['id']}/comments", json={"body": f"{n}"}),
            201,
        )
    page = ok(
        await world.agent.get(f"/incidents/{incident['id']}/journal", params={"limit": 3}), 200
    )
    assert [e["body"] for e in page["items"]][1:] == ["0", "1"]
    rest = ok(
        await world.agent.get(
            f"/incidents/{incident['id']}/journal", params={"cursor": page["next_cursor"]}
        ),
        200,
    )
    assert [e["body"] for e in rest["items"]] == ["2", "3", "4"]
    assert rest["next_cursor"] is None
    # A journal's cursor pages that incident's journal only.
    other = await world.incident()
    foreign = {"cursor": page["next_cursor"]}
    problem(await world.agent.get(f"/incidents/{other['id']}/journal", params=foreign), 422)


# --- escalations ----------------------------------------------------------------------------


async def test_escalation_levels_up_to_two(world: World) -> None:
    incident = await world.incident()
    url = f"/incidents/{incident['id']}/escalations"
    first = ok(await world.customer_a.post(url, json={"reason": "poor_experience"}), 201)
    assert first["escalation_level"] == 1
    assert first["created_by_id"] == world.customer_a_user["id"]
    second = ok(
        await world.agent.post(url, json={"reason": "reputation_risk", "note": "Press asks"}),
        201,
    )
    assert second["escalation_level"] == 2
    third = await world.agent.post(url, json={"reason": "data_loss_risk"})
    assert third.status_code == 409
    assert ok(await world.agent.get(f"/incidents/{incident['id']}"), 200)["escalation_level"] == 2
    listed = ok(await world.customer_a.get(url), 200)["items"]
    assert [(e["escalation_level"], e["reason"]) for e in listed] == [
        (1, "poor_experience"),
        (2, "reputation_risk"),
    ]
    assert (await world.agent.post(url, json={"reason": "bored"})).status_code == 422
    # A page like every list, oldest first; its cursor pages this incident's escalations only.
    first = ok(await world.agent.get(url, params={"limit": 1}), 200)
    assert [e["escalation_level"] for e in first["items"]] == [1]
    rest = ok(await world.agent.get(url, params={"cursor": first["next_cursor"]}), 200)
    assert ([e["escalation_level"] for e in rest["items"]], rest["next_cursor"]) == ([2], None)
    problem(await world.agent.get(url, params={"limit": 0}), 422)
    other = await world.incident()
    elsewhere = f"/incidents/{other['id']}/escalations"
    problem(await world.agent.get(elsewhere, params={"cursor": first["next_cursor"]}), 422)


async def test_customers_see_staff_escalations_without_their_note_or_author(world: World) -> None:
    incident = await world.incident()
    url = f"/incidents/{incident['id']}/escalations"
    mine = {"reason": "poor_experience", "note": "Nobody called back"}
    ok(await world.customer_a.post(url, json=mine), 201)
    staff = {"reason": "reputation_risk", "note": "Their CEO tweeted about it"}
    ok(await world.agent.post(url, json=staff), 201)
    # The journal keeps the staff note internal; the escalation list agrees with it.
    customer_view = ok(await world.customer_a.get(url), 200)["items"]
    assert [(e["reason"], e["note"], e["created_by_id"]) for e in customer_view] == [
        ("poor_experience", "Nobody called back", world.customer_a_user["id"]),
        ("reputation_risk", None, None),
    ]
    journal = ok(await world.customer_a.get(f"/incidents/{incident['id']}/journal"), 200)
    assert "tweeted" not in str(journal)
    staff_view = ok(await world.agent.get(url), 200)["items"]
    assert [(e["note"], e["created_by_id"], e["created_by_role"]) for e in staff_view] == [
        ("Nobody called back", world.customer_a_user["id"], "customer"),
        ("Their CEO tweeted about it", world.agent_user["id"], "agent"),
    ]
    # The role it was written in decides: an agent who later becomes a customer of the same
    # organization does not make the note it wrote as staff public.
    turncoat, as_agent = await make_user(world.admin, "agent")
    second = f"/incidents/{(await world.incident())['id']}/escalations"
    ok(await as_agent.post(second, json=staff), 201)
    became = {"role": "customer", "organization_id": world.org_a["id"]}
    ok(await world.admin.patch(f"/users/{turncoat['id']}", json=became), 200)
    seen = ok(await world.customer_a.get(second), 200)["items"]
    assert [(e["note"], e["created_by_id"], e["created_by_role"]) for e in seen] == [
        (None, None, "agent")
    ]


async def test_functional_escalation_is_journaled(world: World) -> None:
    incident = await world.incident()
    ok(
        await world.agent.patch(
            f"/incidents/{incident['id']}", json={"group_id": world.group["id"]}
        ),
        200,
    )
    journal = ok(await world.agent.get(f"/incidents/{incident['id']}/journal"), 200)["items"]
    assert ("group_id", world.group["id"]) in [(e["field"], e["new"]) for e in journal]


# --- the change log -------------------------------------------------------------------------


async def test_every_write_is_in_the_change_log(world: World, database: Database) -> None:
    async with database.read() as conn:
        before = (await conn.execute(select(change_log.c.seq))).scalars().all()
    incident = await world.incident()
    await world.move(incident, "in_progress")
    ok(await world.agent.post(f"/incidents/{incident['id']}/comments", json={"body": "x"}), 201)
    async with database.read() as conn:
        rows = (
            await conn.execute(
                select(change_log)
                .where(change_log.c.seq > max(before, default=0))
                .order_by(change_log.c.seq)
            )
        ).all()
    events = [(r.entity, r.event) for r in rows]
    assert ("incident", "incident.created") in events
    assert ("incident", "incident.state_changed") in events
    assert events.count(("journal_entry", "journal_entry.created")) >= 3
    assert all(r.region == "msk" for r in rows)
    seqs = [r.seq for r in rows]
    assert seqs == sorted(set(seqs))
    created = next(r for r in rows if r.event == "incident.created")
    assert created.data["number"] == incident["number"]
    assert created.data["assignee_id"] is None  # the admin view, with internal fields


async def test_the_created_event_holds_the_record_as_an_admin_reads_it(
    world: World, database: Database
) -> None:
    """On PostgreSQL the number is drawn by the write itself and filled into the event there."""
    incident = await world.incident()
    async with database.read() as conn:
        created = (
            await conn.execute(
                select(change_log.c.data, change_log.c.entity_version).where(
                    change_log.c.event == "incident.created"
                )
            )
        ).one()
    assert created.data == ok(await world.admin.get(f"/incidents/{incident['id']}"), 200)
    assert created.data["number"] == incident["number"]
    assert created.entity_version == 1


async def test_a_refused_write_leaves_no_trace(world: World, database: Database) -> None:
    incident = await world.incident()
    async with database.read() as conn:
        count = len((await conn.execute(select(change_log.c.seq))).all())
    await world.agent.post(f"/incidents/{incident['id']}/transitions", json={"to": "closed"})
    await world.agent.patch(
        f"/incidents/{incident['id']}", json={"title": "x"}, headers={"If-Match": '"9"'}
    )
    async with database.read() as conn:
        assert len((await conn.execute(select(change_log.c.seq))).all()) == count


async def test_a_disabled_user_is_locked_out(world: World) -> None:
    user, key = await make_user(world.admin, "agent")
    assert (await key.get("/incidents")).status_code == 200
    ok(await world.admin.patch(f"/users/{user['id']}", json={"active": False}), 200)
    assert (await key.get("/incidents")).status_code == 401
