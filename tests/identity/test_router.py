"""Identity and tenancy (section 2 of the contract), endpoint by endpoint.

Each endpoint is checked in the order anonymous (401) -> forbidden (403) -> not found (404) ->
invalid (422) -> valid, and tenancy always with two customer organizations.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

from sqlalchemy import select

from app.core.auth import BOOTSTRAP_ADMIN_ID
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database
from app.identity.models import api_keys
from app.main import create_app
from app.models import metadata
from tests.conftest import ADMIN_KEY
from tests.factories import Api, World, make_org, make_user, ok, problem

NOWHERE = "00000000-0000-7000-8000-00000000dead"


def ids(page: dict[str, Any]) -> set[str]:
    return {item["id"] for item in page["items"]}


async def test_unauthenticated_requests_get_401_with_a_bearer_challenge(api: Api) -> None:
    for path in ("/me", "/organizations", "/users", "/groups", "/contacts", "/services"):
        response = await api.get(path)
        problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    problem(await api.as_key("sdms_not_a_key").get("/me"), 401)
    problem(await api.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)
    problem(await api.get("/me", headers={"Authorization": "Bearer "}), 401)
    # An absurdly long key is just an unknown key, not a validation error.
    problem(await api.as_key("x" * 5000).get("/me"), 401)


async def test_authorization_is_checked_before_the_body(api: Api, world: World) -> None:
    garbage = {"nonsense": True}
    problem(await api.post("/organizations", json=garbage), 401)
    problem(await world.agent.post("/organizations", json=garbage), 403)
    # A malformed Idempotency-Key does not tell a caller without the right anything either.
    bad_key = {"Idempotency-Key": "not a valid key"}
    problem(await world.agent.post("/organizations", json=garbage, headers=bad_key), 403)
    problem(await api.get("/users/not-a-uuid"), 401)


# --- bootstrap admin ------------------------------------------------------------------------


async def test_bootstrap_admin_key_authenticates_as_an_admin(admin: Api, api: Api) -> None:
    answer = await admin.get("/me")
    me = ok(answer, 200)
    assert "etag" not in answer.headers  # the built-in admin has no record, so no version
    assert me["role"] == "admin"
    assert me["id"] == str(BOOTSTRAP_ADMIN_ID)
    assert me["organization_id"] is None
    ok(await admin.post("/organizations", json={"name": "Acme", "code": "ACME"}), 201)
    problem(await api.as_key(ADMIN_KEY + "x").get("/me"), 401)
    problem(await api.as_key(ADMIN_KEY[:-1]).get("/me"), 401)


async def test_without_the_setting_there_is_no_bootstrap_key(database: Database) -> None:
    from httpx import ASGITransport, AsyncClient

    settings = Settings(database_url=str(database.engine.url), embedded_worker=False)
    app = create_app(settings, database=database, jobs=[])
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    problem(response, 401)


# --- organizations --------------------------------------------------------------------------


async def test_create_organization(api: Api, world: World) -> None:
    body = {"name": "Northwind", "code": "NW"}
    problem(await api.post("/organizations", json=body), 401)
    for caller in (world.customer_a, world.agent, world.manager, world.integration):
        problem(await caller.post("/organizations", json=body), 403)

    admin = world.admin
    for invalid in (
        {"name": "Northwind"},
        {"code": "NW"},
        {**body, "colour": "blue"},
        {**body, "name": "n" * 201},
        {**body, "name": "   "},
        {**body, "code": "N W"},
        {**body, "code": "C" * 33},
        {**body, "account_manager_id": "not-a-uuid"},
    ):
        problem(await admin.post("/organizations", json=invalid), 422)
    problem(await admin.post("/organizations", json={**body, "account_manager_id": NOWHERE}), 422)
    # The account manager must be staff.
    customer_id = world.customer_a_user["id"]
    problem(
        await admin.post("/organizations", json={**body, "account_manager_id": customer_id}), 422
    )
    assert all(o["code"] != "NW" for o in ok(await admin.get("/organizations"), 200)["items"])

    manager_id = world.manager_user["id"]
    response = await admin.post("/organizations", json={**body, "account_manager_id": manager_id})
    created = ok(response, 201)
    assert created["name"] == "Northwind"
    assert created["code"] == "NW"
    assert created["account_manager_id"] == manager_id
    assert created["version"] == 1
    assert response.headers["etag"] == '"1"'
    uuid.UUID(created["id"])
    assert created["created_at"].endswith("Z")

    duplicate = problem(
        await admin.post("/organizations", json={"name": "Other", "code": "NW"}), 409
    )
    assert "NW" in duplicate["detail"]


async def test_read_organizations_with_tenancy(api: Api, world: World) -> None:
    org_a, org_b = world.org_a["id"], world.org_b["id"]
    problem(await api.get(f"/organizations/{org_a}"), 401)
    # A customer cannot tell another organization from a missing one.
    problem(await world.customer_a.get(f"/organizations/{org_b}"), 404)
    problem(await world.customer_b.get(f"/organizations/{org_a}"), 404)
    problem(await world.agent.get(f"/organizations/{NOWHERE}"), 404)
    problem(await world.agent.get("/organizations/ORG1"), 422)

    response = await world.customer_a.get(f"/organizations/{org_a}")
    assert ok(response, 200)["name"] == "Baltic Telecom"
    assert response.headers["etag"] == '"1"'
    assert ids(ok(await world.customer_a.get("/organizations"), 200)) == {org_a}
    assert ids(ok(await world.customer_b.get("/organizations"), 200)) == {org_b}
    assert {org_a, org_b} <= ids(ok(await world.agent.get("/organizations"), 200))
    assert ok(await world.agent.get(f"/organizations/{org_b}"), 200)["id"] == org_b


async def test_update_organization(api: Api, world: World) -> None:
    org_a = world.org_a["id"]
    path = f"/organizations/{org_a}"
    problem(await api.patch(path, json={"name": "X"}), 401)
    for caller in (world.customer_a, world.agent, world.manager):
        problem(await caller.patch(path, json={"name": "X"}), 403)
    admin = world.admin
    problem(await admin.patch(f"/organizations/{NOWHERE}", json={"name": "X"}), 404)
    for invalid in ({"name": None}, {"code": None}, {"name": ""}, {"state": "x"}):
        problem(await admin.patch(path, json=invalid), 422)
    problem(await admin.patch(path, json={"account_manager_id": NOWHERE}), 422)
    problem(await admin.patch(path, json={"code": world.org_b["code"]}), 409)
    problem(await admin.patch(path, json={"name": "Stale"}, headers={"If-Match": '"7"'}), 412)
    unchanged = ok(await admin.get(path), 200)
    assert (unchanged["name"], unchanged["version"]) == ("Baltic Telecom", 1)

    response = await admin.patch(
        path, json={"name": "Baltic Telecom AB"}, headers={"If-Match": '"1"'}
    )
    assert ok(response, 200)["name"] == "Baltic Telecom AB"
    assert response.headers["etag"] == '"2"'
    manager_id = world.manager_user["id"]
    assert (
        ok(await admin.patch(path, json={"account_manager_id": manager_id}), 200)[
            "account_manager_id"
        ]
        == manager_id
    )
    cleared = ok(await admin.patch(path, json={"account_manager_id": None}), 200)
    assert cleared["account_manager_id"] is None
    assert cleared["version"] == 4
    # The customer sees the new name.
    assert ok(await world.customer_a.get(path), 200)["name"] == "Baltic Telecom AB"


# --- users ----------------------------------------------------------------------------------


async def test_create_user(api: Api, world: World) -> None:
    org_a = world.org_a["id"]
    body = {
        "email": "Olga@Example.com",
        "name": "Olga",
        "role": "customer",
        "organization_id": org_a,
    }
    problem(await api.post("/users", json=body), 401)
    for caller in (world.customer_a, world.agent, world.manager, world.integration):
        problem(await caller.post("/users", json=body), 403)

    admin = world.admin
    for invalid in (
        {**body, "email": "not-an-address"},
        {**body, "role": "superuser"},
        {**body, "name": ""},
        {**body, "active": False},
        {**body, "organization_id": "A"},
        {"email": "x@example.com", "name": "No org", "role": "customer"},
        {**body, "group_ids": [world.group["id"]]},  # customers are no support line
        {**body, "organization_id": NOWHERE},
        {**body, "role": "agent", "group_ids": [NOWHERE]},
    ):
        problem(await admin.post("/users", json=invalid), 422)

    response = await admin.post("/users", json=body)
    user = ok(response, 201)
    assert response.headers["etag"] == '"1"'
    assert user["email"] == "olga@example.com"
    assert user["name"] == "Olga"
    assert user["role"] == "customer"
    assert user["organization_id"] == org_a
    assert user["active"] is True
    assert user["group_ids"] == []
    assert user["api_key"].startswith("sdms_")
    answer = await api.as_key(user["api_key"]).get("/me")
    me = ok(answer, 200)
    assert (me["id"], me["role"], me["organization_id"]) == (user["id"], "customer", org_a)
    # The key is shown once: reading the user never shows it again.
    read = await admin.get(f"/users/{user['id']}")
    got = ok(read, 200)
    assert answer.headers["etag"] == read.headers["etag"] == '"1"'  # /me is the user's record
    assert "api_key" not in got
    keys = ok(await admin.get(f"/users/{user['id']}/api-keys"), 200)["items"]
    assert len(keys) == 1
    assert user["api_key"] not in str(keys)

    # E-mails are unique, whatever their case.
    problem(await admin.post("/users", json={**body, "email": "OLGA@example.COM"}), 409)
    staff = {"email": "lead@example.com", "name": "Lead", "role": "agent"}
    agent = ok(await admin.post("/users", json={**staff, "group_ids": [world.group["id"]]}), 201)
    assert agent["organization_id"] is None
    assert agent["group_ids"] == [world.group["id"]]


async def test_user_reads_with_tenancy(api: Api, world: World) -> None:
    a_user, b_user = world.customer_a_user, world.customer_b_user
    colleague, _ = await make_user(world.admin, "customer", world.org_a["id"])
    problem(await api.get(f"/users/{a_user['id']}"), 401)
    problem(await world.customer_a.get(f"/users/{b_user['id']}"), 404)
    problem(await world.customer_a.get(f"/users/{world.agent_user['id']}"), 404)
    problem(await world.customer_b.get(f"/users/{a_user['id']}"), 404)
    problem(await world.agent.get(f"/users/{NOWHERE}"), 404)
    problem(await world.agent.get("/users/12"), 422)
    problem(await world.agent.get("/users", params={"role": "superuser"}), 422)

    response = await world.customer_a.get(f"/users/{colleague['id']}")
    assert ok(response, 200)["email"] == colleague["email"]
    assert response.headers["etag"] == '"1"'
    # A customer lists its own organization's users and no one else.
    assert ids(ok(await world.customer_a.get("/users"), 200)) == {a_user["id"], colleague["id"]}
    org_b_filter = {"organization_id": world.org_b["id"]}
    assert ok(await world.customer_a.get("/users", params=org_b_filter), 200)["items"] == []
    assert ids(ok(await world.customer_b.get("/users"), 200)) == {b_user["id"]}
    # Staff see everyone; repeated filters mean OR.
    everyone = ids(ok(await world.agent.get("/users"), 200))
    assert {a_user["id"], b_user["id"], world.agent_user["id"], colleague["id"]} <= everyone
    staff = ok(await world.agent.get("/users", params={"role": ["agent", "manager"]}), 200)
    assert {u["role"] for u in staff["items"]} == {"agent", "manager"}
    both_orgs = {"organization_id": [world.org_a["id"], world.org_b["id"]]}
    assert ids(ok(await world.agent.get("/users", params=both_orgs), 200)) == {
        a_user["id"],
        b_user["id"],
        colleague["id"],
    }


async def test_customers_do_not_see_which_support_groups_a_user_works_in(world: World) -> None:
    # A staff member of the customer's organization (its account manager, say) is visible to
    # the customer, but the support lines it works in are internal.
    insider, _ = await make_user(
        world.admin, "agent", world.org_a["id"], group_ids=[world.group["id"]]
    )
    path = f"/users/{insider['id']}"
    seen = ok(await world.customer_a.get(path), 200)
    assert seen["role"] == "agent"
    assert "group_ids" not in seen
    listed = ok(await world.customer_a.get("/users", params={"role": "agent"}), 200)["items"]
    assert [u["id"] for u in listed] == [insider["id"]]
    assert "group_ids" not in listed[0]
    by_group = {"group_id": world.group["id"]}
    problem(await world.customer_a.get("/users", params=by_group), 403)
    # Staff see memberships, and filter by them.
    assert ok(await world.agent.get(path), 200)["group_ids"] == [world.group["id"]]
    members = ids(ok(await world.agent.get("/users", params=by_group), 200))
    assert insider["id"] in members


async def test_update_user_and_group_membership(api: Api, world: World) -> None:
    admin = world.admin
    user, key = await make_user(admin, "agent")
    path = f"/users/{user['id']}"
    second = ok(await admin.post("/groups", json={"name": "Field engineers"}), 201)
    groups = [world.group["id"], second["id"]]
    problem(await api.patch(path, json={"group_ids": groups}), 401)
    for caller in (key, world.agent, world.manager, world.customer_a):
        problem(await caller.patch(path, json={"group_ids": groups}), 403)
    problem(await admin.patch(f"/users/{NOWHERE}", json={"group_ids": groups}), 404)
    for invalid in (
        {"group_ids": [NOWHERE]},
        {"group_ids": "all"},
        {"email": None},
        {"role": "root"},
        {"api_key": "sdms_mine"},
        {"role": "customer", "organization_id": world.org_a["id"], "group_ids": groups},
        {"role": "customer"},  # a customer needs an organization
    ):
        problem(await admin.patch(path, json=invalid), 422)
    problem(await admin.patch(path, json={"email": world.agent_user["email"]}), 409)
    problem(await admin.patch(path, json={"name": "Stale"}, headers={"If-Match": '"3"'}), 412)
    assert ok(await admin.get(path), 200)["version"] == 1

    response = await admin.patch(path, json={"group_ids": groups}, headers={"If-Match": '"1"'})
    assert sorted(ok(response, 200)["group_ids"]) == sorted(groups)
    assert response.headers["etag"] == '"2"'
    assert sorted(ok(await key.get("/me"), 200)["group_ids"]) == sorted(groups)
    members = ok(await world.agent.get("/users", params={"group_id": second["id"]}), 200)
    assert ids(members) == {user["id"]}
    either = {"group_id": groups}
    assert ids(ok(await world.agent.get("/users", params=either), 200)) == {
        user["id"],
        world.agent_user["id"],
    }
    assert ok(await admin.patch(path, json={"group_ids": []}), 200)["group_ids"] == []
    assert (
        ok(await world.agent.get("/users", params={"group_id": second["id"]}), 200)["items"] == []
    )
    renamed = ok(await admin.patch(path, json={"name": "Renamed", "role": "manager"}), 200)
    assert (renamed["name"], renamed["role"]) == ("Renamed", "manager")
    assert ok(await key.get("/me"), 200)["role"] == "manager"


async def test_disabling_a_user_disables_every_key(world: World) -> None:
    admin = world.admin
    user, first = await make_user(admin, "agent")
    second = first.as_key(ok(await first.post(f"/users/{user['id']}/api-keys"), 201)["api_key"])
    ok(await first.get("/me"), 200)
    ok(await second.get("/me"), 200)

    disabled = ok(await admin.patch(f"/users/{user['id']}", json={"active": False}), 200)
    assert disabled["active"] is False
    problem(await first.get("/me"), 401)
    problem(await second.get("/incidents"), 401)
    problem(await first.post(f"/users/{user['id']}/api-keys"), 401)
    # An admin cannot hand a disabled user a fresh key either.
    problem(await admin.post(f"/users/{user['id']}/api-keys"), 422)
    assert ok(await admin.get(f"/users/{user['id']}"), 200)["active"] is False
    # Other users are not affected.
    ok(await world.agent.get("/me"), 200)


# --- API keys -------------------------------------------------------------------------------


async def test_api_keys_self_service_and_revocation(
    api: Api, world: World, clock: ManualClock
) -> None:
    admin = world.admin
    user, key = await make_user(admin, "agent")
    keys_path = f"/users/{user['id']}/api-keys"
    problem(await api.post(keys_path), 401)
    problem(await api.get(keys_path), 401)
    problem(await api.delete(f"{keys_path}/{user['api_key_id']}"), 401)
    # Only the user themself or an admin manages a user's keys.
    for caller in (world.agent, world.manager, world.integration):
        problem(await caller.post(keys_path), 403)
        problem(await caller.get(keys_path), 403)
        problem(await caller.delete(f"{keys_path}/{user['api_key_id']}"), 403)
    problem(await admin.post(f"/users/{NOWHERE}/api-keys"), 404)
    problem(await admin.delete(f"{keys_path}/{NOWHERE}"), 404)
    problem(await admin.delete(f"{keys_path}/not-a-uuid"), 422)
    # A key is revoked only through its own user.
    other_key = world.agent_user["api_key_id"]
    problem(await admin.delete(f"{keys_path}/{other_key}"), 404)
    ok(await world.agent.get("/me"), 200)

    response = await key.post(keys_path)
    created = ok(response, 201)
    assert set(created) >= {"id", "api_key"}
    assert (created["version"], response.headers["etag"]) == (1, '"1"')
    assert created["api_key"] != user["api_key"]
    new = api.as_key(created["api_key"])
    assert ok(await new.get("/me"), 200)["id"] == user["id"]
    page = ok(await key.get(keys_path), 200)
    listed = page["items"]
    assert page["next_cursor"] is None
    assert [k["id"] for k in listed] == [created["id"], user["api_key_id"]]  # newest first
    assert all("api_key" not in k and k["revoked_at"] is None for k in listed)
    # A page at a time, like every list.
    first = ok(await key.get(keys_path, params={"limit": 1}), 200)
    assert [k["id"] for k in first["items"]] == [created["id"]]
    rest = ok(await key.get(keys_path, params={"limit": 1, "cursor": first["next_cursor"]}), 200)
    assert ([k["id"] for k in rest["items"]], rest["next_cursor"]) == ([user["api_key_id"]], None)
    oldest_first = ok(await key.get(keys_path, params={"sort": "created_at"}), 200)["items"]
    assert [k["id"] for k in oldest_first] == [user["api_key_id"], created["id"]]

    revoking = await key.delete(f"{keys_path}/{user['api_key_id']}")
    revoked = ok(revoking, 200)
    assert revoked["revoked_at"] is not None
    assert (revoked["version"], revoking.headers["etag"]) == (2, '"2"')
    problem(await key.get("/me"), 401)
    clock.advance(minutes=5)
    again = ok(await new.delete(f"{keys_path}/{user['api_key_id']}"), 200)
    assert again == revoked  # revoking twice rewrites nothing, not even the version
    assert ok(await new.get("/me"), 200)["id"] == user["id"]
    listed = {k["id"]: k for k in ok(await new.get(keys_path), 200)["items"]}
    assert listed[user["api_key_id"]]["revoked_at"] is not None
    assert listed[created["id"]]["revoked_at"] is None
    # An admin revokes anyone's key.
    ok(await admin.delete(f"{keys_path}/{created['id']}"), 200)
    problem(await new.get("/me"), 401)
    issued = ok(await admin.post(keys_path), 201)
    ok(await api.as_key(issued["api_key"]).get("/me"), 200)


async def test_customers_manage_only_their_own_keys(world: World) -> None:
    a_user, b_user = world.customer_a_user, world.customer_b_user
    colleague, _ = await make_user(world.admin, "customer", world.org_a["id"])
    # Another organization's user, or staff, is not there for a customer; a colleague is.
    problem(await world.customer_a.post(f"/users/{b_user['id']}/api-keys"), 404)
    problem(await world.customer_a.get(f"/users/{world.agent_user['id']}/api-keys"), 404)
    problem(await world.customer_a.post(f"/users/{colleague['id']}/api-keys"), 403)
    problem(await world.customer_a.delete(f"/users/{b_user['id']}/api-keys/{NOWHERE}"), 404)
    created = ok(await world.customer_a.post(f"/users/{a_user['id']}/api-keys"), 201)
    me = ok(await world.customer_a.as_key(created["api_key"]).get("/me"), 200)
    assert me["id"] == a_user["id"]


async def test_api_keys_are_stored_only_as_hashes(world: World, database: Database) -> None:
    admin = world.admin
    org = world.org_a["id"]
    body = {"email": "hash@example.com", "name": "Hash", "role": "customer", "organization_id": org}
    # Also through the idempotency store, which keeps answers for replays.
    headers = {"Idempotency-Key": "create-hash-user"}
    user = ok(await admin.post("/users", json=body, headers=headers), 201)
    extra = ok(
        await admin.post(f"/users/{user['id']}/api-keys", headers={"Idempotency-Key": "k2"}), 201
    )
    plain_keys = [user["api_key"], extra["api_key"], world.agent_user["api_key"]]

    dump: list[str] = []
    async with database.read() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    dump.append(str(value))
        hashes = set((await conn.execute(select(api_keys.c.key_hash))).scalars())
    everything = "\n".join(dump)
    for key in plain_keys:
        assert key[5:] not in everything  # not even without the `sdms_` prefix
        assert hashlib.sha256(key.encode()).hexdigest() in hashes

    # A replay cannot show the key again (it was not kept), but is the same user.
    replay = ok(await admin.post("/users", json=body, headers=headers), 201)
    assert replay["id"] == user["id"]
    assert replay["api_key"] is None
    ok(await world.admin.as_key(user["api_key"]).get("/me"), 200)


# --- /me ------------------------------------------------------------------------------------


async def test_me(api: Api, world: World) -> None:
    problem(await api.get("/me"), 401)
    customer = ok(await world.customer_a.get("/me"), 200)
    assert customer["id"] == world.customer_a_user["id"]
    assert customer["role"] == "customer"
    assert customer["organization_id"] == world.org_a["id"]
    assert customer["organization"]["id"] == world.org_a["id"]
    assert customer["organization"]["name"] == "Baltic Telecom"
    agent = ok(await world.agent.get("/me"), 200)
    assert (agent["role"], agent["email"]) == ("agent", world.agent_user["email"])
    assert agent["organization"] is None
    assert agent["group_ids"] == [world.group["id"]]
    assert ok(await world.integration.get("/me"), 200)["role"] == "integration"
    assert ok(await world.manager.get("/me"), 200)["role"] == "manager"


# --- groups ---------------------------------------------------------------------------------


async def test_groups(api: Api, world: World) -> None:
    body = {"name": "1st line", "description": "Takes the calls"}
    problem(await api.post("/groups", json=body), 401)
    problem(await api.get("/groups"), 401)
    for caller in (world.customer_a, world.agent, world.manager):
        problem(await caller.post("/groups", json=body), 403)
    # Groups are internal: customers do not see them at all.
    problem(await world.customer_a.get("/groups"), 403)
    problem(await world.customer_a.get(f"/groups/{world.group['id']}"), 403)
    problem(await world.agent.patch(f"/groups/{world.group['id']}", json={"name": "X"}), 403)
    problem(await world.agent.get(f"/groups/{NOWHERE}"), 404)
    admin = world.admin
    for invalid in ({"name": ""}, {"description": "x"}, {**body, "members": []}):
        problem(await admin.post("/groups", json=invalid), 422)

    response = await admin.post("/groups", json=body)
    group = ok(response, 201)
    assert (group["name"], group["description"]) == ("1st line", "Takes the calls")
    assert response.headers["etag"] == '"1"'
    problem(await admin.post("/groups", json={"name": "1st line"}), 409)
    listed = ids(ok(await world.agent.get("/groups"), 200))
    assert {group["id"], world.group["id"]} <= listed
    assert ok(await world.agent.get(f"/groups/{group['id']}"), 200)["name"] == "1st line"
    patched = ok(await admin.patch(f"/groups/{group['id']}", json={"description": None}), 200)
    assert patched["description"] is None


# --- contacts -------------------------------------------------------------------------------


async def test_contacts(api: Api, world: World) -> None:
    org_a, org_b = world.org_a["id"], world.org_b["id"]
    body = {"organization_id": org_a, "email": "Ops@Baltic.example", "name": "Ops desk"}
    problem(await api.post("/contacts", json=body), 401)
    problem(await api.get("/contacts"), 401)
    for caller in (world.customer_a, world.agent, world.integration):
        problem(await caller.post("/contacts", json=body), 403)
    manager = world.manager
    for invalid in (
        {**body, "email": "nope"},
        {**body, "phone": "1" * 51},
        {**body, "organization_id": None},
        {k: v for k, v in body.items() if k != "name"},
        {**body, "fax": "123"},
        {**body, "organization_id": NOWHERE},
    ):
        problem(await manager.post("/contacts", json=invalid), 422)

    response = await manager.post("/contacts", json={**body, "phone": "+7 812 000 00 00"})
    contact_a = ok(response, 201)
    assert contact_a["email"] == "ops@baltic.example"
    assert contact_a["phone"] == "+7 812 000 00 00"
    assert response.headers["etag"] == '"1"'
    problem(await manager.post("/contacts", json={**body, "email": "OPS@baltic.example"}), 409)
    contact_b = ok(
        await world.admin.post(
            "/contacts", json={"organization_id": org_b, "email": "it@volga.example", "name": "IT"}
        ),
        201,
    )

    # Customers see their own organization's contacts only.
    problem(await world.customer_a.get(f"/contacts/{contact_b['id']}"), 404)
    problem(await world.customer_b.get(f"/contacts/{contact_a['id']}"), 404)
    problem(await world.agent.get(f"/contacts/{NOWHERE}"), 404)
    assert ok(await world.customer_a.get(f"/contacts/{contact_a['id']}"), 200)["name"] == "Ops desk"
    assert ids(ok(await world.customer_a.get("/contacts"), 200)) == {contact_a["id"]}
    assert ids(ok(await world.customer_b.get("/contacts"), 200)) == {contact_b["id"]}
    only_b = {"organization_id": org_b}
    assert ok(await world.customer_a.get("/contacts", params=only_b), 200)["items"] == []
    assert ids(ok(await world.agent.get("/contacts"), 200)) == {contact_a["id"], contact_b["id"]}
    assert ids(ok(await world.agent.get("/contacts", params=only_b), 200)) == {contact_b["id"]}
    by_email = {"email": "OPS@baltic.example"}
    assert ids(ok(await world.agent.get("/contacts", params=by_email), 200)) == {contact_a["id"]}

    path = f"/contacts/{contact_a['id']}"
    problem(await world.agent.patch(path, json={"name": "X"}), 403)
    problem(await world.customer_a.patch(path, json={"name": "X"}), 403)
    problem(await manager.patch(path, json={"email": "it@volga.example"}), 409)
    assert ok(await manager.patch(path, json={"phone": None}), 200)["phone"] is None


# --- services -------------------------------------------------------------------------------


async def test_services(api: Api, world: World) -> None:
    body = {"name": "Telephony", "code": "TEL", "owner_group_id": world.group["id"]}
    problem(await api.post("/services", json=body), 401)
    problem(await api.get("/services"), 401)
    for caller in (world.customer_a, world.agent, world.manager):
        problem(await caller.post("/services", json=body), 403)
    admin = world.admin
    for invalid in (
        {**body, "owner_group_id": NOWHERE},
        {**body, "code": ""},
        {"name": "Telephony"},
        {**body, "sla": "gold"},
    ):
        problem(await admin.post("/services", json=invalid), 422)

    response = await admin.post("/services", json=body)
    service = ok(response, 201)
    assert (service["name"], service["code"], service["owner_group_id"]) == (
        "Telephony",
        "TEL",
        world.group["id"],
    )
    assert response.headers["etag"] == '"1"'
    problem(await admin.post("/services", json={"name": "Other", "code": "TEL"}), 409)
    # The catalogue is public to every caller, customers included, but which group owns a
    # service is internal: staff see it, customers do not.
    listed = ok(await world.customer_a.get("/services"), 200)
    catalogue = ids(listed)
    assert {service["id"], world.service["id"]} <= catalogue
    assert all("owner_group_id" not in item for item in listed["items"])
    seen = ok(await world.customer_b.get(f"/services/{service['id']}"), 200)
    assert seen["code"] == "TEL"
    assert "owner_group_id" not in seen
    staff_view = ok(await world.agent.get(f"/services/{service['id']}"), 200)
    assert staff_view["owner_group_id"] == world.group["id"]
    staff_list = ok(await world.agent.get("/services"), 200)["items"]
    assert {i["id"]: i["owner_group_id"] for i in staff_list}[service["id"]] == world.group["id"]
    problem(await world.customer_b.get(f"/services/{NOWHERE}"), 404)

    path = f"/services/{service['id']}"
    problem(await world.agent.patch(path, json={"name": "X"}), 403)
    problem(await world.customer_a.patch(path, json={"name": "X"}), 403)
    problem(await admin.patch(path, json={"owner_group_id": NOWHERE}), 422)
    problem(await admin.patch(path, json={"code": world.service["code"]}), 409)
    patched = ok(await admin.patch(path, json={"owner_group_id": None, "name": "Voice"}), 200)
    assert (patched["owner_group_id"], patched["name"], patched["version"]) == (None, "Voice", 2)


async def test_agent_is_refused_every_admin_write(world: World) -> None:
    org = await make_org(world.admin)
    user_id, group_id = world.customer_a_user["id"], world.group["id"]
    writes = [
        ("POST", "/organizations", {"name": "X", "code": "X1"}),
        ("PATCH", f"/organizations/{org['id']}", {"name": "X"}),
        ("POST", "/users", {"email": "x@example.com", "name": "X", "role": "admin"}),
        ("PATCH", f"/users/{user_id}", {"role": "admin"}),
        ("PATCH", f"/users/{world.agent_user['id']}", {"role": "admin"}),  # not even itself
        ("POST", "/groups", {"name": "X"}),
        ("PATCH", f"/groups/{group_id}", {"name": "X"}),
        ("POST", "/services", {"name": "X", "code": "X1"}),
        ("PATCH", f"/services/{world.service['id']}", {"name": "X"}),
    ]
    for method, path, body in writes:
        problem(await world.agent.request(method, path, json=body), 403)
    assert ok(await world.agent.get("/me"), 200)["role"] == "agent"
    assert ok(await world.admin.get(f"/organizations/{org['id']}"), 200)["version"] == 1


async def test_racing_creates_with_one_code_give_one_201_and_409s(world: World) -> None:
    body = {"name": "Racer", "code": "RACE"}
    answers = await asyncio.gather(
        *(world.admin.post("/organizations", json=body) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * 7, [r.text for r in answers]
    for response in answers:
        if response.status_code == 409:
            problem(response, 409)
    codes = [o["code"] for o in ok(await world.admin.get("/organizations"), 200)["items"]]
    assert codes.count("RACE") == 1


async def test_record_lists_filter_by_creation_time(world: World, clock: ManualClock) -> None:
    """`created_after` (inclusive) and `created_before` (exclusive) on every list of records,
    as on incidents; a bound outside 1970..3000 is the range's end."""
    early = {"organization_id": world.org_a["id"], "email": "desk@baltic.example", "name": "Desk"}
    ok(await world.admin.post("/contacts", json=early), 201)
    office = {"name": "Office", "timezone": "UTC", "hours": {"mon": [["09:00", "17:00"]]}}
    ok(await world.manager.post("/slm/calendars", json=office), 201)
    clock.advance(hours=1)
    cut = clock.now().isoformat().replace("+00:00", "Z")
    later_org = await make_org(world.admin)
    later_group = ok(await world.admin.post("/groups", json={"name": "Night shift"}), 201)
    later_user, _ = await make_user(world.admin, "agent")
    contact = {"organization_id": world.org_a["id"], "email": "ops@baltic.example", "name": "Ops"}
    later_contact = ok(await world.admin.post("/contacts", json=contact), 201)
    later_service = ok(
        await world.admin.post("/services", json={"name": "SMS", "code": "SMS"}), 201
    )
    always = {"name": "24x7", "timezone": "UTC", "always_on": True}
    later_calendar = ok(await world.manager.post("/slm/calendars", json=always), 201)
    for path, later in (
        ("/organizations", later_org),
        ("/groups", later_group),
        ("/users", later_user),
        ("/contacts", later_contact),
        ("/services", later_service),
        ("/slm/calendars", later_calendar),
    ):
        after = ok(await world.admin.get(path, params={"created_after": cut}), 200)["items"]
        assert [i["id"] for i in after] == [later["id"]], path
        before = ok(await world.admin.get(path, params={"created_before": cut}), 200)["items"]
        assert before and later["id"] not in [i["id"] for i in before], path
        everything = {
            "created_after": "0001-01-01T00:00:00Z",
            "created_before": "9999-12-31T23:59:59Z",
        }
        bounded = await world.admin.get(path, params=everything)
        all_of_them = ok(await world.admin.get(path), 200)["items"]
        assert ok(bounded, 200)["items"] == all_of_them, path
        problem(await world.admin.get(path, params={"created_after": "yesterday"}), 422)
    # Tenancy still applies: a customer's organizations are its own, however it filters.
    mine = ok(await world.customer_a.get("/organizations", params={"created_before": cut}), 200)
    assert [o["id"] for o in mine["items"]] == [world.org_a["id"]]


async def test_racing_revokes_of_one_key_revoke_it_once(world: World, database: Database) -> None:
    from app.core.changelog import change_log

    user, _ = await make_user(world.admin, "agent")
    path = f"/users/{user['id']}/api-keys/{user['api_key_id']}"
    answers = await asyncio.gather(*(world.admin.delete(path) for _ in range(4)))
    views = [ok(answer, 200) for answer in answers]
    assert all(view == views[0] for view in views)
    assert views[0]["version"] == 2
    assert {answer.headers["etag"] for answer in answers} == {'"2"'}
    async with database.read() as conn:
        logged = (
            await conn.execute(
                select(change_log.c.event, change_log.c.entity_version).where(
                    change_log.c.entity_id == uuid.UUID(user["api_key_id"])
                )
            )
        ).all()
    assert sorted(tuple(row) for row in logged) == [("api_key.created", 1), ("api_key.revoked", 2)]
