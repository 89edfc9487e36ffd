"""The load generator: a separate process driving one scenario against one HTTP server.

Closed loop, like wrk: `concurrency` keep-alive connections, each sending its next request as
soon as the previous answer arrived. Requests are pre-built by the harness (no DB work here);
with `cycle` they repeat, otherwise each is sent once and the run ends early when they run out
(reported as `exhausted`). Requests started during the warm-up are not recorded.

    python -m bench.loadgen SPEC.json RESULT.json
"""

from __future__ import annotations

import asyncio
import gc
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.http import ConnectionClosed, HttpConnection, build_request

CONNECTION_ERROR = 599  # what a request that got no answer (connection lost) counts as
TIMEOUT = 598  # what a request unanswered after `timeout` seconds counts as (as wrk does)


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
    cycle: bool = spec["cycle"]
    concurrency: int = spec["concurrency"]
    timeout: float = spec.get("timeout", 10.0)
    total = len(requests)
    gc.collect()
    gc.freeze()

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    error_samples: dict[int, str] = {}
    per_second: Counter[int] = Counter()
    cursor = 0
    exhausted = False
    last_finish = 0.0
    warmup_requests = 0

    connections = [await HttpConnection.open(host, port) for _ in range(concurrency)]
    start = time.perf_counter()
    measure_from = start + spec["warmup"]
    measure_until = measure_from + spec["duration"]
    cpu_at_measure: list[float] = []

    async def reopen() -> HttpConnection:
        try:
            return await HttpConnection.open(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            return HttpConnection()  # not connected: its next request fails at once

    async def worker(conn: HttpConnection) -> None:
        nonlocal cursor, exhausted, last_finish, warmup_requests
        while True:
            started = time.perf_counter()
            if started >= measure_until:
                break
            if cursor >= total and not cycle:
                exhausted = True
                break
            raw = requests[cursor % total]
            cursor += 1
            try:
                async with asyncio.timeout(timeout):
                    status, body = await conn.request(raw)
            except ConnectionClosed as exc:
                status, body = CONNECTION_ERROR, str(exc).encode()
                conn = await reopen()
            except TimeoutError:
                status, body = TIMEOUT, f"no answer within {timeout:g} s".encode()
                conn.close()
                conn = await reopen()
            finished = time.perf_counter()
            if started < measure_from:
                warmup_requests += 1
                continue
            if not cpu_at_measure:
                cpu_at_measure.append(cpu_time())
            latencies.append(finished - started)
            statuses[status] += 1
            per_second[int(finished - measure_from)] += 1
            last_finish = max(last_finish, finished)
            if not 200 <= status < 300 and status not in error_samples:
                error_samples[status] = body[:500].decode(errors="replace")
        conn.close()

    async def announce() -> None:
        # The harness starts counting the server's CPU when it reads this line.
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        print("measuring", flush=True)

    await asyncio.gather(announce(), *(worker(c) for c in connections))
    cpu_used = cpu_time() - (cpu_at_measure[0] if cpu_at_measure else cpu_time())
    elapsed = max(last_finish - measure_from, 1e-9)
    count = len(latencies)
    errors = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    seconds = max(per_second) + 1 if per_second else 0
    return {
        "requests": count,
        "elapsed_s": round(elapsed, 3),
        "req_s": round(count / elapsed, 1),
        "latency_ms": percentiles(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "error_samples": {str(k): v for k, v in error_samples.items()},
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
