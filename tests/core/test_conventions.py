"""Section 1 of the contract, as a client relies on it: problems, request ids, lists, ETags,
Idempotency-Key, input limits, and hostile input. Incidents are the record type used."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from httpx import ASGITransport, AsyncClient

from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database, create_engine
from app.main import create_app
from tests.factories import Api, World, make_org, make_user, ok, problem

NOWHERE = "00000000-0000-7000-8000-00000000dead"
SQL = "'; DROP TABLE incidents; --"


async def count_incidents(world: World) -> int:
    return len(ok(await world.agent.get("/incidents", params={"limit": 200}), 200)["items"])


async def all_pages(caller: Api, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        page = ok(await caller.get("/incidents", params={**params, "cursor": cursor}), 200)
        assert len(page["items"]) <= params.get("limit", 50)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], "a page with a next cursor must not be empty"
    raise AssertionError("paging did not end")


def instant(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


# --- problem details ------------------------------------------------------------------------


async def test_errors_are_problem_details(api: Api, world: World) -> None:
    incident = await world.incident()
    path = f"/incidents/{incident['id']}"

    problem(await api.get("/incidents"), 401)
    problem(await world.customer_a.get("/groups"), 403)
    problem(await world.agent.get(f"/incidents/{NOWHERE}"), 404)
    problem(await world.agent.get("/no-such-endpoint"), 404)
    problem(await world.agent.get("/healthz/nope"), 404)
    not_allowed = problem(await world.agent.put(path, json={}), 405)
    assert not_allowed["title"]
    duplicate = {"name": "Again", "code": world.org_a["code"]}
    problem(await world.admin.post("/organizations", json=duplicate), 409)
    refused = problem(await world.agent.post(f"{path}/transitions", json={"to": "closed"}), 409)
    assert "in_progress" in refused["detail"]  # the allowed targets
    problem(await world.agent.patch(path, json={"title": "x"}, headers={"If-Match": '"9"'}), 412)
    too_big = {"title": "x", "description": "d" * (1024 * 1024)}
    problem(await world.customer_a.post("/incidents", json=too_big), 413)

    invalid = problem(await world.customer_a.post("/incidents", json={"impact": 7}), 422)
    locations = {tuple(e["loc"]) for e in invalid["errors"]}
    assert ("body", "title") in locations
    assert ("body", "impact") in locations
    # One type for every invalid input: the schema's checks, SDMS's own rules, the database's.
    by_rule = problem(await world.agent.patch(path, json={"hold_reason": "awaiting_vendor"}), 422)
    bad_query = problem(await world.agent.get("/incidents", params={"limit": 0}), 422)
    types = {invalid["type"], by_rule["type"], bad_query["type"]}
    assert types == {"urn:sdms:problem:validation-error"}
    # Every 422 carries `errors`, also when the failure is not tied to a field of the schema.
    reused = {"Idempotency-Key": "k-1"}
    ok(await world.customer_a.post("/incidents", json={"title": "a"}, headers=reused), 201)
    problem(await world.customer_a.post("/incidents", json={"title": "b"}, headers=reused), 422)


async def test_an_unexpected_failure_is_a_logged_500_problem_with_the_request_id(
    database: Database, settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, clock=clock, database=database, jobs=[])

    async def explode() -> None:
        raise RuntimeError("SELECT secret FROM vault")

    app.add_api_route("/api/v1/explode", explode)
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.ERROR):
        async with AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/api/v1/explode", headers={"X-Request-ID": "req-500"})
    body = problem(response, 500)
    assert response.headers["x-request-id"] == "req-500"
    assert "req-500" in body["detail"]
    assert "secret" not in response.text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("req-500" in r.getMessage() and r.exc_info for r in logged)


# --- request ids ----------------------------------------------------------------------------


async def test_request_id_is_echoed_or_generated_on_every_response(api: Api, world: World) -> None:
    answers = [
        await world.agent.get("/incidents", headers={"X-Request-ID": "client-1"}),
        await api.get("/incidents", headers={"X-Request-ID": "client-1"}),
        await world.agent.get(f"/incidents/{NOWHERE}", headers={"X-Request-ID": "client-1"}),
        await world.agent.get("/incidents?limit=0", headers={"X-Request-ID": "client-1"}),
        await world.agent.delete("/incidents", headers={"X-Request-ID": "client-1"}),
        await world.agent.post(
            "/incidents", content=b"x" * (1024 * 1024 + 1), headers={"X-Request-ID": "client-1"}
        ),
        await api.get("/healthz", headers={"X-Request-ID": "client-1"}),
    ]
    assert [r.status_code for r in answers] == [200, 401, 404, 422, 405, 413, 200]
    for response in answers:
        assert response.headers["x-request-id"] == "client-1"

    generated = [
        (await world.agent.get("/incidents")).headers["x-request-id"],
        (await api.get("/incidents")).headers["x-request-id"],
        (await world.agent.post("/incidents", content=b"{")).headers["x-request-id"],
        (await api.get("/readyz")).headers["x-request-id"],
    ]
    assert all(len(value) >= 16 for value in generated)
    assert len(set(generated)) == len(generated)
    # An unusable client id (spaces, oversized) is replaced rather than echoed.
    for bad in ("has spaces", "x" * 500):
        replaced = (await api.get("/healthz", headers={"X-Request-ID": bad})).headers
        assert replaced["x-request-id"] not in ("", bad)


# --- record shape ---------------------------------------------------------------------------


async def test_ids_are_uuids_and_timestamps_rfc3339_utc(world: World) -> None:
    incident = await world.incident()
    assert uuid.UUID(incident["id"]).version == 7
    for field in ("created_at", "updated_at", "opened_at"):
        assert instant(incident[field]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert instant(world.org_a["created_at"]) == instant(incident["created_at"])


# --- lists ----------------------------------------------------------------------------------


async def test_limit_bounds_and_default(world: World, clock: ManualClock) -> None:
    for bad in ("0", "201", "-1", "abc", "1.5", ""):
        body = problem(await world.agent.get("/incidents", params={"limit": bad}), 422)
        assert ["query", "limit"] in [e["loc"] for e in body["errors"]]
    for _ in range(51):
        clock.advance(seconds=1)
        await world.incident()
    first = ok(await world.agent.get("/incidents"), 200)
    assert len(first["items"]) == 50
    assert first["next_cursor"] is not None
    second = ok(await world.agent.get("/incidents", params={"cursor": first["next_cursor"]}), 200)
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None
    assert len(ok(await world.agent.get("/incidents", params={"limit": 200}), 200)["items"]) == 51
    one = ok(await world.agent.get("/incidents", params={"limit": 1}), 200)
    assert len(one["items"]) == 1
    assert one["items"][0]["id"] == first["items"][0]["id"]


async def test_last_page_has_no_cursor_even_when_exactly_full(world: World) -> None:
    for _ in range(4):
        await world.incident()
    first = ok(await world.agent.get("/incidents", params={"limit": 2}), 200)
    assert first["next_cursor"] is not None
    params = {"limit": 2, "cursor": first["next_cursor"]}
    second = ok(await world.agent.get("/incidents", params=params), 200)
    assert len(second["items"]) == 2
    assert second["next_cursor"] is None
    empty = ok(await world.customer_b.get("/incidents"), 200)
    assert empty == {"items": [], "next_cursor": None}


async def test_foreign_or_tampered_cursors_are_refused(world: World) -> None:
    for _ in range(3):
        await world.incident()
    cursor = ok(await world.agent.get("/incidents", params={"limit": 1}), 200)["next_cursor"]
    body, _, check = cursor.partition(".")
    flipped = ("A" if body[0] != "A" else "B") + body[1:]
    for bad in (
        "garbage",
        "....",
        f"{flipped}.{check}",
        f"{body}.{'0' * len(check)}",
        f"{body}.{check}x",
        cursor[:-1],
        "eyJhIjoxfQ.abc",
    ):
        response = await world.agent.get("/incidents", params={"limit": 1, "cursor": bad})
        assert ["query", "cursor"] in [e["loc"] for e in problem(response, 422)["errors"]], bad
    # A cursor belongs to its list: another list's, of the same order, is refused.
    for _ in range(2):
        await make_org(world.admin)
    orgs = ok(await world.admin.get("/organizations", params={"limit": 1}), 200)["next_cursor"]
    for path in ("/incidents", "/users"):
        response = await world.admin.get(path, params={"limit": 1, "cursor": orgs})
        assert ["query", "cursor"] in [e["loc"] for e in problem(response, 422)["errors"]], path
    # A cursor belongs to its sort order.
    for sort in ("created_at", "priority", "-priority", "updated_at"):
        response = await world.agent.get("/incidents", params={"cursor": cursor, "sort": sort})
        problem(response, 422)
    same = await world.agent.get("/incidents", params={"cursor": cursor, "sort": "-created_at"})
    assert len(ok(same, 200)["items"]) == 2
    # An empty cursor (a null `next_cursor` passed on) is the first page.
    first = ok(await world.agent.get("/incidents", params={"cursor": ""}), 200)
    assert len(first["items"]) == 3
    problem(await world.agent.get("/incidents", params={"sort": "title"}), 422)
    problem(await world.agent.get("/incidents", params={"sort": SQL}), 422)


async def test_a_cursor_continues_its_list_with_the_same_filters_only(world: World) -> None:
    """Sent with other filters, a cursor would page another list from its position: rows of
    the first list's next page left out and others let in. It is a 422 instead."""
    for urgency in (1, 2, 3, 1, 2, 3):
        await world.incident(impact=2, urgency=urgency)
    filters = [("priority", "2"), ("priority", "3"), ("organization_id", world.org_a["id"])]
    first = ok(await world.agent.get("/incidents", params=[*filters, ("limit", "2")]), 200)
    cursor = first["next_cursor"]
    for other in (
        [],  # the filters dropped: the whole list
        [("priority", "2")],
        [*filters, ("q", "Calls")],
        [*filters, ("state", "closed")],
        [*filters[:2], ("organization_id", world.org_b["id"])],
    ):
        response = await world.agent.get("/incidents", params=[*other, ("cursor", cursor)])
        detail = problem(response, 422)["errors"][0]
        assert detail["loc"] == ["query", "cursor"], other
        assert "other filters" in detail["msg"]
    # The same filters in another order (a repeated one's values in theirs), another page
    # size, and parameters that no list knows (a cache-buster) continue it.
    same = [filters[2], *filters[:2], ("limit", "10"), ("_", "1700000000"), ("cursor", cursor)]
    rest = ok(await world.agent.get("/incidents", params=same), 200)
    seen = {i["id"] for i in first["items"] + rest["items"]}
    assert len(seen) == 4 and rest["next_cursor"] is None
    # Of a single-valued filter the last value counts: its values in another order are another
    # list.
    last_counts = [("q", "nothing"), ("q", "Calls"), ("limit", "1")]
    page = ok(await world.agent.get("/incidents", params=last_counts), 200)
    swapped = [("q", "Calls"), ("q", "nothing"), ("cursor", page["next_cursor"])]
    problem(await world.agent.get("/incidents", params=swapped), 422)
    # Other lists bind theirs too: users by role, and a user's keys to that user.
    for _ in range(3):
        await make_user(world.admin, "agent")
    agents = ok(await world.admin.get("/users", params={"role": "agent", "limit": 1}), 200)
    response = await world.admin.get("/users", params={"cursor": agents["next_cursor"]})
    problem(response, 422)
    user, _key = await make_user(world.admin, "agent")
    ok(await world.admin.post(f"/users/{user['id']}/api-keys"), 201)
    keys = ok(await world.admin.get(f"/users/{user['id']}/api-keys", params={"limit": 1}), 200)
    path = f"/users/{world.agent_user['id']}/api-keys"
    problem(await world.admin.get(path, params={"cursor": keys["next_cursor"]}), 422)


