"""Who holds an API key, cached per process while PostgreSQL tells us of every change.

Every request is authenticated; reading the key's user from the database was one round trip
per request (bench/README.md). The answer is kept in memory, keyed by the key's hash, but only
while this process is LISTENing to `AUTH_CHANNEL`: triggers on `users` and `api_keys`
(migration 0005) notify every listener of any change to either table, from any process, any
host or by hand, and the cache then forgets everything. So a revoked key, a disabled user or a
changed role counts from the next request on, in every worker:

- in the worker that made the change at once (the identity router calls `forget` after its
  commit, before it answers);
- in the others as soon as the notification arrives, which PostgreSQL sends when the change
  commits: in practice before the client that made the change has its answer, but that is
  not guaranteed (another worker's event loop may take a request before the notification).
  Where the very next request must be refused everywhere, set `SDMS_AUTH_CACHE_SECONDS=0`.

When the listening connection is lost, or has not answered its pings for a few seconds,
nothing is answered from the cache until it listens again (and it starts empty). Entries also
expire after `SDMS_AUTH_CACHE_SECONDS`, a bound even if a notification were lost. Unknown keys
are never cached. SQLite has no notifications: there, every request reads the key.
Notifications need a session-level connection to PostgreSQL: behind a pooler in transaction
mode (pgbouncer), LISTEN does not work; set `SDMS_AUTH_CACHE_SECONDS=0` there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.core.auth import Principal
from app.core.notify import PING_SECONDS

AUTH_CHANNEL = "sdms_auth"
MAX_ENTRIES = 10_000
# Trusted for this long after the listening connection was last seen working: a few of its
# pings (app/core/notify.py), so a connection that died silently is distrusted within seconds.
ALIVE_SECONDS = 3 * PING_SECONDS


class PrincipalCache:
    def __init__(
        self, ttl_seconds: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self._monotonic = monotonic
        self._entries: dict[str, tuple[Principal, float]] = {}
        # Until when the listening connection counts as working (0: not listening).
        self._alive_until = 0.0
        # Bumped whenever entries may have gone stale: a read of the database that began before
        # a bump is not stored after it.
        self.generation = 0

    @property
    def live(self) -> bool:
        """Listening, and the listening connection was seen working moments ago."""
        return self.ttl > 0 and self._monotonic() < self._alive_until

    def get(self, key_hash: str) -> Principal | None:
        if not self.live:
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        principal, expires = entry
        if self._monotonic() >= expires:
            del self._entries[key_hash]
            return None
        return principal

    def put(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Keep what the database answered, unless something changed since it was asked
        (`generation` is the one read before asking)."""
        if not self.live or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = (principal, self._monotonic() + self.ttl)

    def forget(self) -> None:
        self._entries.clear()
        self.generation += 1

    # app.core.notify.Watcher
    def alive(self) -> None:
        now = self._monotonic()
        if now >= self._alive_until:  # not trusted until now: notifications may have been missed
            self.forget()
        self._alive_until = now + ALIVE_SECONDS

    def lost(self) -> None:
        self.forget()
        self._alive_until = 0.0

    def changed(self) -> None:
        self.forget()
