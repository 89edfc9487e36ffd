"""`GET /slm/metrics` over a million incidents on PostgreSQL.

    bench/metrics [--incidents 1000000] [--api-seed 2000] [--repeats 7]

Starts a throwaway PostgreSQL (fsync on), migrates, starts `sdms serve`, seeds the service
desk of the load benchmark (organizations, agreements, 2,000 incidents through the API, with
their SLA clocks), clones the incidents with their SLA clocks in SQL up to `--incidents`
(journal and change log are not cloned: the metrics do not read them), then times the metrics
requests one after another — the way a report is asked for — and the same aggregate run
directly on the database with asyncpg for comparison. See bench/README.md, "SLA metrics at a
million incidents".
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import uvloop

from bench import procs, seed
from bench.http import Client
from bench.main import WORK, log, machine_info
from bench.procs import ROOT
from tests.pg import PostgresServer

RESULTS = ROOT / "bench" / "results"

# The SQL SDMS's metrics compile to for `group_by=priority` (app/slm/reports.py), spelled out
# so the database's own time for the aggregate is measured beside the API's.
DIRECT_SQL = """
SELECT i.priority, count(*), count(i.resolved_at),
  sum(CASE WHEN r.mode = 'stopped' AND r.breach_at IS NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN r.breach_at < now() THEN 1 ELSE 0 END),
  sum(CASE WHEN s.mode = 'stopped' AND s.breach_at IS NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN s.breach_at < now() THEN 1 ELSE 0 END),
  avg(extract(epoch FROM i.acknowledged_at) - extract(epoch FROM i.opened_at)),
  avg(extract(epoch FROM i.resolved_at) - extract(epoch FROM i.opened_at))
FROM incidents i
LEFT JOIN sla_clocks r ON r.incident_id = i.id AND r.kind = 'response'
LEFT JOIN sla_clocks s ON s.incident_id = i.id AND s.kind = 'resolution'
GROUP BY i.priority ORDER BY i.priority
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/metrics", description=__doc__.split("\n\n")[0])
    p.add_argument("--incidents", type=int, default=1_000_000)
    p.add_argument("--api-seed", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=7, help="timed requests per query")
    p.add_argument("--workers", type=int, default=2, help="SDMS worker processes")
    p.add_argument("--seed", type=int, default=20261121)
    p.add_argument("--save", action="store_true", help="keep results even when not 1,000,000")
    return p.parse_args()


async def timed(client: Client, path: str, headers: dict[str, str] | None, n: int) -> list[float]:
    """Milliseconds of `n` requests one after another (after one untimed request)."""
    raw = client.build("GET", path, headers=headers)
    status, body = await client.raw(raw)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    times = []
    for _ in range(n):
        started = time.perf_counter()
        status, body = await client.raw(raw)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
    }


