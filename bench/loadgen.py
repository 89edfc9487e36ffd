"""The load generator: a separate process driving one scenario against one HTTP server.

Closed loop, like wrk: `concurrency` keep-alive connections, each sending its next request as
soon as the previous answer arrived. Requests are pre-built by the harness (no DB work here);
with `cycle` they repeat, otherwise each is sent once and the run ends early when they run out
(reported as `exhausted`). Requests started during the warm-up are not recorded.

After the measured seconds, with `count` > 0, the load goes on for `count` seconds more, in
which the harness counts the processes' instructions (`perf stat`): counting them costs the
machine, more on a virtual one (a fifth to a third of the requests per second here), so the
measured seconds are not counted. Answers completed in those seconds are reported as
`counted_requests`. The generator prints `measuring`, `measured`, `counting` and `counted` as
each phase starts or ends.

    python -m bench.loadgen SPEC.json RESULT.json
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.http import ConnectionClosed, HttpConnection, build_request

CONNECTION_ERROR = 599  # what a request that got no answer (connection lost) counts as
TIMEOUT = 598  # what a request unanswered after `timeout` seconds counts as (as wrk does)
COUNT_AFTER = 1.0  # seconds between the measured ones and the counted ones (perf starts first)


def percentiles(latencies: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles (and mean, max) of latencies in seconds, as milliseconds."""
    if not latencies:
        return {}
    ordered = sorted(latencies)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(p * n + 0.999999) - 1))] * 1000, 3)

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / n * 1000, 3),
    }


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Measurement:
    """The closed-loop bookkeeping of both load generators (HTTP here, raw asyncpg in
    raw_limit.py), so that they measure alike: which request is next, the warm-up and the
    measured window, latencies, completions per second, the client's CPU, and the result."""

    def __init__(self, spec: dict[str, Any], total: int) -> None:
        self.total = total
        self.cycle: bool = spec["cycle"]
        self.measure_from = time.perf_counter() + spec["warmup"]
        self.measure_until = self.measure_from + spec["duration"]
        count = spec.get("count", 0.0)
        # The harness ends its measured seconds and starts perf, then switches its counters
        # on: a second apart, so that neither overlaps the other.
        self.count_from = self.measure_until + (COUNT_AFTER if count else 0.0)
        self.count_until = self.count_from + count
        self.counted = 0
        self.answered = 0  # in every phase
        self.cursor = 0
        self.exhausted = False
        self.warmup_requests = 0
        self.latencies: list[float] = []
        self.per_second: Counter[int] = Counter()
        self.last_finish = 0.0
        self.cpu_at_start: float | None = None
        self.cpu_at_end: float | None = None  # as the measured seconds end
        self.announced: list[str] = []
        self.count_exhausted = False
        self.count_failed = 0

    def next(self, now: float) -> int | None:
        """The index of the next request to send at `now`, or None when the run is over."""
        if now >= self.count_until:
            return None
        if self.cursor >= self.total and not self.cycle:
            self.exhausted = self.exhausted or now < self.measure_until  # while measured
            return None
        index = self.cursor % self.total
        self.cursor += 1
        return index

    def record(self, started: float, finished: float, ok: bool = True) -> bool:
        """Count a request; False when it was started during the warm-up or after the measured
        seconds (not recorded; counted if it completed while instructions were counted)."""
        self.answered += 1
        if started < self.measure_from:
            self.warmup_requests += 1
            return False
        if started >= self.measure_until:
            if self.count_from <= finished < self.count_until:
                if ok:
                    self.counted += 1
                else:  # a failure costs less than an answer: the counts say nothing then
                    self.count_failed += 1
            return False
        if self.cpu_at_start is None:
            self.cpu_at_start = cpu_time()
        self.latencies.append(finished - started)
        self.per_second[int(finished - self.measure_from)] += 1
        self.last_finish = max(self.last_finish, finished)
        return True

    async def announce(self) -> None:
        # The harness counts the server's CPU from `measuring` to `measured`, and its
        # instructions from `counting` to `counted`.
        phases = [("measuring", self.measure_from), ("measured", self.measure_until)]
        if self.count_until > self.count_from:
            phases += [("counting", self.count_from), ("counted", self.count_until)]
        for line, at in phases:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            if line == "measured":
                self.cpu_at_end = cpu_time()
            print(line, flush=True)
            self.announced.append(line)

    async def drive(self, workers: list[Coroutine[Any, Any, None]]) -> None:
        """Run the workers with the announcements. When the workers stop before the phases
        are over (a load that ran out of targets), the phases end with them: no counted
        seconds of idle processes."""
        announcer = asyncio.ensure_future(self.announce())
        try:
            await asyncio.gather(*workers)
        finally:
            if not announcer.done():
                announcer.cancel()
                if "counting" in self.announced and "counted" not in self.announced:
                    print("counted", flush=True)
                    self.announced.append("counted")
                    self.count_exhausted = True  # ran out while counted: no whole count
            with contextlib.suppress(asyncio.CancelledError):
                await announcer

    def result(self, errors: int, statuses: dict[str, int], error_samples: Any) -> dict[str, Any]:
        now_cpu = self.cpu_at_end if self.cpu_at_end is not None else cpu_time()
        cpu_used = now_cpu - (self.cpu_at_start if self.cpu_at_start is not None else now_cpu)
        elapsed = max(self.last_finish - self.measure_from, 1e-9)
        count = len(self.latencies)
        seconds = max(self.per_second) + 1 if self.per_second else 0
        return {
            "requests": count,
            "elapsed_s": round(elapsed, 3),
            "req_s": round(count / elapsed, 1),
            "latency_ms": percentiles(self.latencies),
            "errors": errors,
            "statuses": statuses,
            "error_samples": error_samples,
            "exhausted": self.exhausted,
            "targets": self.total,
            "warmup_requests": self.warmup_requests,
            "per_second": [self.per_second.get(i, 0) for i in range(seconds)],
            "counted_requests": self.counted,
            "count_exhausted": self.count_exhausted,
            "count_failed": self.count_failed,
            "answered_requests": self.answered,
            "client_cpu_percent": round(100 * cpu_used / elapsed, 1),
        }