async def test_every_sort_order_pages_in_the_right_order(world: World, clock: ManualClock) -> None:
    # impact/urgency -> priority 1..5, with ties; created_at with ties; updated_at reordered.
    levels = [(1, 1), (3, 3), (2, 2), (1, 2), (2, 3), (3, 3), (1, 1), (2, 2), (2, 3)]
    created = []
    for n, (impact, urgency) in enumerate(levels):
        if n % 3:
            clock.advance(seconds=1)  # every third incident shares the previous timestamp
        created.append(await world.incident(impact=impact, urgency=urgency))
    for n, incident in enumerate(reversed(created[2:7])):
        if n % 2:
            clock.advance(seconds=5)
        path = f"/incidents/{incident['id']}"
        ok(await world.agent.patch(path, json={"category": f"c{n}"}), 200)

    everything = ok(await world.agent.get("/incidents", params={"limit": 200}), 200)["items"]
    assert len(everything) == len(levels)
    assert {i["priority"] for i in everything} == {1, 2, 3, 4, 5}

    def key(field: str) -> Any:
        if field == "priority":
            return lambda i: (i["priority"], uuid.UUID(i["id"]))
        return lambda i: (instant(i[field]), uuid.UUID(i["id"]))

    for sort in ("created_at", "-created_at", "priority", "-priority", "updated_at", "-updated_at"):
        field = sort.removeprefix("-")
        expected = sorted(everything, key=key(field), reverse=sort.startswith("-"))
        for limit in (2, 4, 200):
            got = await all_pages(world.agent, {"sort": sort, "limit": limit})
            assert [i["id"] for i in got] == [i["id"] for i in expected], (sort, limit)
    default = await all_pages(world.agent, {"limit": 3})
    newest_first = sorted(everything, key=key("created_at"), reverse=True)
    assert [i["id"] for i in default] == [i["id"] for i in newest_first]


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "priority"])
async def test_paging_stays_correct_while_incidents_are_inserted(
    world: World, clock: ManualClock, sort: str
) -> None:
    before = []
    for n in range(7):
        if n % 2:
            clock.advance(seconds=1)
        before.append(await world.incident(impact=1 + n % 3))
    expected = [i["id"] for i in await all_pages(world.agent, {"sort": sort, "limit": 200})]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"sort": sort, "limit": 3, "cursor": cursor}
        page = ok(await world.agent.get("/incidents", params=params), 200)
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # New incidents arrive between page fetches, some at the very same instant.
        await world.incident(impact=1)
        clock.advance(seconds=1)
        await world.incident(impact=3)
    assert len(seen) == len(set(seen)), "an incident was answered twice"
    old = {i["id"] for i in before}
    assert [i for i in seen if i in old] == expected, "an old incident was skipped or moved"


