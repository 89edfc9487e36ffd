"""Who holds an API key is cached per process only while PostgreSQL notifies every change to
users and keys (app/identity/principals.py): a revoked key, a disabled user or a new role
count from the next request on, in the process that made the change and in the others."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

from app.core import notify
from app.core.auth import Principal, Role
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.db import Database
from app.identity.principals import AUTH_CHANNEL, PrincipalCache
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


def test_nothing_is_answered_from_the_cache_unless_it_is_listening() -> None:
    ticks = Ticks()
    cache = PrincipalCache(60, monotonic=ticks)
    cache.put("h", SOMEONE, cache.generation)
    assert cache.get("h") is None  # not listening: nothing kept
    cache.listening(True)
    cache.put("h", SOMEONE, cache.generation)
    assert cache.get("h") == SOMEONE
    cache.listening(False)  # the connection was lost: everything is forgotten
    assert cache.get("h") is None
    cache.listening(True)
    assert cache.get("h") is None  # and it starts empty again


def test_entries_expire_and_notifications_forget_them() -> None:
    ticks = Ticks()
    cache = PrincipalCache(60, monotonic=ticks)
    cache.listening(True)
    cache.put("h", SOMEONE, cache.generation)
    ticks.now += 59.9
    assert cache.get("h") == SOMEONE
    ticks.now += 0.1
    assert cache.get("h") is None
    cache.put("h", SOMEONE, cache.generation)
    cache.changed()
    assert cache.get("h") is None


def test_a_read_that_began_before_a_change_is_not_kept() -> None:
    cache = PrincipalCache(60)
    cache.listening(True)
    asked_at = cache.generation
    cache.changed()  # the key was revoked while the database was being asked
    cache.put("h", SOMEONE, asked_at)
    assert cache.get("h") is None


def test_a_zero_lifetime_turns_the_cache_off() -> None:
    cache = PrincipalCache(0)
    cache.listening(True)
    cache.put("h", SOMEONE, cache.generation)
    assert cache.get("h") is None


# --- two processes on one PostgreSQL ----------------------------------------------------------


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


@pytest.fixture
async def two_processes(
    database: Database, pg_url: str | None, clock: ManualClock
) -> AsyncIterator[tuple[Process, Process]]:
    """Two apps on the same database, each with its own cache and listener, as two workers."""
    if database.dialect != "postgresql" or pg_url is None:
        pytest.skip("notifications are PostgreSQL's")
    settings = Settings(
        database_url=pg_url, region="msk", admin_api_key=ADMIN_KEY, embedded_worker=False
    )
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        processes = []
        listeners = []
        for _ in range(2):
            app = create_app(settings, clock=clock, database=database, jobs=[])
            http = AsyncClient(transport=ASGITransport(app=app), base_url="http://sdms.test")
            await stack.enter_async_context(http)
            cache = app.state.principals
            follow = notify.follow(pg_url, AUTH_CHANNEL, cache, stop, retry_seconds=0.05)
            listeners.append(asyncio.create_task(follow))
            processes.append(Process(app, http))
        await wait_for(lambda: all(p.principals.live for p in processes))
        try:
            yield processes[0], processes[1]
        finally:
            stop.set()
            await asyncio.gather(*listeners)


async def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


async def cached(key: Api) -> None:
    """Ask once so that the key's process keeps its holder."""
    ok(await key.get("/me"), 200)


async def test_a_revoked_key_is_refused_by_every_process(
    two_processes: tuple[Process, Process],
) -> None:
    a, b = two_processes
    world = await build_world(a.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "agent")
    key_on_a, key_on_b = a.api(user["api_key"]), b.api(user["api_key"])
    await cached(key_on_a)
    await cached(key_on_b)
    keys = ok(await world.admin.get(f"/users/{user['id']}/api-keys"), 200)
    seen_by_b = b.principals.generation
    ok(await world.admin.delete(f"/users/{user['id']}/api-keys/{keys[0]['id']}"), 200)
    # The process that revoked it forgets at once, before it answers.
    problem(await key_on_a.get("/me"), 401)
    # The other one hears of it from PostgreSQL.
    await wait_for(lambda: b.principals.generation != seen_by_b)
    problem(await key_on_b.get("/me"), 401)


async def test_a_disabled_user_or_a_new_role_counts_everywhere(
    two_processes: tuple[Process, Process],
) -> None:
    a, b = two_processes
    world: World = await build_world(a.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "manager")
    on_b = b.api(user["api_key"])

    def contact() -> dict[str, str]:  # managers may add contacts, agents may not
        return {"organization_id": world.org_a["id"], "email": f"c{uuid.uuid4().hex}@x.ru"}

    ok(await on_b.post("/contacts", json={**contact(), "name": "First"}), 201)
    seen_by_b = b.principals.generation
    ok(await world.admin.patch(f"/users/{user['id']}", json={"role": "agent"}), 200)
    await wait_for(lambda: b.principals.generation != seen_by_b)
    problem(await on_b.post("/contacts", json={**contact(), "name": "Second"}), 403)
    seen_by_b = b.principals.generation
    ok(await world.admin.patch(f"/users/{user['id']}", json={"active": False}), 200)
    await wait_for(lambda: b.principals.generation != seen_by_b)
    problem(await on_b.get("/me"), 401)


async def test_changes_made_by_hand_are_heard_and_a_silent_cache_is_not_trusted(
    two_processes: tuple[Process, Process], database: Database
) -> None:
    a, b = two_processes
    world = await build_world(a.api(ADMIN_KEY))
    user, _ = await make_user(world.admin, "agent")
    on_b = b.api(user["api_key"])
    await cached(on_b)
    # By hand, in SQL: the triggers notify all the same.
    seen_by_b = b.principals.generation
    async with database.transaction() as conn:
        await conn.execute(text("UPDATE users SET name = 'Renamed' WHERE id = :id"), user)
    await wait_for(lambda: b.principals.generation != seen_by_b)
    assert ok(await on_b.get("/me"), 200)["name"] == "Renamed"
    # A change nobody is told of (triggers off inside its transaction) stays unseen while the
    # cache is trusted: the cache is really used...
    silent = "UPDATE api_keys SET revoked_at = now() WHERE user_id = :id"
    async with database.transaction() as conn:
        await conn.execute(text("ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify_auth"))
        await conn.execute(text(silent), user)
        await conn.execute(text("ALTER TABLE api_keys ENABLE TRIGGER api_keys_notify_auth"))
    ok(await on_b.get("/me"), 200)
    # ...and once its process stops listening, nothing is answered from it.
    b.principals.listening(False)
    problem(await on_b.get("/me"), 401)
