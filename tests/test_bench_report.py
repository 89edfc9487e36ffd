"""The benchmark harness: its report flags measurements taken while the machine ran slow, and
it leaves no server behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import procs, report


def _scenario(sdms_ghz: float | None, floor_ghz: float | None) -> dict[str, Any]:
    def measured(ghz: float | None) -> dict[str, Any]:
        return {"counters": {"server": {"ghz": ghz}, "postgres": {"ghz": 1.0}}}

    return {"sdms": measured(sdms_ghz), "floor": measured(floor_ghz), "raw": measured(None)}


def test_a_server_slower_than_most_of_the_runs_fastest_is_flagged() -> None:
    flags = report.speed_flags(
        {"get": _scenario(2.5, 2.4), "list": _scenario(1.9, 2.45), "create": _scenario(2.1, 2.0)}
    )
    assert flags == [
        "list/sdms: the server ran at 1.90 GHz, against 2.50 at the run's fastest "
        "(a slow moment of the machine)"
    ]


def test_no_counters_no_flags() -> None:
    assert report.speed_flags({"get": _scenario(None, None)}) == []


def test_speed_per_request_from_the_counts() -> None:
    counts = {"instructions": 2.4e9, "cycles": 1.2e9, "task-clock": 600.0}
    assert procs.speed(counts, 1000) == {"minstr_per_request": 2.4, "ghz": 2.0, "ipc": 2.0}
    assert procs.speed({}, 1000) == {"minstr_per_request": None, "ghz": None, "ipc": None}


def test_a_server_that_never_gets_ready_is_not_left_running(tmp_path: Path) -> None:
    # bench/compare once left such a server running for the rest of the session (a revision
    # whose schema was not the database's), where it took CPU from the runs after it.
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    server = procs.Server("never", command, {}, procs.free_port(), tmp_path / "never.log")
    try:
        with pytest.raises(RuntimeError, match="did not answer /readyz"):
            server.start("/readyz", timeout=0.5)
        assert server.proc is not None and server.proc.poll() is not None
    finally:
        server.stop()  # this test's own failure leaves nothing behind either


def test_the_workers_of_a_server_that_exited_are_stopped_too(tmp_path: Path) -> None:
    # The server's own process ends at once and leaves a "worker" behind in its group.
    pid_file = tmp_path / "worker.pid"
    code = (
        "import subprocess, sys; "
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(w.pid)); sys.exit(3)"
    )
    server = procs.Server(
        "early", [sys.executable, "-c", code], {}, procs.free_port(), tmp_path / "e.log"
    )
    try:
        with pytest.raises(RuntimeError, match="exited with 3"):
            server.start("/readyz", timeout=10)
        worker = int(pid_file.read_text())
        for _ in range(100):  # it is not our child: it is gone when /proc no longer has it
            fields = procs.read_stat_fields(worker)
            if fields is None or fields[0] == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the worker {worker} still runs")
    finally:
        with contextlib.suppress(Exception):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_proc_stat_line_is_read_by_its_fields() -> None:
    # A command name may hold spaces and parentheses; 0x208040 is kthreadd's flags here.
    line = "2 (odd) (name) S 7 0 0 0 -1 2129984 0 0 0 0 5 3 0 0 20 0 1 0 13 0 0"
    assert procs.Proc.of(procs.stat_fields(line)) == procs.Proc(ppid=7, ticks=8, kernel=True)
    line = "4242 (python3) R 1 4242 4242 0 -1 4194560 0 0 0 0 120 30 0 0 20 0 1 0 9 0 0"
    assert procs.Proc.of(procs.stat_fields(line)) == procs.Proc(ppid=1, ticks=150, kernel=False)


def _shows_kernel_threads() -> bool:
    """Whether this machine's /proc shows the kernel's threads (a container's may not)."""
    try:
        return Path("/proc/2/comm").read_text().strip() == "kthreadd"
    except OSError:
        return False


def test_kernel_threads_are_told_from_processes() -> None:
    table = procs.process_table()
    assert not table[os.getpid()].kernel
    assert table[os.getpid()].ppid == os.getppid()
    if _shows_kernel_threads():
        assert table[2].kernel


def test_the_kernels_threads_are_counted_apart() -> None:
    watch = procs.Watch(server=None, postgres=os.getpid()).start()
    watch.stop()
    assert set(watch.cpu_percent()) == {
        "server", "postgres", "harness", "kernel", "machine", "foreign"
    }  # fmt: skip
    counted = set(watch.cpu["kernel"].last)
    assert os.getpid() not in counted
    assert os.getpid() in watch.cpu["postgres"].last
    if _shows_kernel_threads():
        assert 2 in counted
        now = (procs.read_stat_fields(pid) for pid in counted)
        assert all(procs.Proc.of(fields).kernel for fields in now if fields is not None)


def test_the_kernels_threads_are_not_other_programs() -> None:
    # A write scenario's raw limit keeps the kernel's threads busy with its commits: that is
    # not another program disturbing the measurement.
    watch = procs.Watch(server=None, postgres=-1)
    seconds = {"server": 0, "postgres": 80, "harness": 40, "kernel": 15}
    for name, used in seconds.items():
        group = watch.cpu[name] = procs.CpuGroup()
        group.first, group.last = {1: 0}, {1: used * procs.CLOCK_TICKS // 100}
    watch.started_at, watch.stopped_at = 0.0, 1.0
    watch.machine_start, watch.machine_end = 0, 140 * procs.CLOCK_TICKS // 100
    assert watch.cpu_percent() == {
        "server": 0.0,
        "postgres": 80.0,
        "harness": 40.0,
        "kernel": 15.0,
        "machine": 140.0,
        "foreign": 5.0,
    }


def test_busy_kernel_threads_flag_a_measurement() -> None:
    def measured(kernel: float) -> dict[str, Any]:
        return {"cpu_percent": {"kernel": kernel}, "foreign_cpu_percent": 2.0}

    scenario = {"sdms": measured(4.0), "floor": measured(45.0), "raw": measured(16.0)}
    assert report.flags_of("create", scenario) == [
        "create/floor: the kernel's threads used 45 % of a core meanwhile"
    ]


def test_a_kept_run_is_numbered_after_the_days_highest_not_in_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from bench import main

    monkeypatch.setattr(report, "RESULTS", tmp_path)
    started = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
    args = main.parse_args([])
    assert main.results_path(args, started) == (tmp_path / "2026-11-22.json", True)
    for name in (
        "2026-11-22.json",
        "2026-11-22-2.json",
        "2026-11-22-4.json",
        "2026-11-22-soak.json",
    ):
        (tmp_path / name).write_text("{}")
    assert main.results_path(args, started) == (tmp_path / "2026-11-22-5.json", True)


def test_the_load_generator_counts_instructions_apart_from_the_measured_seconds() -> None:
    """perf counts in seconds of their own after the measured ones (counting slows what it
    counts): answers there are counted for it, not measured; the database sees them all."""
    from bench.loadgen import COUNT_AFTER, Measurement

    measure = Measurement({"cycle": True, "warmup": 0.0, "duration": 10.0, "count": 4.0}, 1)
    start = measure.measure_from
    assert (measure.count_from, measure.count_until) == (
        start + 10 + COUNT_AFTER,
        start + 14 + COUNT_AFTER,
    )
    assert not measure.record(start - 1, start - 0.5)  # warm-up
    assert measure.record(start + 1, start + 1.03)  # measured
    assert measure.record(start + 9.99, start + 10.02)  # measured: by when it started
    assert not measure.record(start + 10.1, start + 10.2)  # before the counters are on
    assert not measure.record(start + 11.2, start + 11.25)  # counted
    assert not measure.record(start + 11.3, start + 11.31, ok=False)  # failed while counted
    assert not measure.record(start + 14.9, start + 15.1)  # after they are off
    assert (len(measure.latencies), measure.warmup_requests, measure.counted) == (2, 1, 1)
    assert (measure.answered, measure.count_failed) == (7, 1)
    assert measure.next(start + 13.99 + COUNT_AFTER) == 0
    assert measure.next(measure.count_until) is None
