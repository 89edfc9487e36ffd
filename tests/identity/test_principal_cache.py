"""Who holds an API key is cached per process only while PostgreSQL notifies every change to
users and keys (app/identity/principals.py): a revoked key, a disabled user or a new role
count from the next request on, in the process that made the change and in the others."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

from app.core import notify
from app.core.auth import Principal, Role, hash_api_key
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database
from app.core.notify import APPLICATION_NAME as APP
from app.identity.principals import ALIVE_SECONDS, AUTH_CHANNEL, PrincipalCache
from app.main import create_app
from tests.conftest import ADMIN_KEY
from tests.factories import Api, World, build_world, make_user, ok, problem

# --- the cache itself -------------------------------------------------------------------------

SOMEONE = Principal(uuid.uuid4(), Role.agent, None, "Agent")


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def listening_cache(ttl: float = 60) -> tuple[PrincipalCache, Ticks]:
    ticks = Ticks()
    cache = PrincipalCache(ttl, monotonic=ticks)
    cache.alive()
    return cache, ticks


def test_nothing_is_answered_from_the_cache_unless_it_is_listening() -> None:
    cache = PrincipalCache(60, monotonic=Ticks())
    cache.put("h", SOMEONE, cache.generation)
    assert cache.get("h") is None  # not listening: nothing kept
    cache.alive()
    cache.put("h", SOMEONE, cache.generation)
    assert cache.get("h") == SOMEONE
    cache.lost()  # the connection was lost: everything is forgotten
    assert cache.get("h") is None
    cache.alive()
    assert cache.get("h") is None  # and it starts empty again


def test_a_listener_not_seen_working_for_a_while_is_not_trusted() -> None:
    cache, ticks = listening_cache()
    cache.put("h", SOMEONE, cache.generation)
    ticks.now += ALIVE_SECONDS - 0.1
    assert cache.get("h") == SOMEONE
    ticks.now += 0.1  # no ping answered for ALIVE_SECONDS: the connection may be dead
    assert cache.get("h") is None
    cache.put("h", SOMEONE, cache.generation)
    cache.alive()
    assert cache.get("h") is None  # nothing was kept meanwhile


def test_entries_expire_and_notifications_forget_them() -> None:
    cache, ticks = listening_cache()
    cache.put("h", SOMEONE, cache.generation)
    ticks.now += 5
    cache.alive()
    assert cache.get("h") == SOMEONE
    ticks.now += 55
    cache.alive()
    assert cache.get("h") is None  # 60 s old
    cache.put("h", SOMEONE, cache.generation)
    cache.changed()
    assert cache.get("h") is None


def test_a_read_that_began_before_a_change_is_not_kept() -> None:
    cache, _ticks = listening_cache()
    asked_at = cache.generation
    cache.changed()  # the key was revoked while the database was being asked
    cache.put("h", SOMEONE, asked_at)
    assert cache.get("h") is None


def test_a_zero_lifetime_turns_the_cache_off() -> None:
    cache, _ticks = listening_cache(ttl=0)
    cache.put("h", SOMEONE, cache.generation)
    assert cache.get("h") is None


# --- processes on one PostgreSQL --------------------------------------------------------------


@dataclass
class Process:
    app: FastAPI
    http: AsyncClient

    @property
    def principals(self) -> PrincipalCache:
        cache: PrincipalCache = self.app.state.principals
        return cache

    def api(self, key: str) -> Api:
        return Api(self.http, key)

    def holds(self, key: str) -> bool:
        return self.principals.get(hash_api_key(key)) is not None

    async def keep(self, key: str) -> None:
        """Authenticate with `key` until the process holds it: the notifications of the
        changes that set the test up (users, keys) arrive when they arrive, each forgetting."""
        for _ in range(500):
            ok(await self.api(key).get("/me"), 200)
            if self.holds(key):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the key's holder was never kept")


@pytest.fixture
def pg_settings(database: Database, pg_url: str | None) -> Settings:
    if database.dialect != "postgresql" or pg_url is None:
        pytest.skip("notifications are PostgreSQL's")
    return Settings(
        database_url=pg_url, region="msk", admin_api_key=ADMIN_KEY, embedded_worker=False
    )


@pytest.fixture
async def processes(
    database: Database, pg_settings: Settings, clock: ManualClock
) -> AsyncIterator[Callable[[str], Awaitable[Process]]]:
    """Apps on the same database, each with its own cache and listener, as workers are."""
    stop = asyncio.Event()
    listeners: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack:

        async def start(channel: str = AUTH_CHANNEL) -> Process:
            app = create_app(pg_settings, clock=clock, database=database, jobs=[])
            http = AsyncClient(transport=ASGITransport(app=app), base_url="http://sdms.test")
            await stack.enter_async_context(http)
            cache = app.state.principals
            url = pg_settings.database_url
            follow = notify.follow(url, channel, cache, stop, retry_seconds=0.05)
            listeners.append(asyncio.create_task(follow))
            await wait_for(lambda: cache.live)
            return Process(app, http)

        try:
            yield start
        finally:
            stop.set()
            await asyncio.gather(*listeners)


async def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


async def test_a_revoked_key_is_refused_by_every_process(
    processes: Callable[[str], Awaitable[Process]],
) -> None:
    a, b = await processes(AUTH_CHANNEL), await processes(AUTH_CHANNEL)
    world = await build_world(a.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "agent")
    key = user["api_key"]
    await a.keep(key)
    await b.keep(key)
    keys = ok(await world.admin.get(f"/users/{user['id']}/api-keys"), 200)["items"]
    ok(await world.admin.delete(f"/users/{user['id']}/api-keys/{keys[0]['id']}"), 200)
    problem(await a.api(key).get("/me"), 401)
    await wait_for(lambda: not b.holds(key))  # PostgreSQL told the other process
    problem(await b.api(key).get("/me"), 401)


async def test_the_process_that_revokes_forgets_before_it_answers(
    processes: Callable[[str], Awaitable[Process]],
) -> None:
    # This process hears no notification (it listens elsewhere) but trusts its cache: only
    # its own forgetting, after the commit and before the answer, can refuse the key.
    deaf = await processes("sdms_nobody_notifies_this")
    world = await build_world(deaf.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "agent")
    key = user["api_key"]
    await deaf.keep(key)
    keys = ok(await world.admin.get(f"/users/{user['id']}/api-keys"), 200)["items"]
    ok(await world.admin.delete(f"/users/{user['id']}/api-keys/{keys[0]['id']}"), 200)
    problem(await deaf.api(key).get("/me"), 401)
    other, _ = await make_user(world.admin, "agent")
    await deaf.keep(other["api_key"])
    ok(await world.admin.patch(f"/users/{other['id']}", json={"active": False}), 200)
    problem(await deaf.api(other["api_key"]).get("/me"), 401)


async def test_a_disabled_user_or_a_new_role_counts_everywhere(
    processes: Callable[[str], Awaitable[Process]],
) -> None:
    a, b = await processes(AUTH_CHANNEL), await processes(AUTH_CHANNEL)
    world: World = await build_world(a.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "manager")
    key = user["api_key"]
    on_b = b.api(key)

    def contact() -> dict[str, str]:  # managers may add contacts, agents may not
        return {"organization_id": world.org_a["id"], "email": f"c{uuid.uuid4().hex}@x.ru"}

    await b.keep(key)
    ok(await on_b.post("/contacts", json={**contact(), "name": "First"}), 201)
    ok(await world.admin.patch(f"/users/{user['id']}", json={"role": "agent"}), 200)
    await wait_for(lambda: not b.holds(key))
    problem(await on_b.post("/contacts", json={**contact(), "name": "Second"}), 403)
    await b.keep(key)  # as an agent now
    ok(await world.admin.patch(f"/users/{user['id']}", json={"active": False}), 200)
    await wait_for(lambda: not b.holds(key))
    problem(await on_b.get("/me"), 401)


async def test_changes_by_hand_are_heard_and_a_lost_listener_is_not_trusted(
    processes: Callable[[str], Awaitable[Process]], database: Database
) -> None:
    b = await processes(AUTH_CHANNEL)
    world = await build_world(b.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "agent")
    key = user["api_key"]
    on_b = b.api(key)
    await b.keep(key)
    # By hand, in SQL: the triggers notify all the same.
    async with database.transaction() as conn:
        await conn.execute(text("UPDATE users SET name = 'Renamed' WHERE id = :id"), user)
    await wait_for(lambda: not b.holds(key))
    # A change nobody is told of (the trigger off inside its transaction) stays unseen while
    # the cache is trusted: the cache is really used...
    await b.keep(key)
    silent = "UPDATE api_keys SET revoked_at = now() WHERE user_id = :id"
    async with database.transaction() as conn:
        await conn.execute(text("ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify_auth"))
        await conn.execute(text(silent), user)
        await conn.execute(text("ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_notify_auth"))
    ok(await on_b.get("/me"), 200)
    # ...and when the listening connection is lost, what was kept is forgotten (the process
    # listens again, starting empty), so the database answers.
    seen = b.principals.generation
    async with database.transaction() as conn:
        terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        await conn.execute(text(f"{terminate} WHERE application_name = :name"), {"name": APP})
    await wait_for(lambda: b.principals.generation >= seen + 2 and b.principals.live)
    problem(await on_b.get("/me"), 401)


async def test_the_app_listens_from_its_start_on_postgresql(
    database: Database, pg_settings: Settings, clock: ManualClock
) -> None:
    app = create_app(pg_settings, clock=clock, database=database, jobs=[])
    try:
        async with app.router.lifespan_context(app):
            await wait_for(lambda: app.state.principals.live)
        assert not app.state.principals.live  # stopped with the app
    finally:
        gc.unfreeze()  # what start-up froze for a server's lifetime, not a test's
