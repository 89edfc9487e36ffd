"""SQL statements per request on the hot paths, pinned: a change that adds a round trip, or a
query per row (N+1), fails here. Counted on SQLite, where every statement passes through
SQLAlchemy's events (on PostgreSQL the hot statements run on the driver directly). PostgreSQL
runs the same statements, except that its transactions begin inside the driver rather than
with a BEGIN statement, the writes after a request's reads are one statement (app/core/sql.py
Batch), and a create's write draws its number itself, guarded by the configuration's version:
a create is that one statement; a transition is incident, clocks, batch; a comment is
incident, batch. The PostgreSQL test below counts what reaches the driver."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database, create_engine, driver_of
from app.main import create_app
from tests.conftest import ADMIN_KEY, START
from tests.factories import Api, World, build_world, make_agreement, make_calendar, ok, same_targets


class Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, *args: Any) -> None:
        statement: str = args[2]
        self.seen.append(" ".join(statement.split()[:3]))

    async def count(self, request: Any) -> int:
        self.seen.clear()
        response = await request
        assert response.status_code < 300, response.text
        return len(self.seen)


@pytest.fixture
async def counted(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[tuple[World, Statements]]:
    path = tmp_path / "counted.db"
    shutil.copyfile(sqlite_template, path)
    database = Database(create_engine(f"sqlite+aiosqlite:///{path}"))
    statements = Statements()
    event.listen(database.engine.sync_engine, "before_cursor_execute", statements)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{path}",
        region="msk",
        admin_api_key=ADMIN_KEY,
        embedded_worker=False,
    )
    app = create_app(settings, clock=ManualClock(START), database=database, jobs=[])
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            world = await build_world(Api(http).as_key(ADMIN_KEY))
            cal = await make_calendar(world.manager, name="24x7", always_on=True, hours={})
            await make_agreement(
                world.manager, cal["id"], name="A", targets=same_targets(600, 3600)
            )
            yield world, statements
    finally:
        await database.dispose()


async def test_statements_per_request(counted: tuple[World, Statements]) -> None:
    world, statements = counted
    await world.incident()  # the SLM configuration is loaded once, then cached
    # auth, BEGIN, number, configuration version (on PostgreSQL one statement with the
    # number), incident, journal, clocks, change log
    create = await statements.count(
        world.customer_a.post("/incidents", json={"title": "Calls drop"})
    )
    assert create == 8
    incident = (await world.customer_a.get("/incidents", params={"limit": 1})).json()["items"][0]
    url = f"/incidents/{incident['id']}"
    # auth, the incident (its row carries its clocks)
    assert await statements.count(world.agent.get(url)) == 2
    # auth, BEGIN, incident (locked), its update, journal, clocks, the response clock's
    # update, change log
    assert (
        await statements.count(world.agent.post(f"{url}/transitions", json={"to": "in_progress"}))
        == 8
    )
    # auth, BEGIN, incident (locked), journal, change log
    assert await statements.count(world.agent.post(f"{url}/comments", json={"body": "x"})) == 5


async def test_a_page_costs_the_same_whatever_its_size(counted: tuple[World, Statements]) -> None:
    """No statement per listed incident: auth, then the page, whose rows carry their clocks."""
    world, statements = counted
    params = {"organization_id": world.org_a["id"], "state": "new", "limit": 50}
    await world.incident()
    one = await statements.count(world.agent.get("/incidents", params=params))
    for _ in range(29):
        await world.incident()
    many = await statements.count(world.agent.get("/incidents", params=params))
    assert one == many == 2
    page = ok(await world.agent.get("/incidents", params={**params, "limit": 10}), 200)
    assert (
        await statements.count(
            world.agent.get("/incidents", params={**params, "cursor": page["next_cursor"]})
        )
        == 2
    )


async def test_round_trips_per_request_on_postgresql(
    world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What reaches the driver under the request's connection, where the hot paths run
    (app/core/sql.py)."""
    if database.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's statements are counted above")
    sent: list[str] = []
    logged: set[int] = set()
    connect = database.request_connection

    async def request_connection() -> AsyncConnection:
        conn = await connect()
        driver = driver_of(conn)
        if id(driver) not in logged:
            logged.add(id(driver))
            driver.add_query_logger(lambda query: sent.append(query.query))
        return conn

    monkeypatch.setattr(database, "request_connection", request_connection)

    async def count(request: Any) -> list[str]:
        # the driver hands each logged query on with call_soon: let earlier ones arrive first
        await asyncio.sleep(0)
        sent.clear()
        response = await request
        assert response.status_code < 300, response.text
        await asyncio.sleep(0)
        return list(sent)

    await world.incident()  # the SLM configuration is loaded once, then cached
    body = {"title": "Calls drop"}
    # Every request reads its API key here: the tests' app does not LISTEN for key changes,
    # so it caches no key (app/identity/principals.py). Then: one statement that draws the
    # number, checks the configuration's version and writes everything.
    create = await count(world.customer_a.post("/incidents", json=body))
    assert len(create) == 2, create
    assert "api_keys" in create[0] and "nextval" in create[1] and "config_versions" in create[1]
    incident = ok(await world.customer_a.post("/incidents", json=body), 201)
    assert len(await count(world.agent.get(f"/incidents/{incident['id']}"))) == 2
    listing = await count(world.agent.get("/incidents", params={"state": "new", "limit": 50}))
    assert len(listing) == 2  # the page (its rows carry their clocks)
