"""Requests take turns for their connection (`Database.request_connection`): at most
`concurrency` at once per process, the others in order of arrival, and no turn is lost to a
request that gave up waiting or whose connection failed."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import ValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.core.db import Database, create_engine
from app.main import create_app
from tests.conftest import ADMIN_KEY


@asynccontextmanager
async def _database(url: object, concurrency: int, **pool: Any) -> AsyncIterator[Database]:
    """A Database of its own on `url` (the test's database, mostly), disposed of after."""
    db = Database(create_engine(str(url), **pool), concurrency=concurrency)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def two_at_once(database: Database) -> AsyncIterator[Database]:
    """A second Database on the test's database: two requests at once, a pool of five."""
    async with _database(database.engine.url, 2, pool_size=5, max_overflow=0) as db:
        yield db


async def _settle() -> None:
    """Let every task that can run without I/O, run: a request that finds no turn free waits
    for one before any I/O, so afterwards it is surely waiting."""
    for _ in range(20):
        await asyncio.sleep(0)


class Requests:
    """Requests on one Database, named, noting the order in which they got a connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.served: list[str] = []
        self.tasks: dict[str, asyncio.Task[AsyncConnection]] = {}
        self.turns_taken: list[str] = []  # who got past its turn (to connect, or take a kept one)
        self._current = contextvars.ContextVar[str]("request")
        turns = db._turns
        assert turns is not None
        acquire = turns.acquire

        async def acquired() -> bool:
            taken = await acquire()
            self.turns_taken.append(self._current.get())
            return taken

        turns.acquire = acquired  # type: ignore[method-assign, assignment]

    async def arrive(self, *names: str) -> None:
        """These requests arrive one after another, to find no turn free."""
        for name in names:
            self.tasks[name] = asyncio.create_task(self._take(name))
            await _settle()

    async def serve(self, *names: str) -> None:
        """These requests arrive one after another, each to a free turn: each has its
        connection before the next arrives."""
        for name in names:
            await self.arrive(name)
            await self.connected(name)

    async def _take(self, name: str) -> AsyncConnection:
        self._current.set(name)
        conn = await self.db.request_connection()
        self.served.append(name)
        return conn

    async def connected(self, *names: str) -> None:
        """Wait until these requests have their connection (connecting is I/O)."""
        for name in names:
            await asyncio.wait_for(asyncio.shield(self.tasks[name]), 10)

    def waiting(self) -> set[str]:
        """The requests still waiting for their turn (not merely connecting)."""
        return {name for name in self.tasks if name not in self.turns_taken}

    async def end(self, *names: str) -> None:
        for name in names:
            await self.db.end_request(await self.tasks[name])


async def test_requests_beyond_the_concurrency_wait_their_turn_in_arrival_order(
    two_at_once: Database,
) -> None:
    requests = Requests(two_at_once)
    await requests.serve("a", "b")
    await requests.arrive("c", "d", "e")
    assert requests.waiting() == {"c", "d", "e"}

    await requests.end("a")
    # A newcomer arriving just as a turn is handed on does not take it from the first waiter.
    await requests.arrive("f")
    await requests.connected("c")
    assert requests.waiting() == {"d", "e", "f"}

    for ended, next_one in (("b", "d"), ("c", "e"), ("d", "f")):
        await requests.end(ended)
        await requests.connected(next_one)
    assert requests.served == ["a", "b", "c", "d", "e", "f"]
    await requests.end("e", "f")


async def test_a_request_that_stops_waiting_gives_its_turn_on(two_at_once: Database) -> None:
    requests = Requests(two_at_once)
    await requests.serve("a", "b")
    await requests.arrive("c", "d", "e")
    assert requests.waiting() == {"c", "d", "e"}
    requests.tasks["c"].cancel()  # gave up while waiting
    await requests.end("a")  # the turn goes to d ...
    requests.tasks["d"].cancel()  # ... which gives up before it has run again
    await requests.connected("e")
    assert requests.served == ["a", "b", "e"]
    assert requests.turns_taken == ["a", "b", "e"]
    await requests.end("b", "e")
    # Both turns are free again: two new requests are served at once.
    await requests.serve("g", "h")
    await requests.end("g", "h")


async def test_a_request_whose_connection_fails_gives_its_turn_back(tmp_path: Path) -> None:
    unreachable = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'sdms.db'}"
    async with _database(unreachable, 1, pool_size=1, max_overflow=0) as db:
        for _ in range(3):  # each fails: no turn is left taken
            with pytest.raises(Exception, match="unable to open database file"):
                await asyncio.wait_for(db.request_connection(), 10)


async def test_a_request_waits_for_its_turn_no_longer_than_for_the_pool(
    database: Database,
) -> None:
    pool = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    async with _database(database.engine.url, 1, **pool) as db:
        requests = Requests(db)
        await requests.serve("a")
        with pytest.raises(PoolTimeout):
            await asyncio.wait_for(db.request_connection(), 10)
        await requests.end("a")
        await requests.serve("b")  # the turn that timed out was not lost
        await requests.end("b")


async def test_a_request_that_found_no_turn_in_time_is_a_503_to_retry(
    database: Database, settings: Settings
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    pool = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    async with _database(database.engine.url, 1, **pool) as db:
        app = create_app(
            settings.model_copy(update={"worker_concurrency": 1}), database=db, jobs=[]
        )
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://sdms.test") as c:
            held = await db.request_connection()  # a request holds the one turn
            busy = await asyncio.wait_for(c.get("/api/v1/incidents", headers=headers), 10)
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "5"
            assert busy.json()["type"] == "urn:sdms:problem:unavailable"
            assert "too busy" in busy.json()["detail"]
            await db.end_request(held)
            again = await asyncio.wait_for(c.get("/api/v1/incidents", headers=headers), 10)
            assert again.status_code == 200, again.text


async def test_connections_are_handed_on_with_as_many_turns_as_the_pool(
    database: Database,
) -> None:
    """The pool's overflow leaves room for background jobs: a request's connection is handed
    on to the next request even when every connection of the pool's size is a request's."""
    if database.dialect != "postgresql":
        pytest.skip("connections are handed on from request to request on PostgreSQL")
    async with _database(database.engine.url, 2, pool_size=2, max_overflow=1) as db:
        first = await db.request_connection()
        second = await db.request_connection()
        await db.end_request(first)
        third = await db.request_connection()
        assert third is first
        for conn in (second, third):
            await db.end_request(conn)


async def test_the_service_serves_as_many_requests_at_once_as_configured(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sdms.db'}"
    settings = Settings(database_url=url, embedded_worker=False, worker_concurrency=1)
    app = create_app(settings, jobs=[])
    async with app.router.lifespan_context(app):
        requests = Requests(app.state.db)
        await requests.serve("a")
        await requests.arrive("b")
        assert requests.waiting() == {"b"}
        await requests.end("a")
        await requests.connected("b")
        await requests.end("b")


async def test_a_client_slow_to_read_its_answer_holds_no_turn(
    database: Database, settings: Settings
) -> None:
    """A request's connection, and its turn, are handed on as its response starts: a client
    that reads its answer slowly (or never) does not make the next request wait."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    stalled, answered = asyncio.Event(), asyncio.Event()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def never_reads(message: MutableMapping[str, object]) -> None:
        if message["type"] == "http.response.body":
            stalled.set()
            await answered.wait()  # the client takes its time

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/incidents",
        "raw_path": b"/api/v1/incidents",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"sdms.test"), (b"authorization", headers["Authorization"].encode())],
        "client": ("127.0.0.1", 1),
        "server": ("sdms.test", 80),
    }
    async with _database(database.engine.url, 1, pool_size=2, max_overflow=0) as one:
        one_at_once = settings.model_copy(update={"worker_concurrency": 1})
        app = create_app(one_at_once, database=one, jobs=[])
        slow = asyncio.create_task(app(scope, receive, never_reads))
        try:
            await asyncio.wait_for(stalled.wait(), 10)
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://sdms.test") as c:
                next_one = asyncio.create_task(c.get("/api/v1/incidents", headers=headers))
                done, _ = await asyncio.wait({next_one}, timeout=10)
                answered.set()  # the slow client reads at last
                assert next_one in done, "the next request waited for the slow client"
                assert (await next_one).status_code == 200
        finally:
            answered.set()
            await slow


def test_the_concurrency_cannot_exceed_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SDMS_WORKER_CONCURRENCY", "SDMS_DB_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().worker_concurrency == 4
    assert Settings(db_pool_size=3).worker_concurrency == 3  # the default fits a smaller pool
    with pytest.raises(ValidationError, match="SDMS_WORKER_CONCURRENCY"):
        Settings(db_pool_size=3, worker_concurrency=4)


def test_the_jobs_look_for_due_work_often_enough_for_the_contracts_10_seconds() -> None:
    assert Settings(worker_interval_seconds=8).worker_interval_seconds == 8
    with pytest.raises(ValidationError):
        Settings(worker_interval_seconds=9)
