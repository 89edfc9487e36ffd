"""The benchmark harness: its report flags measurements taken while the machine ran slow, and
it leaves no server behind."""

from __future__ import annotations

import os
import sys
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


def test_kernel_threads_are_told_from_processes() -> None:
    table = procs.process_table()
    assert not table[os.getpid()].kernel
    assert table[os.getpid()].ppid == os.getppid()
    if any(proc.kernel for proc in table.values()):  # a container may show none
        assert table[2].kernel  # kthreadd


def test_the_kernels_threads_are_counted_apart() -> None:
    watch = procs.Watch(server=None, postgres=os.getpid()).start()
    watch.stop()
    kernel = {pid for pid, proc in procs.process_table().items() if proc.kernel}
    assert set(watch.cpu["kernel"].last) <= kernel | set(watch.cpu["kernel"].first)
    if kernel:
        assert watch.cpu["kernel"].last
    assert os.getpid() in watch.cpu["postgres"].last
    assert os.getpid() not in watch.cpu["kernel"].last


def test_the_kernels_threads_are_not_other_programs() -> None:
    # A write scenario's raw limit keeps the kernel's threads busy with its commits: that is
    # not another program disturbing the measurement.
    watch = procs.Watch(server=None, postgres=0)
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
