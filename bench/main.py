"""The benchmark run: PostgreSQL, seed, SDMS, the floor app, the raw limit, every scenario.

    bench/run [--duration 12] [--warmup 3] [--concurrency 32] [--incidents 100000]
              [--scenario create,get,...] [--soak SECONDS] [--api-seed N] [--no-floor]

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import uvloop

from bench import procs, report, scenarios, seed
from bench.http import Client
from bench.procs import ROOT, Server, Watch
from bench.scenarios import ListTarget, Load
from tests.pg import PostgresServer

WORKERS = 2
QUIET_PERCENT = 15.0  # machine busy (percent of one core) below which a measurement may start
RAW_CONNECTIONS = 2
# Seconds after the measured ones in which the load goes on and perf counts instructions
# (procs.PerfStat: counting during the measured seconds would slow what they measure).
COUNT_SECONDS = 4.0
DEFAULTS = {"duration": 12.0, "warmup": 3.0, "concurrency": 32, "incidents": 100_000}
WORK = ROOT / "bench" / ".work"
MB = 1024 * 1024


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=DEFAULTS["duration"],
                   help="measured seconds per scenario (default 12)")  # fmt: skip
    p.add_argument("--warmup", type=float, default=DEFAULTS["warmup"],
                   help="unmeasured seconds before each measurement (default 3)")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=DEFAULTS["concurrency"],
                   help="connections of the load generator (default 32)")  # fmt: skip
    p.add_argument("--incidents", type=int, default=DEFAULTS["incidents"],
                   help="incidents in the database before the load (default 100000)")  # fmt: skip
    p.add_argument("--api-seed", type=int, default=2000,
                   help="of those, how many are made through SDMS's API (default 2000; the "
                   "rest are cloned in SQL)")  # fmt: skip
    p.add_argument("--scenario", default=",".join(scenarios.SCENARIOS),
                   help=f"comma-separated subset of {','.join(scenarios.SCENARIOS)}")  # fmt: skip
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="instead: run one scenario (the first of --scenario, else create) "
                   "against SDMS for SECONDS and report its RSS at start and end")  # fmt: skip
    p.add_argument("--no-floor", action="store_true",
                   help="measure SDMS only (no floor app, no raw limit)")  # fmt: skip
    p.add_argument("--save", action="store_true",
                   help="save to bench/results/ and update README even with non-default "
                   "settings")  # fmt: skip
    p.add_argument("--quiet-timeout", type=float, default=120.0,
                   help="seconds to wait, before each measurement, for other programs to "
                   "leave the CPUs alone (default 120)")  # fmt: skip
    p.add_argument("--ref", default=None,
                   help="measure SDMS as of this git revision (exported to bench/.work/), "
                   "not the working tree")  # fmt: skip
    p.add_argument("--seed", type=int, default=20261121, help="random seed of the data set")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(scenarios.SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    args.scenarios = [s for s in scenarios.SCENARIOS if s in chosen]
    if args.soak and args.scenario == ",".join(scenarios.SCENARIOS):
        args.scenarios = ["create"]
    args.api_seed = max(1, min(args.api_seed, args.incidents))
    return args


def is_standard(args: argparse.Namespace) -> bool:
    """A run with the issue's settings, whose results are kept in bench/results/."""
    same = all(getattr(args, k) == v for k, v in DEFAULTS.items())
    if args.soak:
        return same and args.soak >= 60
    return same and args.scenarios == list(scenarios.SCENARIOS) and not args.no_floor


# --- machine --------------------------------------------------------------------------------


def machine_info(pg_version: str, sdms: dict[str, Any]) -> dict[str, Any]:
    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError):
        mem_kb = 0
    import fastapi
    import sqlalchemy
    import uvicorn

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "uvicorn": uvicorn.__version__,
        "fastapi": fastapi.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "git_commit": sdms["commit"] or git("rev-parse", "HEAD"),
        "git_dirty": sdms["commit"] is None
        and bool(git("status", "--porcelain", "--", "app", "migrations")),
        "sdms_sources": sdms["sources"],
    }