async def run(args: argparse.Namespace) -> int:
    import random

    started = datetime.now(UTC)
    run_dir = WORK / ("metrics-" + started.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    admin_key = "sdms_bench_" + secrets.token_urlsafe(24)
    pg = PostgresServer(durable=True).start()
    server = None
    try:
        url = pg.create_database("sdms_metrics")
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        log("migrate; sdms serve ...")
        procs.run_checked(procs.sdms_command("migrate"), procs.sdms_env(ROOT, url))
        server = procs.sdms_server(ROOT, url, admin_key, args.workers, run_dir / "sdms.log")
        server.start("/readyz")
        client = Client("127.0.0.1", server.port, key=admin_key, concurrency=32)
        cast = await seed.seed_cast(client, secrets.token_hex(3))
        await seed.seed_agreements(client, cast)
        log(f"seeding {args.api_seed:,} incidents through the API ...")
        api_s = await seed.seed_incidents_api(client, cast, args.api_seed, random.Random(args.seed))
        cloned = args.incidents - args.api_seed
        log(f"cloning {cloned:,} incidents with their SLA clocks in SQL ...")
        clone_s = await seed.clone_incidents_sql(dsn, cloned, children=("sla_clocks",))
        log(f"  {clone_s:.0f} s; VACUUM ANALYZE, CHECKPOINT ...")
        await seed.settle(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            counts = dict(
                await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM incidents) AS incidents, "
                    "(SELECT count(*) FROM sla_clocks) AS sla_clocks, "
                    "pg_database_size(current_database()) AS size"
                )
            )
            pg_version = await conn.fetchval("SHOW server_version")
            # The aggregate straight on the database, as PostgreSQL runs it by default (JIT
            # on) and as SDMS's connections run it (JIT off: app/core/db.py).
            direct: dict[str, list[float]] = {}
            for jit in ("on", "off"):
                await conn.execute(f"SET jit = {jit}")
                await conn.fetch(DIRECT_SQL)
                times = direct[jit] = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    await conn.fetch(DIRECT_SQL)
                    times.append((time.perf_counter() - t) * 1000)
            largest = cast.organizations[0]["id"]
            share = await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE organization_id = $1",
                seed_uuid(largest),
            )
        finally:
            await conn.close()
        log(f"{counts['incidents']:,} incidents, {counts['sla_clocks']:,} clocks; timing ...")
        month_ago = (started - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        customer = client.as_key(cast.customer_keys[0])
        csv = {"Accept": "text/csv"}
        queries: list[tuple[str, Client, str, dict[str, str] | None]] = [
            ("staff: all, by priority", client, "/api/v1/slm/metrics?group_by=priority", None),
            (
                "staff: all, by organization",
                client,
                "/api/v1/slm/metrics?group_by=organization",
                None,
            ),
            ("staff: all, by service, CSV", client, "/api/v1/slm/metrics?group_by=service", csv),
            (
                "staff: opened in the last 30 days, by priority",
                client,
                f"/api/v1/slm/metrics?group_by=priority&from={month_ago}",
                None,
            ),
            (
                f"customer of the largest organization ({share:,} incidents), by priority",
                customer,
                "/api/v1/slm/metrics?group_by=priority",
                None,
            ),
        ]
        results = []
        for name, who, query_path, headers in queries:
            times = await timed(who, query_path, headers, args.repeats)
            row = {"query": name, "path": query_path, **summary(times)}
            results.append(row)
            log(
                f"  {name}: median {row['median_ms']} ms (min {row['min_ms']}, max {row['max_ms']})"
            )
        client.close()
        direct_rows = [
            {"query": f"the same aggregate as the first, asyncpg direct, JIT {jit}", **summary(t)}
            for jit, t in direct.items()
        ]
        for row in direct_rows:
            log(f"  {row['query']}: median {row['median_ms']} ms")
        result = {
            "date": started.strftime("%Y-%m-%d"),
            "started_at": started.isoformat(),
            "settings": {
                "incidents": args.incidents,
                "api_seed": args.api_seed,
                "repeats": args.repeats,
                "workers": args.workers,
            },
            "machine": machine_info(
                f"PostgreSQL {pg_version}", {"sources": "working tree", "commit": None}
            ),
            "seed": {
                "api_seconds": round(api_s, 1),
                "clone_seconds": round(clone_s, 1),
                "incidents": counts["incidents"],
                "sla_clocks": counts["sla_clocks"],
                "database_mb": round(counts["size"] / 1024 / 1024),
            },
            "metrics": results,
            "direct_sql": direct_rows,
        }
    finally:
        if server is not None:
            pid = server.pid
            server.stop()
            # `sdms serve` leaves its Prometheus directory behind; it is ours to clean.
            shutil.rmtree(f"/tmp/sdms-metrics-{pid}", ignore_errors=True)
        pg.stop()
    kept = args.incidents == 1_000_000 or args.save
    directory = RESULTS if kept else WORK / "results"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result['date']}-metrics.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    log(f"results: {path.relative_to(ROOT)}")
    if kept:
        from bench import report

        report.update_readme()
        log("bench/README.md tables regenerated")
    return 0


def seed_uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


def main() -> None:
    raise SystemExit(uvloop.run(run(parse_args())))


if __name__ == "__main__":
    main()
