"""The scenarios: what each one sends to SDMS, to the floor app and to the raw limit.

Targets are drawn from the database once, before the load starts, so the load generator does no
database work: incident ids for get and comment, (organization, state) pairs with their
second-page cursors for list, `new` incidents (each used once) for the transition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from bench.http import Client
from bench.seed import Cast

API = "/api/v1"
SCENARIOS = ("create", "get", "list", "transition", "comment")
# Reads first, on exactly the seeded rows; then the writes (creates feed the transitions).
RUN_ORDER = ("get", "list", "create", "transition", "comment")
LIST_STATES = ("new", "in_progress", "on_hold", "resolved", "closed")
CREATE_VARIANTS = 4000
COMMENT_BODY = "Checked the switch logs: no drops recorded on our side; asking the vendor."


@dataclass
class Load:
    """One scenario for one target: HTTP requests (SDMS, floor) or raw operations (limit)."""

    cycle: bool
    headers: list[dict[str, str]] = field(default_factory=list)
    requests: list[list[Any]] = field(default_factory=list)  # [method, path, headers, body]
    ops: list[list[Any]] = field(default_factory=list)

    def http_spec(
        self, port: int, concurrency: int, warmup: float, duration: float, count: float = 0.0
    ) -> bytes:
        spec = {
            "host": "127.0.0.1",
            "port": port,
            "concurrency": concurrency,
            "warmup": warmup,
            "duration": duration,
            "count": count,
            "cycle": self.cycle,
            "headers": self.headers,
            "requests": self.requests,
        }
        return orjson.dumps(spec)

    def raw_spec(
        self, dsn: str, connections: int, warmup: float, duration: float, count: float = 0.0
    ) -> bytes:
        spec = {
            "dsn": dsn,
            "connections": connections,
            "warmup": warmup,
            "duration": duration,
            "count": count,
            "cycle": self.cycle,
            "ops": self.ops,
        }
        return orjson.dumps(spec)


def _json(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Loads:
    sdms: Load
    floor: Load
    raw: Load


def create_loads(cast: Cast, rng: random.Random) -> Loads:
    """Customers open incidents in their own organization (SDMS); the same rows without auth
    (floor, raw)."""
    sdms = Load(cycle=True, headers=[_bearer(k) for k in cast.customer_keys])
    floor = Load(cycle=True, headers=[{}])
    raw = Load(cycle=True)
    for n in range(CREATE_VARIANTS):
        org = rng.randrange(len(cast.organizations))
        body: dict[str, Any] = {
            "title": f"Calls drop after 30 seconds in region {n % 97}",
            "description": "Several subscribers report dropped calls since 9:00. " * 2,
            "impact": rng.choice((1, 2, 2, 3, 3, 3)),
            "urgency": rng.choice((1, 2, 2, 3, 3, 3)),
            "channel": "portal",
        }
        sdms.requests.append(["POST", f"{API}/incidents", org, _json(body)])
        org_id = cast.organizations[org]["id"]
        floor.requests.append(["POST", "/incidents", 0, _json({**body, "organization_id": org_id})])
        raw.ops.append(
            ["create", org_id, body["title"], body["description"], body["impact"],
             body["urgency"], body["channel"]]
        )  # fmt: skip
    return Loads(sdms, floor, raw)


def _agents(cast: Cast) -> list[dict[str, str]]:
    return [_bearer(key) for _id, key in cast.agents]


def get_loads(cast: Cast, ids: list[str]) -> Loads:
    agents = len(cast.agents)
    return Loads(
        Load(
            cycle=True,
            headers=_agents(cast),
            requests=[["GET", f"{API}/incidents/{i}", n % agents, None] for n, i in enumerate(ids)],
        ),
        Load(cycle=True, headers=[{}], requests=[["GET", f"/incidents/{i}", 0, None] for i in ids]),
        Load(cycle=True, ops=[["get", i] for i in ids]),
    )


@dataclass(frozen=True)
class ListTarget:
    """One list request: organization, state, and the keyset position of page 2 (or None)."""

    org: str
    state: str
    page2: bool


def list_targets(cast: Cast, rng: random.Random, count: int = 4000) -> list[ListTarget]:
    """Uniform over organizations and states; half of the requests ask for the second page."""
    orgs = [o["id"] for o in cast.organizations]
    return [
        ListTarget(rng.choice(orgs), rng.choice(LIST_STATES), rng.random() < 0.5)
        for _ in range(count)
    ]


def list_load_http(
    prefix: str,
    targets: list[ListTarget],
    cursors: dict[tuple[str, str], str | None],
    headers: list[dict[str, str]],
) -> Load:
    load = Load(cycle=True, headers=headers)
    for n, t in enumerate(targets):
        path = f"{prefix}/incidents?organization_id={t.org}&state={t.state}&limit=50"
        cursor = cursors.get((t.org, t.state)) if t.page2 else None
        if cursor:
            path += f"&cursor={quote(cursor, safe='')}"
        load.requests.append(["GET", path, n % len(headers), None])
    return load


def list_load_sdms(
    cast: Cast, targets: list[ListTarget], cursors: dict[tuple[str, str], str | None]
) -> Load:
    """SDMS's list requests, sent by the agents in turn."""
    return list_load_http(API, targets, cursors, _agents(cast))


async def first_page_cursors(
    client: Client, prefix: str, targets: list[ListTarget]
) -> dict[tuple[str, str], str | None]:
    """The `next_cursor` of page 1 for every (organization, state) of `targets`: what their
    page-2 requests send. `prefix` is `API` for SDMS, "" for the floor app."""
    cursors = {}
    for org, state in sorted({(t.org, t.state) for t in targets}):
        path = f"{prefix}/incidents?organization_id={org}&state={state}&limit=50"
        cursors[(org, state)] = (await client.ok("GET", path))["next_cursor"]
    return cursors


def list_load_raw(
    targets: list[ListTarget], positions: dict[tuple[str, str], tuple[str, str] | None]
) -> Load:
    load = Load(cycle=True)
    for t in targets:
        position = positions.get((t.org, t.state)) if t.page2 else None
        after, last = position if position else (None, None)
        load.ops.append(["list", t.org, t.state, after, last])
    return load


def transition_load_sdms(cast: Cast, ids: list[str]) -> Load:
    agents = len(cast.agents)
    body = _json({"to": "in_progress"})
    return Load(
        cycle=False,
        headers=_agents(cast),
        requests=[
            ["POST", f"{API}/incidents/{i}/transitions", n % agents, body]
            for n, i in enumerate(ids)
        ],
    )


def transition_load_floor(ids: list[str]) -> Load:
    body = _json({"to": "in_progress"})
    return Load(
        cycle=False,
        headers=[{}],
        requests=[["POST", f"/incidents/{i}/transitions", 0, body] for i in ids],
    )


def transition_load_raw(ids: list[str]) -> Load:
    return Load(cycle=False, ops=[["transition", i] for i in ids])


def comment_loads(cast: Cast, ids: list[str]) -> Loads:
    """Agents add work notes (the default for staff) to incidents in any state."""
    agents = len(cast.agents)
    body = _json({"body": COMMENT_BODY})
    return Loads(
        Load(
            cycle=True,
            headers=_agents(cast),
            requests=[
                ["POST", f"{API}/incidents/{i}/comments", n % agents, body]
                for n, i in enumerate(ids)
            ],
        ),
        Load(
            cycle=True,
            headers=[{}],
            requests=[["POST", f"/incidents/{i}/comments", 0, body] for i in ids],
        ),
        Load(cycle=True, ops=[["comment", i, COMMENT_BODY] for i in ids]),
    )