# --- measuring ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir = WORK / datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pg: PostgresServer | None = None
        self.url = ""
        self.dsn = ""
        self.admin_key = "sdms_bench_" + secrets.token_urlsafe(24)
        self.sdms: Server | None = None
        self.floor: Server | None = None
        self.cast: seed.Cast | None = None
        self.rng = random.Random(args.seed)
        self.tree, self.commit = ROOT, None
        if args.ref:
            self.tree, self.commit = procs.export_tree(args.ref, WORK)

    @property
    def sources(self) -> dict[str, Any]:
        where = f"git {self.args.ref} ({self.commit})" if self.commit else "working tree"
        return {"sources": where, "commit": self.commit}

    # servers ---------------------------------------------------------------------------------

    def start_postgres(self) -> None:
        self.pg = PostgresServer(durable=True).start()
        self.url = self.pg.create_database("sdms_bench")
        self.dsn = self.url.replace("postgresql+asyncpg://", "postgresql://")

    def postmaster_pid(self) -> int:
        assert self.pg is not None
        return self.pg.postmaster_pid()

    def start_sdms(self) -> Server:
        server = procs.sdms_server(
            self.tree, self.url, self.admin_key, WORKERS, self.run_dir / "sdms.log"
        )
        self.sdms = server  # stopped by close() even when it fails to start
        server.start("/readyz")
        return server

    def stop_sdms(self) -> None:
        if self.sdms is not None:
            pid = self.sdms.pid
            self.sdms.stop()
            # `sdms serve` leaves its Prometheus directory behind; it is ours to clean.
            metrics_dir = Path("/tmp") / f"sdms-metrics-{pid}"
            subprocess.run(["rm", "-rf", str(metrics_dir)], check=False)
            self.sdms = None

    def start_floor(self) -> Server:
        server = procs.floor_server(self.dsn, WORKERS, self.run_dir / "floor.log")
        self.floor = server
        server.start("/openapi.json")
        return server

    def close(self) -> None:
        self.stop_sdms()
        if self.floor is not None:
            self.floor.stop()
        if self.pg is not None:
            self.pg.stop()

    # database --------------------------------------------------------------------------------

    async def sql(self, query: str, *params: Any) -> list[Any]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(query, *params))
        finally:
            await conn.close()

    async def pg_stats(self) -> dict[str, int]:
        """The database's counters (sessions opened, commits, rows) from pg_stat_database."""
        rows = await self.sql(
            "SELECT sessions, xact_commit AS commits, xact_rollback AS rollbacks, "
            "tup_fetched AS rows_fetched, tup_inserted AS rows_inserted, "
            "tup_updated AS rows_updated FROM pg_stat_database WHERE datname = current_database()"
        )
        return {k: int(v) for k, v in dict(rows[0]).items()}

    async def checkpoint(self) -> None:
        await self.sql("CHECKPOINT")

    # seeding ---------------------------------------------------------------------------------

    async def seed(self) -> dict[str, Any]:
        assert self.sdms is not None
        args = self.args
        client = Client("127.0.0.1", self.sdms.port, key=self.admin_key, concurrency=32)
        tag = secrets.token_hex(3)
        self.cast = await seed.seed_cast(client, tag)
        await seed.seed_agreements(client, self.cast)
        log(
            "agreements: "
            + ("seeded" if self.cast.agreements_supported else "not served by SDMS yet (404/405)")
        )
        log(f"seeding {args.api_seed:,} incidents through the API ...")
        api_seconds = await seed.seed_incidents_api(client, self.cast, args.api_seed, self.rng)
        client.close()
        log(f"  {args.api_seed / api_seconds:.1f} incidents/s ({api_seconds:.0f} s)")
        cloned = args.incidents - args.api_seed
        clone_seconds = 0.0
        if cloned:
            log(f"cloning {cloned:,} incidents in SQL ...")
            clone_seconds = await seed.clone_incidents_sql(self.dsn, cloned)
            log(f"  {clone_seconds:.0f} s")
        log("VACUUM ANALYZE, CHECKPOINT ...")
        await seed.settle(self.dsn)
        states = await self.sql("SELECT state, count(*) FROM incidents GROUP BY 1 ORDER BY 1")
        counts = await self.sql(
            "SELECT (SELECT count(*) FROM incidents) AS incidents, "
            "(SELECT count(*) FROM journal_entries) AS journal, "
            "(SELECT count(*) FROM change_log) AS change_log, "
            "pg_database_size(current_database()) AS size"
        )
        c = counts[0]
        clocks = await self.sql(
            "SELECT CASE WHEN to_regclass('sla_clocks') IS NULL THEN NULL "
            "ELSE (SELECT count(*) FROM sla_clocks) END AS n"
        )
        log(
            f"database: {c['incidents']:,} incidents, {c['journal']:,} journal entries, "
            f"{c['change_log']:,} change-log rows, "
            + (f"{clocks[0]['n']:,} SLA clocks, " if clocks[0]["n"] is not None else "")
            + f"{c['size'] / MB:.0f} MB"
        )
        return {
            "incidents": c["incidents"],
            "api_incidents": args.api_seed,
            "api_seconds": round(api_seconds, 1),
            "api_incidents_per_s": round(args.api_seed / api_seconds, 1),
            "cloned": cloned,
            "clone_seconds": round(clone_seconds, 1),
            "by_state": {r["state"]: r["count"] for r in states},
            "journal_entries": c["journal"],
            "change_log_rows": c["change_log"],
            "database_mb": round(c["size"] / MB),
            "sla_clocks": clocks[0]["n"],
            "agreements_supported": self.cast.agreements_supported,
            "agreements": len(self.cast.agreements),
            "organizations": len(self.cast.organizations),
        }

    # one measurement -------------------------------------------------------------------------

    async def measure(
        self, name: str, target: str, load: Load, server: Server | None, seconds: float
    ) -> dict[str, Any]:
        args = self.args
        spec_path = self.run_dir / f"{name}-{target}.spec.json"
        out_path = self.run_dir / f"{name}-{target}.result.json"
        count = COUNT_SECONDS
        if server is not None:
            spec_path.write_bytes(
                load.http_spec(server.port, args.concurrency, args.warmup, seconds, count)
            )
            module = "bench.loadgen"
        else:
            spec_path.write_bytes(
                load.raw_spec(self.dsn, RAW_CONNECTIONS, args.warmup, seconds, count)
            )
            module = "bench.raw_limit"
        await self.checkpoint()
        quiet = await self.wait_quiet()
        db_before = await self.pg_stats()
        watch = Watch(server.pid if server is not None else None, self.postmaster_pid()).start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, str(spec_path), str(out_path), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        spread: list[int] = []
        counters: dict[str, procs.PerfStat] = {}
        async for line in proc.stdout:
            phase = line.strip()
            if phase == b"measuring":
                watch.rebase()  # CPU is counted over the measured seconds only
                if server is not None:
                    found = procs.connections_per_process(server.port, server.workers())
                    spread = sorted(found.values(), reverse=True)
            elif phase == b"measured":
                await asyncio.to_thread(watch.stop)
                # perf starts now (every connection is open), its counters off until the
                # load generator's counted seconds, a second later: its start-up is not in
                # them either
                counters = self._count_hardware(server)
            elif phase in (b"counting", b"counted"):
                on = phase == b"counting"
                await asyncio.to_thread(procs.PerfStat.switch, counters.values(), on)
        code = await proc.wait()
        if not watch.stopped_at:
            watch.stop()
        counted = {group: counter.stop() for group, counter in counters.items()}
        if code != 0:
            raise RuntimeError(f"{module} failed for {name}/{target} (exit {code})")
        result: dict[str, Any] = orjson.loads(out_path.read_bytes())
        await asyncio.sleep(1.1)  # backends report their statistics at most once a second
        db_after = await self.pg_stats()
        sent = result["answered_requests"]  # the database counted all of them
        delta = {k: db_after[k] - db_before[k] for k in db_before}
        result["db"] = {
            "sessions_opened": delta.pop("sessions"),
            "per_request": {k: round(v / sent, 2) for k, v in delta.items()} if sent else {},
        }
        cpu = watch.cpu_percent()
        result["cpu_percent"] = cpu
        result["postgres_cpu_percent"] = cpu["postgres"]
        result["foreign_cpu_percent"] = cpu["foreign"]
        result["quiet_before"] = quiet
        # CPU per request: what one request costs, whatever else the machine was doing.
        answered = result["req_s"] * watch.wall
        if answered:
            result["cpu_ms_per_request"] = {
                name: round(1000 * value / answered, 3)
                for name, value in watch.cpu_seconds().items()
            }
        # Counters of seconds that ran out of requests (a load out of targets), or in which
        # requests failed, say nothing of what an answer costs.
        whole = (
            result["counted_requests"]
            and not result["count_exhausted"]
            and not result["count_failed"]
        )
        result["counters"] = {
            group: procs.speed(counts if whole else {}, result["counted_requests"])
            for group, counts in counted.items()
        }
        if server is not None:
            result["server"] = self._server_stats(watch)
            result["server"]["connections_per_worker"] = spread
        cpu_owner = "server" if server is not None else "postgres"
        work = result["counters"].get(cpu_owner) or {}
        lat = result["latency_ms"]
        rss = result.get("server", {}).get("rss_peak_mb")
        log(
            f"  {name:<10} {target:<5} {result['req_s']:>9,.1f}/s  p50 {lat.get('p50', 0):6.1f}  "
            f"p95 {lat.get('p95', 0):6.1f}  p99 {lat.get('p99', 0):6.1f} ms  "
            f"errors {result['errors']}"
            + (f"  RSS {rss:.0f} MB" if rss else "")
            + f"  CPU/req {result.get('cpu_ms_per_request', {}).get(cpu_owner, 0):.2f} ms"
            + (
                f" ({work['minstr_per_request']:.2f} M instr at {work['ghz']:.2f} GHz)"
                if work.get("minstr_per_request") and work.get("ghz")
                else ""
            )
            + f"  new DB sessions {result['db']['sessions_opened']}"
            + (f"  conns/worker {spread}" if spread else "")
            + (
                f"  [other programs: {cpu['foreign']:.0f} %]"
                if cpu["foreign"] > report.FOREIGN_LIMIT
                else ""
            )
            + (
                f"  [kernel threads: {cpu['kernel']:.0f} %]"
                if cpu["kernel"] > report.KERNEL_LIMIT
                else ""
            )
            + ("  (ran out of targets)" if result["exhausted"] else "")
        )
        if result["errors"]:
            for status, sample in result["error_samples"].items():
                log(f"    {status}: {sample[:300]}")
        return result

    def _count_hardware(self, server: Server | None) -> dict[str, procs.PerfStat]:
        """Hardware counters, off until the load generator's counted seconds: the server's
        processes and PostgreSQL's (procs.PerfStat)."""
        counters = {"postgres": procs.PerfStat(procs.descendants(self.postmaster_pid())).start()}
        if server is not None:
            counters["server"] = procs.PerfStat(server.workers()).start()  # the supervisor too
        return counters

    @staticmethod
    def _server_stats(watch: Watch) -> dict[str, Any]:
        samples = watch.samples
        measured = [s for s in samples if s.at >= watch.started_at] or samples
        timeline = []
        next_at = measured[0].at if measured else 0.0
        for s in measured:
            if s.at >= next_at:
                timeline.append((round(s.at - measured[0].at, 1), round(s.rss / MB, 1)))
                next_at += 5.0
        if measured and (not timeline or measured[-1].at - measured[0].at > timeline[-1][0]):
            last = measured[-1]
            timeline.append((round(last.at - measured[0].at, 1), round(last.rss / MB, 1)))
        return {
            "rss_peak_mb": round(max(s.rss for s in samples) / MB, 1) if samples else None,
            "rss_start_mb": round(measured[0].rss / MB, 1) if measured else None,
            "rss_end_mb": round(measured[-1].rss / MB, 1) if measured else None,
            "rss_timeline_mb": timeline,
            "cpu_percent": watch.cpu_percent()["server"],
            "processes": len(procs.descendants(watch.server)) if watch.server else 0,
        }

    async def wait_quiet(self) -> dict[str, Any]:
        """Wait (up to --quiet-timeout s) until other programs leave the machine alone: the
        two cores are shared with whatever else runs here (test suites, builds)."""
        deadline = time.monotonic() + self.args.quiet_timeout
        waited = 0.0
        while True:
            busy = await asyncio.to_thread(procs.machine_busy_percent, 1.0)
            if busy <= QUIET_PERCENT or time.monotonic() >= deadline:
                break
            if waited == 0.0:
                log(f"  machine busy with other work ({busy:.0f} % of a core): waiting ...")
            waited += 1.0
        return {"busy_percent": round(busy, 1), "waited_s": waited}

    # targets ---------------------------------------------------------------------------------

    async def incident_ids(self, count: int) -> list[str]:
        rows = await self.sql("SELECT id FROM incidents ORDER BY random() LIMIT $1", count)
        return [str(r["id"]) for r in rows]

    async def sdms_cursors(self, targets: list[ListTarget]) -> dict[tuple[str, str], str | None]:
        assert self.sdms is not None and self.cast is not None
        client = Client("127.0.0.1", self.sdms.port, key=self.cast.agents[0][1], concurrency=8)
        try:
            return await scenarios.first_page_cursors(client, scenarios.API, targets)
        finally:
            client.close()

    async def floor_cursors(self, targets: list[ListTarget]) -> dict[tuple[str, str], str | None]:
        assert self.floor is not None
        client = Client("127.0.0.1", self.floor.port, concurrency=8)
        try:
            return await scenarios.first_page_cursors(client, "", targets)
        finally:
            client.close()

    async def raw_positions(
        self, targets: list[ListTarget]
    ) -> dict[tuple[str, str], tuple[str, str] | None]:
        positions: dict[tuple[str, str], tuple[str, str] | None] = {}
        for org, state in sorted({(t.org, t.state) for t in targets}):
            rows = await self.sql(
                "SELECT created_at, id FROM incidents WHERE organization_id = $1 AND state = $2 "
                "ORDER BY created_at DESC, id DESC OFFSET 49 LIMIT 1",
                org_uuid(org),
                state,
            )
            positions[(org, state)] = (
                (rows[0]["created_at"].isoformat(), str(rows[0]["id"])) if rows else None
            )
        return positions

    async def new_incidents(self) -> list[str]:
        rows = await self.sql("SELECT id FROM incidents WHERE state = 'new' ORDER BY random()")
        return [str(r["id"]) for r in rows]

    # the scenarios ---------------------------------------------------------------------------

    async def run_scenarios(self) -> dict[str, Any]:
        assert self.cast is not None and self.sdms is not None
        args, cast = self.args, self.cast
        with_refs = not args.no_floor
        results: dict[str, Any] = {}
        get_ids = await self.incident_ids(20_000)
        comment_ids = await self.incident_ids(20_000)
        list_targets = scenarios.list_targets(cast, self.rng)

        async def trio(name: str, loads: scenarios.Loads) -> dict[str, Any]:
            out: dict[str, Any] = {}
            out["sdms"] = await self.measure(name, "sdms", loads.sdms, self.sdms, args.duration)
            if with_refs:
                out["floor"] = await self.measure(
                    name, "floor", loads.floor, self.floor, args.duration
                )
                out["raw"] = await self.measure(name, "raw", loads.raw, None, args.duration)
            return out

        for name in (s for s in scenarios.RUN_ORDER if s in args.scenarios):
            log(f"scenario {name}")
            if name == "create":
                results[name] = await trio(name, scenarios.create_loads(cast, self.rng))
            elif name == "get":
                results[name] = await trio(name, scenarios.get_loads(cast, get_ids))
            elif name == "list":
                sdms_load = scenarios.list_load_sdms(
                    cast, list_targets, await self.sdms_cursors(list_targets)
                )
                floor_load = raw_load = Load(cycle=True)
                if with_refs:
                    floor_load = scenarios.list_load_http(
                        "", list_targets, await self.floor_cursors(list_targets), [{}]
                    )
                    raw_load = scenarios.list_load_raw(
                        list_targets, await self.raw_positions(list_targets)
                    )
                results[name] = await trio(name, scenarios.Loads(sdms_load, floor_load, raw_load))
            elif name == "transition":
                results[name] = await self.transitions()
            elif name == "comment":
                results[name] = await trio(name, scenarios.comment_loads(cast, comment_ids))
            results[name]["verdict"] = report.judge(name, results[name])
        return {name: results[name] for name in scenarios.SCENARIOS if name in results}

    async def transitions(self) -> dict[str, Any]:
        """Each target moves `new` incidents, each once: before each measurement it gets every
        `new` incident left (those moved by the targets before it are no longer `new`)."""
        assert self.cast is not None
        args = self.args
        out: dict[str, Any] = {}
        for target in ("sdms", "floor", "raw") if not args.no_floor else ("sdms",):
            pool = await self.new_incidents()
            log(f"  {len(pool):,} `new` incidents to move")
            if not pool:
                out[target] = None
                out["skipped"] = f"no `new` incidents left for {target}"
                continue
            if target == "sdms":
                load = scenarios.transition_load_sdms(self.cast, pool)
                out[target] = await self.measure("transition", target, load, self.sdms,
                                                  args.duration)  # fmt: skip
            elif target == "floor":
                load = scenarios.transition_load_floor(pool)
                out[target] = await self.measure("transition", target, load, self.floor,
                                                  args.duration)  # fmt: skip
            else:
                load = scenarios.transition_load_raw(pool)
                out[target] = await self.measure("transition", target, load, None, args.duration)
        return out

    async def soak(self) -> dict[str, Any]:
        assert self.cast is not None
        args = self.args
        name = args.scenarios[0]
        log(f"soak: {name} against SDMS for {args.soak:g} s")
        if name == "create":
            load = scenarios.create_loads(self.cast, self.rng).sdms
        elif name == "get":
            load = scenarios.get_loads(self.cast, await self.incident_ids(20_000)).sdms
        elif name == "list":
            targets = scenarios.list_targets(self.cast, self.rng)
            load = scenarios.list_load_http(
                "/api/v1", targets, await self.sdms_cursors(targets),
                [{"Authorization": f"Bearer {k}"} for _i, k in self.cast.agents],
            )  # fmt: skip
        elif name == "transition":
            load = scenarios.transition_load_sdms(self.cast, await self.new_incidents())
        else:
            load = scenarios.comment_loads(self.cast, await self.incident_ids(20_000)).sdms
        result = await self.measure(name, "sdms", load, self.sdms, args.soak)
        server = result["server"]
        growth = (server["rss_end_mb"] - server["rss_start_mb"]) / server["rss_start_mb"]
        return {
            "scenario": name,
            "seconds": args.soak,
            "sdms": result,
            "growth_percent": round(growth * 100, 1),
            "flat": growth <= report.SOAK_MAX_GROWTH,
        }