async def test_repeated_filter_parameters_mean_or(world: World) -> None:
    new = await world.incident(impact=1, urgency=1)
    working = await world.incident(impact=3, urgency=3)
    await world.move(working, "in_progress")
    held = await world.incident(impact=2, urgency=2)
    await world.move(held, "on_hold", hold_reason="awaiting_vendor")
    other_org = await world.incident(
        world.agent, organization_id=world.org_b["id"], impact=1, urgency=2
    )

    def listed(page: dict[str, Any]) -> set[str]:
        return {i["id"] for i in page["items"]}

    agent = world.agent
    both = await agent.get("/incidents", params={"state": ["new", "in_progress"]})
    assert listed(ok(both, 200)) == {new["id"], working["id"], other_org["id"]}
    assert listed(ok(await agent.get("/incidents?state=on_hold"), 200)) == {held["id"]}
    extremes = await agent.get("/incidents", params={"priority": [1, 5]})
    assert listed(ok(extremes, 200)) == {new["id"], working["id"]}
    orgs = {"organization_id": [world.org_a["id"], world.org_b["id"]]}
    assert len(listed(ok(await agent.get("/incidents", params=orgs), 200))) == 4
    only_b = {"organization_id": world.org_b["id"]}
    assert listed(ok(await agent.get("/incidents", params=only_b), 200)) == {other_org["id"]}
    # Different parameters combine with AND.
    combined = {"state": ["new", "on_hold"], "priority": [3, 5]}
    assert listed(ok(await agent.get("/incidents", params=combined), 200)) == {held["id"]}
    # A customer's filters never reach past its organization.
    mine = await world.customer_a.get("/incidents", params=orgs)
    assert other_org["id"] not in listed(ok(mine, 200))
    assert ok(await world.customer_a.get("/incidents", params=only_b), 200)["items"] == []


