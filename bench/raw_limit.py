"""The limit: the same operations as raw asyncpg calls, no HTTP, no framework.

`connections` connections (2: one per SDMS worker), each running its next operation as soon as
the previous one finished; every write is its own committed (durable) transaction. The SQL is
the floor app's. Same result shape as the load generator, with ops/s in `req_s`.

    python -m bench.raw_limit SPEC.json RESULT.json
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import uuid_utils.compat as uuid7

from bench.floor_app import COMMENT, CREATE, MOVE, PAGE, PAGE_AFTER, RECORD
from bench.loadgen import Measurement, cli

GET = f"SELECT {RECORD} FROM incidents WHERE id = $1"


def _operation(conn: Any, op: list[Any]) -> Callable[[], Awaitable[bool]]:
    """A prepared call for one operation; it answers whether the operation succeeded."""
    kind = op[0]
    if kind == "get":
        ident = uuid.UUID(op[1])

        async def get() -> bool:
            return await conn.fetchrow(GET, ident) is not None

        return get
    if kind == "list":
        org, state = uuid.UUID(op[1]), op[2]
        after = datetime.fromisoformat(op[3]) if op[3] else None
        last = uuid.UUID(op[4]) if op[4] else None

        async def page() -> bool:
            if after is None:
                await conn.fetch(PAGE, org, state, 51)
            else:
                await conn.fetch(PAGE_AFTER, org, state, 51, after, last)
            return True

        return page
    if kind == "create":
        org, title, description, impact, urgency, channel = op[1:]
        org = uuid.UUID(org)

        async def create() -> bool:
            row = await conn.fetchrow(
                CREATE, uuid7.uuid7(), title, description, org, channel, impact, urgency,
                impact + urgency - 1,
            )  # fmt: skip
            return row is not None

        return create
    if kind == "transition":
        ident = uuid.UUID(op[1])

        async def move() -> bool:
            return await conn.fetchrow(MOVE, ident) is not None

        return move
    if kind == "comment":
        ident, body = uuid.UUID(op[1]), op[2]

        async def comment() -> bool:
            return await conn.fetchrow(COMMENT, uuid7.uuid7(), ident, body) is not None

        return comment
    raise ValueError(f"unknown operation {kind}")


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    ops: list[list[Any]] = spec["ops"]
    connections = [await asyncpg.connect(spec["dsn"]) for _ in range(spec["connections"])]
    outcomes: Counter[str] = Counter()
    error_samples: dict[str, str] = {}
    measure = Measurement(spec, len(ops))

    async def worker(conn: Any) -> None:
        while True:
            started = time.perf_counter()
            index = measure.next(started)
            if index is None:
                break
            call = _operation(conn, ops[index])
            try:
                ok = await call()
            except asyncpg.PostgresError as exc:
                ok = False
                error_samples.setdefault(type(exc).__name__, str(exc)[:500])
            if measure.record(started, time.perf_counter(), ok):
                outcomes["ok" if ok else "failed"] += 1

    try:
        await measure.drive([worker(c) for c in connections])
    finally:
        for conn in connections:
            await conn.close()
    return measure.result(
        errors=outcomes.get("failed", 0), statuses=dict(outcomes), error_samples=error_samples
    )


def main() -> None:
    cli(run)


if __name__ == "__main__":
    main()