def org_uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


# --- the run --------------------------------------------------------------------------------


def results_path(args: argparse.Namespace, started: datetime) -> tuple[Path, bool]:
    """Where the results go, and whether they are the kept kind (README updated)."""
    kept = is_standard(args) or args.save
    directory = report.RESULTS if kept else WORK / "results"
    directory.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%d") if kept else started.strftime("%Y-%m-%d-%H%M%S")
    suffix = "-soak" if args.soak else ""
    path = directory / f"{stem}{suffix}.json"
    if not path.exists():
        return path, kept
    # After the highest number of the day, not in a gap: a run not kept leaves one, and a
    # later run filling it would sort among older ones.
    taken = [
        int(number)
        for other in directory.glob(f"{stem}-*{suffix}.json")
        if (number := other.name[len(stem) + 1 : -len(f"{suffix}.json")]).isdigit()
    ]
    return directory / f"{stem}-{max(taken, default=1) + 1}{suffix}.json", kept


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    bench = Bench(args)
    try:
        log(f"PostgreSQL (fsync on) ... logs in {bench.run_dir.relative_to(ROOT)}")
        bench.start_postgres()
        log(f"SDMS from the {bench.sources['sources']}: migrate")
        procs.run_checked(
            procs.sdms_command("migrate"), procs.sdms_env(bench.tree, bench.url), cwd=bench.tree
        )
        pg_version = (await bench.sql("SHOW server_version"))[0][0]
        log(f"sdms serve --workers {WORKERS} (seeding) ...")
        bench.start_sdms()
        seeded = await bench.seed()
        bench.stop_sdms()
        log("restarting SDMS fresh for the measurements")
        bench.start_sdms()
        if not args.no_floor and not args.soak:
            bench.start_floor()
        result: dict[str, Any] = {
            "date": started.strftime("%Y-%m-%d"),
            "started_at": started.isoformat(),
            "command": "bench/run " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "bench/run",
            "settings": {
                "incidents": args.incidents,
                "api_seed": args.api_seed,
                "duration": args.duration,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "workers": WORKERS,
                "raw_connections": RAW_CONNECTIONS,
                "scenarios": args.scenarios,
                "soak": args.soak,
            },
            "machine": machine_info(f"PostgreSQL {pg_version}", bench.sources),
            "seed": seeded,
        }
        if args.soak:
            result["soak"] = await bench.soak()
            flags = report.flags_of("soak", {"sdms": result["soak"]["sdms"]})
            if not result["soak"]["flat"]:
                flags.append("soak: SDMS RSS grew more than the limit")
        else:
            result["scenarios"] = await bench.run_scenarios()
            flags = [f for n, s in result["scenarios"].items() for f in report.flags_of(n, s)]
            flags += report.speed_flags(result["scenarios"])
        if bench.sdms is not None and "Traceback" in bench.sdms.log_tail(2000):
            flags.append(
                f"SDMS logged tracebacks: see {(bench.run_dir / 'sdms.log').relative_to(ROOT)}"
            )
        result["flags"] = flags
    finally:
        bench.close()
    result["total_seconds"] = round(time.monotonic() - t0, 1)
    path, kept = results_path(args, started)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    if args.soak:
        print(report.soak_summary(result))
    else:
        print(report.run_summary(result))
        print(report.table(result))
        print(report.cpu_table(result))
    log(f"results: {path.relative_to(ROOT)}")
    if kept:
        report.update_readme()
        log("bench/README.md tables regenerated")
    else:
        log("non-default settings: not kept in bench/results/ (use --save to keep)")
    return 1 if flags else 0


def main() -> None:
    args = parse_args()
    sys.exit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
