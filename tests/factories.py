"""Plain async builders over the HTTP API: tests set up data the way clients do."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient, Response

API = "/api/v1"
_serial = itertools.count(1)


class Api:
    """An HTTP client acting as one API key; paths are relative to /api/v1."""

    def __init__(self, client: AsyncClient, key: str | None = None) -> None:
        self.client = client
        self.key = key

    def as_key(self, key: str | None) -> Api:
        return Api(self.client, key)

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        merged = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        merged.update(headers or {})
        return merged

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Response:
        url = path if path.startswith(("http", "/healthz", "/readyz", "/metrics")) else API + path
        return await self.client.request(method, url, headers=self._headers(headers), **kwargs)

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PATCH", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)


def ok(response: Response, status: int | tuple[int, ...] = (200, 201)) -> Any:
    expected = (status,) if isinstance(status, int) else status
    assert response.status_code in expected, f"{response.status_code}: {response.text}"
    return response.json()


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
OFFICE_UTC = {d: [["09:00", "17:00"]] for d in WEEKDAYS}


async def make_calendar(who: Api, **fields: Any) -> dict[str, Any]:
    """A business calendar: office hours in UTC unless `fields` say otherwise."""
    body = {"name": "Office", "timezone": "UTC", "hours": OFFICE_UTC, **fields}
    return ok(await who.post("/slm/calendars", json=body), 201)  # type: ignore[no-any-return]


def same_targets(response_seconds: int, resolution_seconds: int) -> list[dict[str, int]]:
    """The same response and resolution target for every priority."""
    return [
        {
            "priority": p,
            "response_seconds": response_seconds,
            "resolution_seconds": resolution_seconds,
        }
        for p in range(1, 6)
    ]


async def make_agreement(who: Api, calendar_id: str, **fields: Any) -> dict[str, Any]:
    """An agreement on `calendar_id`: hours scaled by priority unless `targets` are given."""
    body = {
        "name": "Standard 8x5",
        "calendar_id": calendar_id,
        "targets": [
            {"priority": p, "response_seconds": 3600 * p, "resolution_seconds": 4 * 3600 * p}
            for p in range(1, 6)
        ],
        **fields,
    }
    return ok(await who.post("/slm/agreements", json=body), 201)  # type: ignore[no-any-return]


async def make_org(admin: Api, **fields: Any) -> dict[str, Any]:
    n = next(_serial)
    body = {"name": f"Organization {n}", "code": f"ORG{n}", **fields}
    return ok(await admin.post("/organizations", json=body), 201)  # type: ignore[no-any-return]


async def make_user(
    admin: Api, role: str, organization_id: str | None = None, **fields: Any
) -> tuple[dict[str, Any], Api]:
    n = next(_serial)
    body: dict[str, Any] = {"email": f"user{n}@example.com", "name": f"User {n}", "role": role}
    if organization_id is not None:
        body["organization_id"] = organization_id
    body.update(fields)
    user = ok(await admin.post("/users", json=body), 201)
    return user, admin.as_key(user["api_key"])


@dataclass
class World:
    """Two customer organizations and a support team, the cast of most tests."""

    admin: Api
    org_a: dict[str, Any]
    org_b: dict[str, Any]
    customer_a: Api
    customer_a_user: dict[str, Any]
    customer_b: Api
    customer_b_user: dict[str, Any]
    agent: Api
    agent_user: dict[str, Any]
    manager: Api
    manager_user: dict[str, Any]
    integration: Api
    group: dict[str, Any]
    service: dict[str, Any]

    async def incident(self, who: Api | None = None, **fields: Any) -> dict[str, Any]:
        """An incident of organization A, opened by its customer unless `who` says otherwise."""
        who = who or self.customer_a
        body: dict[str, Any] = {"title": "Calls drop after 30 seconds", "description": "Since 9:00"}
        if who is not self.customer_a and who is not self.customer_b:
            body["organization_id"] = self.org_a["id"]
        body.update(fields)
        return ok(await who.post("/incidents", json=body), 201)  # type: ignore[no-any-return]

    async def move(self, incident: dict[str, Any], to: str, **fields: Any) -> dict[str, Any]:
        """Transition as the agent, with what the move requires unless given."""
        body: dict[str, Any] = {"to": to, **fields}
        response = await self.agent.post(f"/incidents/{incident['id']}/transitions", json=body)
        return ok(response, 200)  # type: ignore[no-any-return]


async def build_world(admin: Api) -> World:
    org_a = await make_org(admin, name="Baltic Telecom")
    org_b = await make_org(admin, name="Volga Billing")
    group = ok(await admin.post("/groups", json={"name": f"2nd line {next(_serial)}"}), 201)
    service = ok(
        await admin.post(
            "/services",
            json={"name": "Billing", "code": f"BILL{next(_serial)}", "owner_group_id": group["id"]},
        ),
        201,
    )
    customer_a_user, customer_a = await make_user(admin, "customer", org_a["id"])
    customer_b_user, customer_b = await make_user(admin, "customer", org_b["id"])
    agent_user, agent = await make_user(admin, "agent", group_ids=[group["id"]])
    manager_user, manager = await make_user(admin, "manager")
    _integration_user, integration = await make_user(admin, "integration")
    return World(
        admin=admin,
        org_a=org_a,
        org_b=org_b,
        customer_a=customer_a,
        customer_a_user=customer_a_user,
        customer_b=customer_b,
        customer_b_user=customer_b_user,
        agent=agent,
        agent_user=agent_user,
        manager=manager,
        manager_user=manager_user,
        integration=integration,
        group=group,
        service=service,
    )


# Text that must never reach a client: stack traces, driver names, SQL.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "[SQL:",
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
)


def problem(response: Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status (and no leaked internals); return its body."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), content_type
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status, body
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str) and body[member], body
    if status == 422:
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, body
        for error in errors:
            assert isinstance(error["loc"], list), error
            assert isinstance(error["msg"], str) and error["msg"], error
    for marker in LEAK_MARKERS:
        assert marker not in response.text, f"{marker!r} leaked: {response.text}"
    return body