def cli(run: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """`python -m bench.<generator> SPEC.json RESULT.json`: run the spec, write the result."""
    spec_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec = orjson.loads(spec_path.read_bytes())
    result = uvloop.run(run(spec))
    result_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    header_sets: list[dict[str, str]] = spec["headers"]
    requests = [
        build_request(
            method,
            path,
            host=f"{host}:{port}",
            headers=header_sets[headers],
            body=body.encode() if body is not None else None,
        )
        for method, path, headers, body in spec["requests"]
    ]
    if not requests:
        raise SystemExit("no requests to send")
    concurrency: int = spec["concurrency"]
    timeout: float = spec.get("timeout", 10.0)
    gc.collect()
    gc.freeze()

    statuses: Counter[int] = Counter()
    error_samples: dict[int, str] = {}
    connections = [await HttpConnection.open(host, port) for _ in range(concurrency)]
    measure = Measurement(spec, len(requests))

    async def reopen() -> HttpConnection:
        try:
            return await HttpConnection.open(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            return HttpConnection()  # not connected: its next request fails at once

    async def worker(conn: HttpConnection) -> None:
        while True:
            started = time.perf_counter()
            index = measure.next(started)
            if index is None:
                break
            try:
                async with asyncio.timeout(timeout):
                    status, body = await conn.request(requests[index])
            except ConnectionClosed as exc:
                status, body = CONNECTION_ERROR, str(exc).encode()
                conn = await reopen()
            except TimeoutError:
                status, body = TIMEOUT, f"no answer within {timeout:g} s".encode()
                conn.close()
                conn = await reopen()
            if not measure.record(started, time.perf_counter(), 200 <= status < 300):
                continue
            statuses[status] += 1
            if not 200 <= status < 300 and status not in error_samples:
                error_samples[status] = body[:500].decode(errors="replace")
        conn.close()

    await measure.drive([worker(c) for c in connections])
    return measure.result(
        errors=sum(n for status, n in statuses.items() if not 200 <= status < 300),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        error_samples={str(k): v for k, v in error_samples.items()},
    )


def main() -> None:
    cli(run)


if __name__ == "__main__":
    main()