async def test_bad_filter_parameters_are_named_in_a_422(world: World) -> None:
    agent = world.agent
    bad: list[tuple[dict[str, Any], list[Any]]] = [
        ({"state": ["new", "asleep"]}, ["query", "state", 1]),
        ({"priority": [1, 9]}, ["query", "priority", 1]),
        ({"organization_id": "org-a"}, ["query", "organization_id", 0]),
        ({"organization_id": [world.org_a["id"]] * 51}, ["query", "organization_id"]),
        ({"major": "perhaps"}, ["query", "major"]),
        ({"created_after": "2026-03-02T09:00:00"}, ["query", "created_after"]),
        ({"q": "x" * 201}, ["query", "q"]),
        ({"sort": "x" * 33}, ["query", "sort"]),
    ]
    for params, loc in bad:
        body = problem(await agent.get("/incidents", params=params), 422)
        assert loc in [e["loc"] for e in body["errors"]], (params, body)
    metrics = await agent.get("/slm/metrics", params={"state": "asleep"})
    assert ["query", "state", 0] in [e["loc"] for e in problem(metrics, 422)["errors"]]
    # A scalar parameter sent twice counts once (the last); unknown parameters are ignored.
    plain = await world.incident(impact=1, urgency=1)
    major = await world.incident(world.agent, major=True)

    false_last = ok(await agent.get("/incidents?major=true&major=false&colour=red"), 200)
    true_last = ok(await agent.get("/incidents?major=false&major=true"), 200)
    assert {i["id"] for i in false_last["items"]} == {plain["id"]}
    assert {i["id"] for i in true_last["items"]} == {major["id"]}
    # The caller is checked before the parameters: no key and bad parameters is a 401.
    problem(await world.admin.as_key(None).get("/incidents?limit=0&state=asleep"), 401)


async def test_text_search_treats_input_as_text(world: World) -> None:
    full = await world.incident(title="Disk 100% full", description="on db_01")
    plain = await world.incident(title="Disk 1000 full", description="on db101")
    quoted = await world.incident(title=SQL)

    async def search(q: str) -> set[str]:
        page = ok(await world.agent.get("/incidents", params={"q": q}), 200)
        return {i["id"] for i in page["items"]}

    assert await search("100%") == {full["id"]}
    assert await search("db_0") == {full["id"]}
    assert await search("DISK") == {full["id"], plain["id"]}
    assert await search(SQL) == {quoted["id"]}
    assert await search("' OR '1'='1") == set()
    assert await search("%") == {full["id"]}
    assert await search("\\") == set()
    assert await count_incidents(world) == 3


# --- ETag and If-Match ----------------------------------------------------------------------


async def test_etag_and_if_match(world: World) -> None:
    incident = await world.incident()
    path = f"/incidents/{incident['id']}"
    response = await world.agent.get(path)
    assert response.headers["etag"] == '"1"'
    by_number = await world.agent.get(f"/incidents/{incident['number']}")
    assert by_number.headers["etag"] == '"1"'

    changed = await world.agent.patch(path, json={"title": "Two"}, headers={"If-Match": '"1"'})
    assert ok(changed, 200)["version"] == 2
    assert changed.headers["etag"] == '"2"'
    stale = await world.agent.patch(path, json={"title": "Lost"}, headers={"If-Match": '"1"'})
    assert "2" in problem(stale, 412)["detail"]
    moved = await world.agent.post(
        f"{path}/transitions", json={"to": "in_progress"}, headers={"If-Match": '"1"'}
    )
    problem(moved, 412)
    current = await world.agent.get(path)
    assert (ok(current, 200)["title"], current.json()["version"]) == ("Two", 2)
    assert current.json()["state"] == "new"
    assert current.headers["etag"] == '"2"'

    anything = await world.agent.patch(path, json={"title": "Three"}, headers={"If-Match": "*"})
    assert ok(anything, 200)["title"] == "Three"
    assert anything.headers["etag"] == '"3"'
    listed = await world.agent.patch(path, json={"urgency": 1}, headers={"If-Match": '"1", "3"'})
    assert ok(listed, 200)["version"] == 4
    unconditional = await world.agent.patch(path, json={"title": "Four"})
    assert unconditional.headers["etag"] == '"5"'
    moved = await world.agent.post(
        f"{path}/transitions", json={"to": "in_progress"}, headers={"If-Match": '"5"'}
    )
    assert ok(moved, 200)["state"] == "in_progress"
    assert moved.headers["etag"] == '"6"'


