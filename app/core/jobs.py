"""Background jobs: each is a function of (database, settings, now) that does a bounded batch
of due work and says how much it did. The runner calls them in turn, again right away while
they find work, otherwise every `SDMS_WORKER_INTERVAL_SECONDS`.

Jobs select their due rows through indexes and lock them with `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several workers (processes) may run at once and each row is handled once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from app.core.clock import Clock
from app.core.config import Settings
from app.core.db import Database

log = logging.getLogger("sdms.jobs")

JobFn = Callable[[Database, Settings, datetime], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    run: JobFn


async def run_once(
    jobs: Sequence[Job], db: Database, settings: Settings, clock: Clock
) -> dict[str, int]:
    """Run every job once; a failing job is logged and does not stop the others."""
    done: dict[str, int] = {}
    for job in jobs:
        try:
            done[job.name] = await job.run(db, settings, clock.now())
        except Exception:
            log.exception("job %s failed", job.name)
            done[job.name] = 0
    return done


async def run_forever(
    jobs: Sequence[Job],
    db: Database,
    settings: Settings,
    clock: Clock,
    stop: asyncio.Event | None = None,
) -> None:
    stop = stop or asyncio.Event()
    while not stop.is_set():
        done = await run_once(jobs, db, settings, clock)
        if any(done.values()):
            log.debug("jobs did %s", done)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.worker_interval_seconds)
