"""Compare revisions of SDMS by the instructions they spend per request (bench/README.md).

Req/s and CPU time move by up to 20 % between back-to-back runs on a shared machine; counted
instructions do not. This serves each revision with one worker on the same seeded database,
in turns (A B A B ...), drives one scenario of the benchmark at it, and counts the
instructions of the server process and of PostgreSQL with `perf stat` in as many seconds
again after the measured ones (counting slows what it counts: procs.PerfStat):

    bench/compare HEAD~1 HEAD --scenario list
    bench/compare HEAD WORK --scenario create --rounds 3 --spy   # WORK: the working tree

`--spy` also records each measurement with py-spy (`py-spy record --format raw`) into
bench/.work/compare-*/ (py-spy is not a dependency: it is used if it is on the PATH).

`--tail` compares latency under the benchmark's own settings instead: 2 workers, concurrency
32, durable commits (fsync on), 12 s per measurement, each after VACUUM and CHECKPOINT.
Turns of the same code on this machine differ by ±5 ms at p99, so a p99 question needs
several rounds of interleaved turns:

    bench/compare HEAD WORK --scenario create --tail --rounds 4

Every revision runs on the working tree's schema: its migrations are copied into each exported
revision, so compare revisions whose code runs on the newest schema.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import uvloop

from bench import procs, scenarios, seed
from bench.http import Client
from tests.pg import PostgresServer

ROOT = procs.ROOT
WORK = ROOT / "bench" / ".work"
SCENARIOS = ("create", "get", "list", "comment")
CONCURRENCY, WORKERS = 16, 1
WARMUP, DURATION = 2.0, 10.0
TAIL = {"concurrency": 32, "workers": 2, "warmup": 3.0, "duration": 12.0}  # as bench/run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/compare", description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions; WORK for the working tree")
    parser.add_argument("--scenario", choices=SCENARIOS, default="list")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every revision")
    parser.add_argument("--incidents", type=int, default=20000, help="incidents seeded")
    parser.add_argument("--spy", action="store_true", help="also record with py-spy")
    parser.add_argument(
        "--tail",
        action="store_true",
        help="latency as bench/run measures it: 2 workers, concurrency 32, durable commits",
    )
    args = parser.parse_args(argv)
    args.concurrency, args.workers, args.warmup, args.duration = (
        (TAIL["concurrency"], TAIL["workers"], TAIL["warmup"], TAIL["duration"])
        if args.tail
        else (CONCURRENCY, WORKERS, WARMUP, DURATION)
    )
    return args


def tree_of(revision: str, run_dir: Path) -> tuple[Path, str]:
    if revision == "WORK":
        return ROOT, "working tree"
    tree, commit = procs.export_tree(revision, WORK)
    migrations = tree / "migrations" / "versions"
    for newer in (ROOT / "migrations" / "versions").glob("*.py"):
        if not (migrations / newer.name).exists():
            shutil.copy(newer, migrations / newer.name)
    return tree, commit[:10]


class Comparison:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir = WORK / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.key = "sdms_bench_" + secrets.token_urlsafe(24)
        self.pg = PostgresServer(durable=args.tail).start()
        self.url = self.pg.create_database("sdms_compare")
        self.dsn = self.url.replace("postgresql+asyncpg://", "postgresql://")

    def close(self) -> None:
        self.pg.stop()

    def prepare(self) -> scenarios.Load:
        """Migrate, seed with the working tree's SDMS, and build the scenario's requests."""
        env = procs.sdms_env(ROOT, self.url, self.key)
        procs.run_checked(procs.sdms_command("migrate"), env)
        server = procs.sdms_server(ROOT, self.url, self.key, 2, self.run_dir / "seed.log")
        server.start("/readyz")
        try:
            return uvloop.run(self._seed(server.port))
        finally:
            server.stop()

    async def _seed(self, port: int) -> scenarios.Load:
        client = Client("127.0.0.1", port, key=self.key, concurrency=32)
        try:
            cast = await seed.seed_cast(client, "cmp")
            await seed.seed_agreements(client, cast)  # as bench/run does: incidents get clocks
            await seed.seed_incidents_api(client, cast, 300, random.Random(1))
            await seed.clone_incidents_sql(self.dsn, self.args.incidents)
            await seed.settle(self.dsn)
            return await self._load(client, cast)
        finally:
            client.close()

    async def _load(self, client: Client, cast: seed.Cast) -> scenarios.Load:
        """The scenario's requests to SDMS, on the seeded rows."""
        name = self.args.scenario
        if name == "create":
            return scenarios.create_loads(cast, random.Random(2)).sdms
        if name == "list":
            targets = scenarios.list_targets(cast, random.Random(3))
            agent = client.as_key(cast.agents[0][1])
            cursors = await scenarios.first_page_cursors(agent, scenarios.API, targets)
            return scenarios.list_load_sdms(cast, targets, cursors)
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT id FROM incidents ORDER BY random() LIMIT 5000")
        finally:
            await conn.close()
        ids = [str(r["id"]) for r in rows]
        if name == "get":
            return scenarios.get_loads(cast, ids).sdms
        return scenarios.comment_loads(cast, ids).sdms

    def measure(self, label: str, tree: Path, load: scenarios.Load, n: int) -> dict[str, Any]:
        if self.args.tail:
            # As bench/run: each turn starts from a vacuumed, checkpointed database, not in
            # the middle of the previous turn's autovacuum of its new rows.
            uvloop.run(seed.settle(self.dsn))
        port = procs.free_port()
        env = procs.sdms_env(tree, self.url, self.key)
        env["SDMS_EMBEDDED_WORKER"] = "false"
        log = self.run_dir / f"{label}-{n}.log"
        workers = str(self.args.workers)
        command = [sys.executable, "-m", "app", "serve", "--workers", workers, "--port", str(port)]
        server = procs.Server(label, command, env, port, log, cwd=tree)
        server.start("/readyz")
        try:
            spec = self.run_dir / f"{label}-{n}.spec.json"
            result = self.run_dir / f"{label}-{n}.result.json"
            warmup, duration = self.args.warmup, self.args.duration
            # Instructions are counted in seconds of their own after the measured ones:
            # counting slows what it counts (procs.PerfStat).
            count = duration
            spec.write_bytes(load.http_spec(port, self.args.concurrency, warmup, duration, count))
            pids = server.workers()  # the supervisor too
            loadgen = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", str(spec), str(result)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
            )
            assert loadgen.stdout is not None
            counters: list[procs.PerfStat] = []
            spy = None
            cpu: dict[str, Any] = {}
            try:
                for line in loadgen.stdout:
                    phase = line.strip()
                    if phase == b"measuring":
                        cpu["server"] = sum(procs.cpu_seconds(pids).values())
                        cpu["pg_pids"] = procs.descendants(self.pg.postmaster_pid())
                        cpu["postgres"] = procs.cpu_seconds(cpu["pg_pids"])
                        if self.args.spy and shutil.which("py-spy"):
                            raw = self.run_dir / f"{label}-{n}.raw"
                            spy = subprocess.Popen(
                                ["py-spy", "record", "--pid", str(server.pid),
                                 "--duration", str(int(duration)), "--rate", "400", "--format",
                                 "raw", "--output", str(raw), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            )  # fmt: skip
                    elif phase == b"measured":
                        server_cpu = sum(procs.cpu_seconds(pids).values()) - cpu["server"]
                        pg_after = procs.cpu_seconds(cpu["pg_pids"])
                        pg_before = cpu["postgres"]
                        pg_cpu = sum(pg_after[p] - pg_before[p] for p in pg_after if p in pg_before)
                        # PostgreSQL's processes as they are now: perf stops at a gone one
                        pg_now = procs.descendants(self.pg.postmaster_pid())
                        counters = [procs.PerfStat(pids).start(), procs.PerfStat(pg_now).start()]
                    elif phase in (b"counting", b"counted"):
                        procs.PerfStat.switch(counters, phase == b"counting")
                code = loadgen.wait(timeout=120)
                if code != 0 or not counters:
                    raise RuntimeError(f"the load generator failed (exit {code}); see {log}")
                server_instructions, pg_instructions = (
                    counter.stop().get("instructions") for counter in counters
                )
                if spy is not None:
                    spy.wait(timeout=60)
            finally:
                for counter in counters:
                    counter.stop()  # again: nothing if stopped
                for helper in (loadgen, spy):
                    if helper is not None and helper.poll() is None:
                        helper.kill()
                        helper.wait()
            measured = orjson.loads(result.read_bytes())
        finally:
            server.stop()

        def per_request(total: float | None, requests: int, scale: float) -> float | None:
            return None if total is None or not requests else round(total / requests / scale, 3)

        served, counted = measured["requests"], measured["counted_requests"]
        return {
            "revision": label,
            "req_s": measured["req_s"],
            "errors": measured["errors"],
            "server_cpu_ms": per_request(server_cpu * 1000, served, 1),
            "postgres_cpu_ms": per_request(pg_cpu * 1000, served, 1),
            "server_minstr": per_request(server_instructions, counted, 1e6),
            "postgres_minstr": per_request(pg_instructions, counted, 1e6),
            **{p: measured["latency_ms"][p] for p in ("p50", "p95", "p99")},
        }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    comparison = Comparison(args)
    try:
        trees = {rev: tree_of(rev, comparison.run_dir) for rev in args.revisions}
        load = comparison.prepare()
        print(
            f"{args.scenario}, {args.workers} worker(s), concurrency {args.concurrency}, "
            f"{args.duration:.0f} s each, {'durable' if args.tail else 'fsync off'}"
        )
        print(
            "revision                 req/s  errors  CPU ms/req: server     PG"
            "  M instr/req: server     PG   p50 ms  p95 ms  p99 ms"
        )
        for n in range(args.rounds):
            for rev, (tree, commit) in trees.items():
                r = comparison.measure(rev.replace("/", "_"), tree, load, n)
                print(
                    f"{rev[:12]:<12} {commit[:10]:<10} {r['req_s']:>7.1f} {r['errors']:>6} "
                    f"{r['server_cpu_ms']!s:>19} {r['postgres_cpu_ms']!s:>6} "
                    f"{r['server_minstr']!s:>21} {r['postgres_minstr']!s:>6} "
                    f"{r['p50']:>8.1f} {r['p95']:>7.1f} {r['p99']:>7.1f}",
                    flush=True,
                )
    finally:
        comparison.close()


if __name__ == "__main__":
    main()