async def test_racing_writes_with_one_if_match_let_exactly_one_through(world: World) -> None:
    incident = await world.incident()
    path = f"/incidents/{incident['id']}"
    answers = await asyncio.gather(
        *(
            world.agent.patch(path, json={"title": f"Take {n}"}, headers={"If-Match": '"1"'})
            for n in range(6)
        )
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [412] * 5, [r.text for r in answers]
    winner = next(r.json() for r in answers if r.status_code == 200)
    current = ok(await world.agent.get(path), 200)
    assert (current["title"], current["version"]) == (winner["title"], 2)


# --- Idempotency-Key ------------------------------------------------------------------------


async def test_idempotent_replay_returns_the_original_answer(world: World) -> None:
    body = {"title": "Printer on fire", "impact": 1}
    headers = {"Idempotency-Key": "6f1c1a52-retry-me"}
    first = await world.customer_a.post("/incidents", json=body, headers=headers)
    assert first.status_code == 201
    # The same request again (key order does not matter): the same answer, nothing new.
    again = await world.customer_a.post(
        "/incidents", json={"impact": 1, "title": "Printer on fire"}, headers=headers
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"]
    assert await count_incidents(world) == 1

    # Same key, different body: refused, nothing created.
    other = await world.customer_a.post(
        "/incidents", json={**body, "title": "Printer fixed"}, headers=headers
    )
    problem(other, 422)
    assert await count_incidents(world) == 1

    # Another caller with the same key is another request altogether.
    theirs = await world.customer_b.post("/incidents", json=body, headers=headers)
    assert ok(theirs, 201)["id"] != first.json()["id"]
    assert ok(theirs, 201)["organization_id"] == world.org_b["id"]
    mine_by_agent = await world.agent.post(
        "/incidents", json={**body, "organization_id": world.org_a["id"]}, headers=headers
    )
    assert ok(mine_by_agent, 201)["id"] not in (first.json()["id"], theirs.json()["id"])
    assert await count_incidents(world) == 3
    # A replay after the record changed still answers what was answered then.
    ok(await world.agent.patch(f"/incidents/{first.json()['id']}", json={"title": "New"}), 200)
    late = await world.customer_a.post("/incidents", json=body, headers=headers)
    assert late.json() == first.json()

    for bad in ("has space", "x" * 256, ""):
        problem(
            await world.customer_a.post("/incidents", json=body, headers={"Idempotency-Key": bad}),
            422,
        )
    assert await count_incidents(world) == 3


async def test_idempotency_key_on_other_creates(world: World) -> None:
    headers = {"Idempotency-Key": "org-1"}
    body = {"name": "Once", "code": "ONCE"}
    first = ok(await world.admin.post("/organizations", json=body, headers=headers), 201)
    assert ok(await world.admin.post("/organizations", json=body, headers=headers), 201) == first
    # The same key for another endpoint is another request: refused rather than mixed up.
    response = await world.admin.post("/groups", json={"name": "Once"}, headers=headers)
    problem(response, 422)
    codes = [o["code"] for o in ok(await world.admin.get("/organizations"), 200)["items"]]
    assert codes.count("ONCE") == 1


async def test_racing_identical_requests_create_exactly_one_incident(world: World) -> None:
    body = {"title": "Whole floor offline", "organization_id": world.org_a["id"]}
    headers = {"Idempotency-Key": "race-1"}
    answers = await asyncio.gather(
        *(world.agent.post("/incidents", json=body, headers=headers) for _ in range(20))
    )
    assert [r.status_code for r in answers] == [201] * 20, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len({r.json()["number"] for r in answers}) == 1
    assert await count_incidents(world) == 1


# --- input limits ---------------------------------------------------------------------------


async def test_unknown_fields_and_string_limits(world: World) -> None:
    customer = world.customer_a
    problem(await customer.post("/incidents", json={"title": "x", "colour": "red"}), 422)
    problem(await customer.post("/incidents", json={"title": "x", "Title": "y"}), 422)
    problem(await customer.post("/incidents", json={"title": "x", "state": "closed"}), 422)
    problem(await customer.post("/incidents", json={"title": "x" * 201}), 422)
    problem(await customer.post("/incidents", json={"title": ""}), 422)
    problem(
        await customer.post("/incidents", json={"title": "x", "description": "d" * 20_001}), 422
    )
    assert await count_incidents(world) == 0

    longest = {"title": "t" * 200, "description": "d" * 20_000}
    incident = ok(await customer.post("/incidents", json=longest), 201)
    assert (len(incident["title"]), len(incident["description"])) == (200, 20_000)
    path = f"/incidents/{incident['id']}"
    problem(await world.agent.patch(path, json={"severity": 1}), 422)
    problem(await world.agent.patch(path, json={"title": "x" * 201}), 422)
    problem(await world.agent.patch(path, json={"description": "d" * 20_001}), 422)
    move = {"to": "in_progress", "please": True}
    problem(await world.agent.post(f"{path}/transitions", json=move), 422)
    assert ok(await world.agent.get(path), 200)["version"] == 1


def test_problem_titles_and_types_do_not_follow_the_interpreters_phrases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.13 renamed the phrases of 413 and 422; the API's answers stay as they are."""
    from http import HTTPStatus

    from app.core import errors

    class Renamed:  # HTTPStatus as of Python 3.13, for the two that changed
        _value2member_map_ = HTTPStatus._value2member_map_
        phrases = {413: "Content Too Large", 422: "Unprocessable Content"}

        def __init__(self, status: int) -> None:
            self.phrase = self.phrases.get(status) or HTTPStatus(status).phrase

    monkeypatch.setattr(errors, "HTTPStatus", Renamed)
    too_large = orjson.loads(errors.problem_response(413, "too large").body)
    assert (too_large["type"], too_large["title"]) == (
        "urn:sdms:problem:request-entity-too-large",
        "Request Entity Too Large",
    )
    invalid = orjson.loads(errors.problem_response(422, "invalid").body)
    assert invalid["title"] == "Unprocessable Entity"
    assert orjson.loads(errors.problem_response(404, "none").body)["title"] == "Not Found"


async def test_bodies_over_one_mebibyte_get_413(world: World) -> None:
    limit = 1024 * 1024
    title = {"title": "x"}
    padded = b'{"title": "x", "description": "' + b"d" * limit + b'"}'
    response = await world.customer_a.post(
        "/incidents", content=padded, headers={"Content-Type": "application/json"}
    )
    problem(response, 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"title": "x", "description": "'
        for _ in range(17):
            yield b"d" * 65536
        yield b'"}'

    streamed = await world.customer_a.post(
        "/incidents", content=chunks(), headers={"Content-Type": "application/json"}
    )
    problem(streamed, 413)
    assert await count_incidents(world) == 0
    # Just under the limit is a body like any other (and too long a description: 422).
    under = b'{"title": "x", "description": "' + b"d" * (limit - 100) + b'"}'
    problem(
        await world.customer_a.post(
            "/incidents", content=under, headers={"Content-Type": "application/json"}
        ),
        422,
    )
    ok(await world.customer_a.post("/incidents", json=title), 201)


# --- hostile input --------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}

HOSTILE_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("malformed JSON", b'{"title": "x",', JSON),
    ("trailing garbage", b'{"title": "x"} {}', JSON),
    ("an array", b'[{"title": "x"}]', JSON),
    ("a string", b'"title"', JSON),
    ("null", b"null", JSON),
    ("not UTF-8", b'{"title": "\xff\xfe"}', JSON),
    ("wrong type", b'{"title": 42}', JSON),
    ("wrong nested type", b'{"title": ["x"]}', JSON),
    ("enum as number", b'{"title": "x", "channel": 3}', JSON),
    ("level as word", b'{"title": "x", "impact": "high"}', JSON),
    ("boolean level", b'{"title": "x", "impact": true}', JSON),
    ("huge integer", b'{"title": "x", "impact": 1' + b"0" * 40 + b"}", JSON),
    ("enormous integer", b'{"title": "x", "impact": ' + b"9" * 5000 + b"}", JSON),
    ("huge float", b'{"title": "x", "urgency": 1e400}', JSON),
    ("NaN", b'{"title": "x", "urgency": NaN}', JSON),
    ("huge string", b'{"title": "' + b"x" * 600_000 + b'"}', JSON),
    ("deep nesting", b'{"title": "x", "category": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON),
    ("NUL in a string", b'{"title": "a\\u0000b"}', JSON),
    ("NUL in a category", b'{"title": "x", "category": "\\u0000"}', JSON),
    ("lone high surrogate", b'{"title": "\\ud800"}', JSON),
    ("lone low surrogate", b'{"title": "x", "description": "tail \\udfff"}', JSON),
    ("surrogate in a key", b'{"title": "x", "\\ud800": 1}', JSON),
    ("surrogate in an id", b'{"title": "x", "service_id": "\\ud800"}', JSON),
    ("surrogate in an e-mail", b'{"title": "x", "contact_email": "\\ud800@x.example"}', JSON),
    ("SQL as an id", b'{"title": "x", "service_id": "\'; DROP TABLE incidents; --"}', JSON),
    ("missing Content-Type", b'{"title": "x"}', {}),
    ("text/plain", b'{"title": "x"}', {"Content-Type": "text/plain"}),
    ("form", b"title=x", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("empty body", b"", JSON),
]


async def test_hostile_bodies_get_4xx_problems(world: World) -> None:
    for caller in (world.customer_a, world.agent):
        for name, content, headers in HOSTILE_BODIES:
            response = await caller.post("/incidents", content=content, headers=headers)
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
            problem(response, response.status_code)
    incident = await world.incident()
    path = f"/incidents/{incident['id']}"
    for name, content, headers in HOSTILE_BODIES:
        for url in (path, f"{path}/transitions"):
            method = world.agent.patch if url == path else world.agent.post
            response = await method(url, content=content, headers=headers)
            assert 400 <= response.status_code < 500, (name, url, response.text)
            problem(response, response.status_code)
    for content in (b"[]", b'{"name": "\\ud800", "code": "X"}', b'{"name": "x", "code": 5}'):
        response = await world.admin.post("/organizations", content=content, headers=JSON)
        problem(response, 422)
    assert await count_incidents(world) == 1
    assert ok(await world.agent.get(path), 200)["version"] == 1


async def test_hostile_query_and_path_values_get_4xx_problems(world: World) -> None:
    incident = await world.incident()
    agent = world.agent
    refused = [
        await agent.get("/incidents", params={"organization_id": "' OR 1=1 --"}),
        await agent.get("/incidents", params={"assignee_id": SQL}),
        await agent.get("/incidents", params={"state": "new' OR '1'='1"}),
        await agent.get("/incidents", params={"priority": "1 OR 1=1"}),
        await agent.get("/incidents", params={"priority": "9" * 400}),
        await agent.get("/incidents", params={"created_after": "yesterday"}),
        await agent.get("/incidents", params={"created_after": "2026-03-02T09:00:00"}),
        await agent.get("/incidents", params={"q": "x" * 201}),
        await agent.get("/incidents", params={"limit": "1; DROP TABLE incidents"}),
        await agent.get("/incidents?organization_id=%ED%A0%80"),
        await agent.get("/incidents?state=%00"),
        await agent.get("/organizations/' OR '1'='1"),
        await agent.get(f"/organizations/{SQL}"),
        await agent.get("/users/%00"),
        await agent.get("/contacts/1"),
        await agent.delete(f"/users/{world.agent_user['id']}/api-keys/{SQL}"),
        await agent.get(f"/incidents/{SQL}"),
        await agent.get("/incidents/%00"),
        await agent.get("/incidents/INC-MSK-" + "9" * 50),
        await agent.get("/incidents/" + "x" * 5000),
        await agent.get(f"/incidents/{NOWHERE}/journal"),
    ]
    for response in refused:
        assert 400 <= response.status_code < 500, (response.url, response.text)
        problem(response, response.status_code)

    # Text that merely looks like SQL is text: no match, no harm.
    survived = [
        await agent.get("/incidents", params={"q": SQL}),
        await agent.get("/incidents", params={"q": "a\x00b"}),
        await agent.get("/incidents", params={"region": SQL[:10]}),
        await agent.get("/users", params={"role": "agent", "organization_id": NOWHERE}),
        await agent.get("/contacts", params={"email": SQL}),
    ]
    for response in survived:
        assert ok(response, 200)["items"] == []
    # NUL in a text filter: an empty list or a 422, depending on what the database can store.
    for params in ({"region": "\x00"}, {"email": "\x00"}):
        path = "/incidents" if "region" in params else "/contacts"
        response = await agent.get(path, params=params)
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            problem(response, 422)
    assert [i["id"] for i in ok(await agent.get("/incidents"), 200)["items"]] == [incident["id"]]


async def test_tenancy_of_other_organizations_records_in_lists(world: World) -> None:
    org_c = await make_org(world.admin, name="Third")
    await world.incident()
    theirs = await world.incident(world.agent, organization_id=org_c["id"])
    seen = ok(await world.customer_a.get("/incidents", params={"limit": 200}), 200)["items"]
    assert theirs["id"] not in {i["id"] for i in seen}
    assert all("assignee_id" not in i for i in seen)
    problem(await world.customer_a.get(f"/incidents/{theirs['id']}"), 404)
    problem(await world.customer_a.get(f"/incidents/{theirs['number']}"), 404)


async def test_a_request_hands_its_connection_on_only_outside_any_transaction(
    world: World, database: Database, backend: str
) -> None:
    """On PostgreSQL a request's connection serves the next request (SQLAlchemy's pool is
    bypassed); one is handed on only with no transaction left open, also after a write that
    failed inside its transaction."""
    from app.core.db import driver_of

    if backend != "postgresql":
        pytest.skip("connections are handed from request to request on PostgreSQL only")
    incident = await world.incident()
    url = f"/incidents/{incident['id']}"
    ok(await world.agent.get(url), 200)
    kept = list(database._kept)
    assert kept
    ok(await world.agent.get(url), 200)
    assert database._kept == kept  # the same connection, taken and handed back
    stale = await world.agent.patch(url, json={"title": "x"}, headers={"If-Match": '"9"'})
    assert stale.status_code == 412
    renamed = ok(await world.agent.patch(url, json={"title": "Renamed"}), 200)
    assert renamed["title"] == "Renamed"
    assert database._kept
    for conn in database._kept:
        assert not conn.in_transaction()
        assert not driver_of(conn).is_in_transaction()


async def test_a_small_pool_serves_many_concurrent_requests(
    world: World, database: Database, settings: Settings, clock: ManualClock
) -> None:
    """A request holds one connection at a time: with 2 pooled connections, 24 concurrent
    requests queue for them instead of each holding one while waiting for another."""
    incident = await world.incident()
    small = Database(
        create_engine(str(database.engine.url), pool_size=2, max_overflow=0, pool_timeout=10)
    )
    app = create_app(settings, clock=clock, database=small, jobs=[])
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            api = Api(http, world.agent.key)
            reads = [api.get(f"/incidents/{incident['id']}") for _ in range(16)]
            writes = [
                api.post(f"/incidents/{incident['id']}/comments", json={"body": f"note {n}"})
                for n in range(8)
            ]
            responses = await asyncio.gather(*reads, *writes)
    finally:
        await small.dispose()
    assert [r.status_code for r in responses] == [200] * 16 + [201] * 8


# Instants a client sends lie from 1970 up to (not including) 3000, UTC (docs/conventions.md).
OUT_OF_RANGE_INSTANTS = (
    "0001-01-01T00:00:00Z",  # PostgreSQL's driver would store -infinity
    "0001-01-01T00:00:00+01:00",  # past year 1 in UTC: no such datetime
    "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC
    "9999-12-31T23:59:59.999999Z",  # stored as infinity
    "1969-12-31T23:59:59Z",
    "3000-01-01T00:00:00Z",
    "2999-12-31T22:00:00-03:00",  # 3000-01-01T01:00:00Z
    "1970-01-01T02:00:00+03:00",  # 1969-12-31T23:00:00Z
)


async def test_instants_outside_1970_to_3000_are_a_422_and_change_nothing(world: World) -> None:
    """In bodies; in a query, such an instant is a bound and is taken as the range's nearer
    end."""
    incident = await world.incident()
    url = f"/incidents/{incident['id']}"
    calendar = ok(
        await world.manager.post(
            "/slm/calendars", json={"name": "Round the clock", "timezone": "UTC", "always_on": True}
        ),
        201,
    )
    calendar_url = f"/slm/calendars/{calendar['id']}"
    for instant in OUT_OF_RANGE_INSTANTS:
        refused = [
            await world.integration.post(
                "/incidents",
                json={
                    "title": "imported",
                    "organization_id": world.org_a["id"],
                    "opened_at": instant,
                },
            ),
            await world.agent.post(
                "/incidents",
                json={
                    "title": "t",
                    "organization_id": world.org_a["id"],
                    "estimated_resolution_at": instant,
                },
            ),
            await world.agent.patch(url, json={"estimated_resolution_at": instant}),
            await world.customer_a.post(
                f"{calendar_url}/add", json={"start": instant, "seconds": 1}
            ),
            await world.customer_a.post(
                f"{calendar_url}/elapsed", json={"start": "2026-01-01T00:00:00Z", "end": instant}
            ),
        ]
        for response in refused:
            body = problem(response, 422)
            assert "1970-01-01T00:00:00Z" in body["detail"], (instant, response.url, body)
    assert await count_incidents(world) == 1
    assert ok(await world.agent.get(url), 200)["version"] == 1
    # The ends themselves: 1970 is in, the last microsecond before 3000 too.
    for instant in ("1970-01-01T00:00:00Z", "2999-12-31T23:59:59.999999Z"):
        ok(await world.customer_a.get("/incidents", params={"created_after": instant}), 200)
        patched = ok(await world.agent.patch(url, json={"estimated_resolution_at": instant}), 200)
        assert patched["estimated_resolution_at"] == instant
    # A query's bounds outside the range are its nearer end: the same incidents, no error.
    everything: list[str] = [incident["id"]]
    nothing: list[str] = []
    for params, expected in (
        ({"created_before": "9999-12-31T23:59:59Z"}, everything),
        ({"created_before": "9999-12-31T23:59:59-01:00"}, everything),
        ({"created_after": "0001-01-01T00:00:00+01:00"}, everything),
        (
            {"created_after": "0001-01-01T00:00:00Z", "created_before": "3000-01-01T00:00:00Z"},
            everything,
        ),
        ({"created_after": "9999-12-31T23:59:59-01:00"}, nothing),
        ({"created_before": "1969-12-31T23:59:59Z"}, nothing),
        ({"created_before": "0001-01-01T00:00:00+01:00"}, nothing),
    ):
        listed = ok(await world.customer_a.get("/incidents", params=params), 200)
        assert [i["id"] for i in listed["items"]] == expected, params
    for path in ("/slm/metrics", "/slm/breaches"):
        far = {"from": "0001-01-01T00:00:00+01:00", "to": "9999-12-31T23:59:59-01:00"}
        ok(await world.agent.get(path, params=far), 200)
    imported = await world.incident(world.integration, opened_at="1970-01-01T00:00:00Z")
    assert ok(await world.agent.get(f"/incidents/{imported['id']}"), 200)["opened_at"] == (
        "1970-01-01T00:00:00Z"
    )


async def test_forged_cursors_out_of_range_are_a_422(world: World) -> None:
    """The cursor's check is no secret (it only catches accidents), so a client can forge one:
    its values are checked like any other input."""
    from app.core.pagination import _check

    for _ in range(2):
        await world.incident()

    def forged(token: str, *values: Any) -> str:  # of a list without filters
        payload = json.dumps([token, "", *values], separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        return f"{body}.{_check(payload)}"

    genuine = ok(await world.agent.get("/incidents", params={"limit": 1, "sort": "-priority"}), 200)
    token = orjson.loads(base64.urlsafe_b64decode(genuine["next_cursor"].split(".")[0] + "=="))[0]
    created = ok(await world.agent.get("/incidents", params={"limit": 1}), 200)["next_cursor"]
    created_token = orjson.loads(base64.urlsafe_b64decode(created.split(".")[0] + "=="))[0]
    some_id = str(uuid.uuid4())
    for sort, cursor in (
        ("-priority", forged(token, 2**63, some_id)),
        ("-priority", forged(token, -(2**63) - 1, some_id)),
        ("-priority", forged(token, 2**15, some_id)),  # priority is a SMALLINT
        ("-priority", forged(token, -(2**15) - 1, some_id)),
        ("-created_at", forged(created_token, "0001-01-01T00:00:00+14:00", some_id)),
        ("-created_at", forged(created_token, "9999-12-31T23:59:59-14:00", some_id)),
        ("-created_at", forged(created_token, "0001-01-01T00:00:00+00:00", some_id)),
    ):
        response = await world.agent.get("/incidents", params={"sort": sort, "cursor": cursor})
        assert ["query", "cursor"] in [e["loc"] for e in problem(response, 422)["errors"]]
    # A forged cursor within range is just a position.
    for priority in (5, 2**15 - 1, -(2**15)):
        cursor = forged(token, priority, some_id)
        ok(await world.agent.get("/incidents", params={"sort": "-priority", "cursor": cursor}), 200)
