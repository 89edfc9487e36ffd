"""Results: goals, the printed table, and the README table regenerated from bench/results/.

python -m bench.report            # regenerate bench/README.md from the newest results
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"

# The goals at 2 workers and concurrency 32 (none set for transition and comment).
GOALS: dict[str, dict[str, float]] = {
    "create": {"vs_floor": 0.40, "p99_ms": 50},
    "get": {"vs_floor": 0.50, "p99_ms": 50},
    "list": {"vs_floor": 0.50, "p99_ms": 100},
    "transition": {},
    "comment": {},
}
FOREIGN_LIMIT = 15.0  # other programs' CPU (percent of a core) that flags a measurement
# The kernel's threads' CPU that flags one: the raw limit's thousands of durable commits a
# second keep them at 10-20 %; more is likely another program's I/O.
KERNEL_LIMIT = 30.0
# A server's processes that ran at less than this share of the run's fastest (in GHz: cycles
# per CPU second, procs.PerfStat) flag their measurement: the host lent the CPU elsewhere.
SLOW_SHARE = 0.8
SOAK_MAX_GROWTH = 0.10  # RSS at the end at most 10 % above RSS right after the warm-up

MB = 1024 * 1024


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def judge(name: str, scenario: dict[str, Any]) -> dict[str, Any]:
    """vs_floor, vs_limit and whether the goals are met (None when no goal or no number)."""
    sdms = scenario.get("sdms") or {}
    floor = scenario.get("floor") or {}
    raw = scenario.get("raw") or {}
    vs_floor = ratio(sdms.get("req_s"), floor.get("req_s"))
    vs_limit = ratio(sdms.get("req_s"), raw.get("req_s"))
    # The same ratio from server CPU per request: what vs_floor would be if both were bound
    # by the server's CPU alone; it holds up when other programs share the machine.
    sdms_cpu = (sdms.get("cpu_ms_per_request") or {}).get("server")
    floor_cpu = (floor.get("cpu_ms_per_request") or {}).get("server")
    vs_floor_cpu = ratio(floor_cpu, sdms_cpu)
    goal = GOALS.get(name, {})
    p99 = (sdms.get("latency_ms") or {}).get("p99")
    meets_floor = (
        None if "vs_floor" not in goal or vs_floor is None else vs_floor >= goal["vs_floor"]
    )
    meets_p99 = None if "p99_ms" not in goal or p99 is None else p99 <= goal["p99_ms"]
    return {
        "vs_floor": vs_floor,
        "vs_limit": vs_limit,
        "vs_floor_cpu": vs_floor_cpu,
        "goal": goal,
        "meets_vs_floor": meets_floor,
        "meets_p99": meets_p99,
    }


def flags_of(name: str, scenario: dict[str, Any]) -> list[str]:
    flags = [f"{name}: skipped ({scenario['skipped']})"] if scenario.get("skipped") else []
    for target in ("sdms", "floor", "raw"):
        result = scenario.get(target)
        if not result:
            continue
        if result.get("errors"):
            flags.append(
                f"{name}/{target}: {result['errors']} errors of {result['requests']} "
                f"(statuses {result['statuses']})"
            )
        foreign = result.get("foreign_cpu_percent") or 0.0
        if foreign > FOREIGN_LIMIT:
            flags.append(
                f"{name}/{target}: other programs used {foreign:.0f} % of a core meanwhile"
            )
        kernel = (result.get("cpu_percent") or {}).get("kernel") or 0.0
        if kernel > KERNEL_LIMIT:
            flags.append(
                f"{name}/{target}: the kernel's threads used {kernel:.0f} % of a core meanwhile"
            )
        if result.get("exhausted"):
            flags.append(
                f"{name}/{target}: ran out of targets after {result['elapsed_s']} s "
                f"({result['targets']} prepared)"
            )
    return flags


def speed_flags(scenarios: dict[str, Any]) -> list[str]:
    """Measurements of SDMS or the floor whose server ran slower than `SLOW_SHARE` of the
    run's fastest: their req/s and latencies tell of the machine, not of the code."""
    ghz = {
        (name, target): speed
        for name, scenario in scenarios.items()
        for target in ("sdms", "floor")
        if (speed := (((scenario.get(target) or {}).get("counters") or {}).get("server") or {})
            .get("ghz"))
    }  # fmt: skip
    if not ghz:
        return []
    fastest = max(ghz.values())
    return [
        f"{name}/{target}: the server ran at {speed:.2f} GHz, against {fastest:.2f} at the "
        "run's fastest (a slow moment of the machine)"
        for (name, target), speed in ghz.items()
        if speed < SLOW_SHARE * fastest
    ]


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def table(result: dict[str, Any]) -> str:
    """The markdown table of one run."""
    head = (
        "| scenario | SDMS req/s | p50 ms | p95 ms | p99 ms | errors | SDMS peak RSS MB | "
        "floor req/s | floor p99 ms | raw ops/s | vs_floor (goal) | vs_limit | p99 goal ms | "
        "vs_floor by CPU |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, scenario in result["scenarios"].items():
        sdms = scenario.get("sdms") or {}
        floor = scenario.get("floor") or {}
        raw = scenario.get("raw") or {}
        verdict = scenario.get("verdict") or judge(name, scenario)
        lat = sdms.get("latency_ms") or {}
        goal = verdict["goal"]
        goal_floor = f" (≥ {goal['vs_floor']:.2f})" if "vs_floor" in goal else ""
        goal_p99 = (
            f"≤ {goal['p99_ms']:.0f}{_mark(verdict['meets_p99'])}" if "p99_ms" in goal else "-"
        )
        rss = (sdms.get("server") or {}).get("rss_peak_mb")
        rows.append(
            f"| {name} | {_num(sdms.get('req_s'))} | {_num(lat.get('p50'), 1)} | "
            f"{_num(lat.get('p95'), 1)} | {_num(lat.get('p99'), 1)} | "
            f"{_num(sdms.get('errors'))} | {_num(rss)} | {_num(floor.get('req_s'))} | "
            f"{_num((floor.get('latency_ms') or {}).get('p99'), 1)} | {_num(raw.get('req_s'))} | "
            f"{_num(verdict['vs_floor'], 2)}{goal_floor}{_mark(verdict['meets_vs_floor'])} | "
            f"{_num(verdict['vs_limit'], 3)} | {goal_p99} | "
            f"{_num(verdict.get('vs_floor_cpu'), 2)} |"
        )
    return head + "\n".join(rows) + "\n"


def cpu_table(result: dict[str, Any]) -> str:
    """Where the two cores went during each measurement (percent of one core)."""
    head = (
        "| scenario | target | server | PostgreSQL | load generator | kernel threads | machine "
        "| other programs | server CPU ms/req | PostgreSQL CPU ms/req | server M instr/req "
        "| PostgreSQL M instr/req | GHz server / PostgreSQL | DB commits/req | new DB sessions "
        "| connections per worker |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for name, scenario in result["scenarios"].items():
        for target in ("sdms", "floor", "raw"):
            r = scenario.get(target)
            if not r:
                continue
            cpu = r.get("cpu_percent") or {}
            per = r.get("cpu_ms_per_request") or {}
            db = (r.get("db") or {}).get("per_request") or {}
            spread = (r.get("server") or {}).get("connections_per_worker") or []
            server = cpu.get("server") if target != "raw" else None
            counters = r.get("counters") or {}
            on_server, on_pg = counters.get("server") or {}, counters.get("postgres") or {}
            rows.append(
                f"| {name} | {target} | {_num(server)} | {_num(cpu.get('postgres'))} | "
                f"{_num(cpu.get('harness'))} | {_num(cpu.get('kernel'))} | "
                f"{_num(cpu.get('machine'))} | "
                f"{_num(cpu.get('foreign'))} | "
                f"{_num(per.get('server') if target != 'raw' else None, 2)} | "
                f"{_num(per.get('postgres'), 2)} | "
                f"{_num(on_server.get('minstr_per_request'), 2)} | "
                f"{_num(on_pg.get('minstr_per_request'), 2)} | "
                f"{_num(on_server.get('ghz'), 2)} / {_num(on_pg.get('ghz'), 2)} | "
                f"{_num(db.get('commits'), 2)} | "
                f"{_num((r.get('db') or {}).get('sessions_opened'))} | "
                f"{' / '.join(map(str, spread)) if spread else '-'} |"
            )
    return head + "\n".join(rows) + "\n"


def run_summary(result: dict[str, Any]) -> str:
    s, seed, m = result["settings"], result["seed"], result["machine"]
    lines = [
        f"Run of {result['date']} (`{result['command']}`), commit `{m['git_commit'][:10]}`"
        f"{' (uncommitted changes)' if m.get('git_dirty') else ''}: {m['cpus']} cores "
        f"({m['cpu_model']}), Python {m['python']}, {m['postgres']}; "
        f"{s['workers']} workers, concurrency {s['concurrency']}, "
        f"{s['warmup']:g} s warm-up + {s['duration']:g} s per scenario; "
        f"{seed['incidents']:,} incidents ({seed['api_incidents']:,} through the API in "
        f"{seed['api_seconds']:.0f} s, {seed['cloned']:,} cloned in SQL in "
        f"{seed['clone_seconds']:.0f} s); agreements: "
        f"{'seeded' if seed['agreements_supported'] else 'not in SDMS yet'}. "
        f"Whole run: {result['total_seconds'] / 60:.1f} min.",
    ]
    if result.get("flags"):
        lines.append("")
        lines.append("**Flagged:** " + "; ".join(result["flags"]))
    return "\n".join(lines) + "\n"


def soak_summary(result: dict[str, Any]) -> str:
    soak = result["soak"]
    r = soak["sdms"]
    server = r["server"]
    lat = r.get("latency_ms") or {}
    points = dict(server["rss_timeline_mb"])  # one value per instant
    timeline = ", ".join(f"{t:g} s: {mb:.0f}" for t, mb in points.items())
    verdict = "flat ✓" if soak["flat"] else "GROWING ✗"
    return (
        f"Soak of {result['date']}: `{soak['scenario']}` for {soak['seconds']:g} s "
        f"(commit `{result['machine']['git_commit'][:10]}`): {r['req_s']:,.0f} req/s, "
        f"p99 {lat.get('p99', 0):.1f} ms, {r['errors']} errors. SDMS RSS (MB, master + workers) "
        f"after warm-up {server['rss_start_mb']:.0f}, at the end {server['rss_end_mb']:.0f}, "
        f"peak {server['rss_peak_mb']:.0f}: growth {soak['growth_percent']:+.1f} % "
        f"(limit +{SOAK_MAX_GROWTH * 100:.0f} %) → **{verdict}**.\n\n"
        f"RSS over time (MB): {timeline}\n"
    )


def _replace(text: str, marker: str, body: str) -> str:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return text
    return pattern.sub(lambda _m: f"{begin}\n{body}{end}", text)


def newest(kind: str) -> Path | None:
    """The newest saved results file of a kind: "run", "soak" or "metrics"."""

    def kind_of(path: Path) -> str:
        return next((k for k in ("soak", "metrics") if path.stem.endswith(k)), "run")

    files = sorted(p for p in RESULTS.glob("*.json") if kind_of(p) == kind)
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def update_readme() -> None:
    """Regenerate the README's result sections from the newest files in bench/results/."""
    text = README.read_text()
    run = newest("run")
    if run is not None:
        result = orjson.loads(run.read_bytes())
        body = (
            f"From [`results/{run.name}`](results/{run.name}).\n\n"
            + run_summary(result)
            + "\n"
            + table(result)
            + "\nWhere the time went, over each measurement: CPU in % of one core (the machine "
            'has two: 200 % is all of it; "load generator" is the harness\'s processes, '
            '"kernel threads" the kernel\'s own (durable commits reach the disk through them), '
            '"other programs" what else ran), CPU per request, instructions per request and '
            "the speed the processes ran at (hardware counters), database commits per request "
            "and database connections opened (warm-up included):\n\n" + cpu_table(result)
        )
        text = _replace(text, "results", body)
    soak = newest("soak")
    if soak is not None:
        result = orjson.loads(soak.read_bytes())
        body = f"From [`results/{soak.name}`](results/{soak.name}).\n\n" + soak_summary(result)
        text = _replace(text, "soak", body)
    metrics = newest("metrics")
    if metrics is not None:
        result = orjson.loads(metrics.read_bytes())
        body = f"From [`results/{metrics.name}`](results/{metrics.name}).\n\n" + metrics_table(
            result
        )
        text = _replace(text, "metrics", body)
    README.write_text(text)


def metrics_table(result: dict[str, Any]) -> str:
    """The SLA-metrics benchmark: each report request's time, one request at a time."""
    m, seed = result["machine"], result["seed"]
    lines = [
        f"Run of {result['date']} (`bench/metrics`), commit `{m['git_commit'][:10]}`"
        f"{' (+ uncommitted changes)' if m.get('git_dirty') else ''}: {m['cpus']} cores, "
        f"{m['postgres']}, fsync on; SDMS with {result['settings']['workers']} workers. "
        f"{seed['incidents']:,} incidents with {seed['sla_clocks']:,} SLA clocks "
        f"({seed['database_mb']:,} MB database; {result['settings']['api_seed']:,} made through "
        f"the API, the rest cloned in SQL in {seed['clone_seconds']:.0f} s). Each query asked "
        f"{result['settings']['repeats']} times one after another after one untimed request; "
        "times are the whole HTTP request as the client sees it.",
        "",
        "| request | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    direct = result["direct_sql"]
    for row in [*result["metrics"], *(direct if isinstance(direct, list) else [direct])]:
        name = row["query"]
        if "path" in row:
            name = f"{name}: `GET {row['path'].removeprefix('/api/v1')}`"
        lines.append(f"| {name} | {row['median_ms']:,} | {row['min_ms']:,} | {row['max_ms']:,} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    update_readme()
