"""The limit: the same operations as raw asyncpg calls, no HTTP, no framework.

`connections` connections (2: one per SDMS worker), each running its next operation as soon as
the previous one finished; every write is its own committed (durable) transaction. The SQL is
the floor app's. Same result shape as the load generator, with ops/s in `req_s`.

    python -m bench.raw_limit SPEC.json RESULT.json
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import uuid_utils.compat as uuid7
import uvloop

from bench.floor_app import COMMENT, CREATE, MOVE, PAGE, PAGE_AFTER
from bench.loadgen import cpu_time, percentiles

GET = "SELECT * FROM incidents WHERE id = $1"


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
    cycle: bool = spec["cycle"]
    total = len(ops)
    connections = [await asyncpg.connect(spec["dsn"]) for _ in range(spec["connections"])]
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    error_samples: dict[str, str] = {}
    warmup_requests = 0
    cursor = 0
    exhausted = False
    last_finish = 0.0
    start = time.perf_counter()
    measure_from = start + spec["warmup"]
    measure_until = measure_from + spec["duration"]
    cpu_at_measure: list[float] = []

    async def worker(conn: Any) -> None:
        nonlocal cursor, exhausted, last_finish, warmup_requests
        while True:
            started = time.perf_counter()
            if started >= measure_until:
                break
            if cursor >= total and not cycle:
                exhausted = True
                break
            call = _operation(conn, ops[cursor % total])
            cursor += 1
            try:
                ok = await call()
            except asyncpg.PostgresError as exc:
                ok = False
                error_samples.setdefault(type(exc).__name__, str(exc)[:500])
            finished = time.perf_counter()
            if started < measure_from:
                warmup_requests += 1
                continue
            if not cpu_at_measure:
                cpu_at_measure.append(cpu_time())
            latencies.append(finished - started)
            outcomes["ok" if ok else "failed"] += 1
            per_second[int(finished - measure_from)] += 1
            last_finish = max(last_finish, finished)

    async def announce() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        print("measuring", flush=True)

    try:
        await asyncio.gather(announce(), *(worker(c) for c in connections))
    finally:
        for conn in connections:
            await conn.close()
    cpu_used = cpu_time() - (cpu_at_measure[0] if cpu_at_measure else cpu_time())
    elapsed = max(last_finish - measure_from, 1e-9)
    count = len(latencies)
    seconds = max(per_second) + 1 if per_second else 0
    return {
        "requests": count,
        "elapsed_s": round(elapsed, 3),
        "req_s": round(count / elapsed, 1),
        "latency_ms": percentiles(latencies),
        "errors": outcomes.get("failed", 0),
        "statuses": dict(outcomes),
        "error_samples": error_samples,
        "exhausted": exhausted,
        "targets": total,
        "warmup_requests": warmup_requests,
        "per_second": [per_second.get(i, 0) for i in range(seconds)],
        "client_cpu_percent": round(100 * cpu_used / elapsed, 1),
    }


def main() -> None:
    spec_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec = orjson.loads(spec_path.read_bytes())
    result = uvloop.run(run(spec))
    result_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
