"""Notifications from PostgreSQL (LISTEN/NOTIFY): how a process learns at once that a row it
caches was changed, by any process or by hand, on any host sharing the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

log = logging.getLogger("sdms.notify")


class Watcher(Protocol):
    def alive(self) -> None:
        """Called whenever the listening connection was just seen working (listening, pinged)."""

    def lost(self) -> None:
        """Called when the listening connection is gone: notifications may be missed."""

    def changed(self) -> None:
        """Called on every notification."""


APPLICATION_NAME = "sdms-listen"
# How often the listening connection is pinged, and how long a ping may take. A watcher
# should stop trusting what it caches when it has not been told `alive` for a few of these
# (app/identity/principals.py): a connection that died without a word (a dropped network
# path sends no reset) is then distrusted within seconds, not at the next reconnect.
PING_SECONDS = 2.0


def driver_dsn(database_url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy `postgresql+asyncpg://` URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def follow(
    database_url: str,
    channel: str,
    watcher: Watcher,
    stop: asyncio.Event,
    *,
    retry_seconds: float = 1.0,
    ping_seconds: float = PING_SECONDS,
) -> None:
    """Keep a connection of its own LISTENing on `channel` until `stop` is set. A lost
    connection (closed, or not answering a ping within `ping_seconds`) makes the watcher stop
    trusting what it caches until it listens again. Never raises: whatever goes wrong is
    logged and the connection made again."""
    dsn = driver_dsn(database_url)
    while not stop.is_set():
        try:
            await _listen(dsn, channel, watcher, stop, ping_seconds)
        except Exception as exc:  # the driver's errors are many; none may end the listening
            log.warning("not listening on %s (%r); retrying", channel, exc)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)


async def _listen(
    dsn: str, channel: str, watcher: Watcher, stop: asyncio.Event, ping_seconds: float
) -> None:
    """One connection's life: listen until `stop`, or until the connection is lost."""
    conn: Any = await asyncpg.connect(
        dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
    )
    lost = asyncio.Event()
    try:
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(channel, lambda *_args: watcher.changed())
        watcher.alive()
        while not stop.is_set() and not lost.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            _done, pending = await asyncio.wait(
                waiters, timeout=ping_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            if not stop.is_set() and not lost.is_set():
                await asyncio.wait_for(conn.fetchval("SELECT 1"), ping_seconds)
                watcher.alive()
    finally:
        watcher.lost()
        try:
            await asyncio.wait_for(conn.close(), 2)
        except Exception:
            conn.terminate()
