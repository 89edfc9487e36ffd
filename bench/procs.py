"""Processes under test: start and stop SDMS and the floor app, and measure process trees
(resident memory and CPU time, read from /proc) while a scenario runs."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000  # in the flags of /proc/PID/stat: a kernel thread (Linux)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc ----------------------------------------------------------------------------------


def stat_fields(raw: str) -> list[str]:
    """The fields of a /proc/PID/stat line from field 3 (state) on: the command name (field 2)
    may contain spaces and parentheses, so the line is split after its last ')'."""
    return raw[raw.rindex(")") + 2 :].split()


def read_stat_fields(pid: int) -> list[str] | None:
    """`stat_fields` of a process, or None when it has ended."""
    try:
        return stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


class Proc(NamedTuple):
    ppid: int
    ticks: int  # user + system CPU so far
    kernel: bool  # a kernel thread

    @classmethod
    def of(cls, fields: list[str]) -> Proc:
        """From `stat_fields`: ppid, flags, utime and stime are fields 4, 9, 14 and 15."""
        return cls(
            int(fields[1]), int(fields[11]) + int(fields[12]), bool(int(fields[6]) & PF_KTHREAD)
        )


def process_table() -> dict[int, Proc]:
    """Every process, by pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = read_stat_fields(int(entry.name))
        if fields is not None:
            table[int(entry.name)] = Proc.of(fields)
    return table


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds so far of each of these processes still running."""
    seconds = {}
    for pid in pids:
        fields = read_stat_fields(pid)
        if fields is not None:
            seconds[pid] = Proc.of(fields).ticks / CLOCK_TICKS
    return seconds


def subtree(table: dict[int, Proc], root: int) -> list[int]:
    """`root` and every process below it (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def descendants(root: int) -> list[int]:
    return subtree(process_table(), root)


def connections_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """Established TCP connections to local `port` held by each process (how the kernel spread
    the load generator's connections over the server's workers)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        n = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = str(fd.readlink())
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        n += 1
        except OSError:
            continue
        if n:
            counts[pid] = n
    return counts


def rss_bytes(pids: list[int]) -> int:
    """Resident set size summed over the processes (shared pages are counted in each)."""
    total = 0
    for pid in pids:
        try:
            resident = Path(f"/proc/{pid}/statm").read_text().split()[1]
        except (OSError, IndexError):
            continue
        total += int(resident) * PAGE_SIZE
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)
    return total - idle, total


def machine_busy_percent(seconds: float) -> float:
    """How busy the machine is over `seconds`, in percent of one core (200 % = 2 cores)."""
    busy0, _ = machine_ticks()
    time.sleep(seconds)
    busy1, _ = machine_ticks()
    return 100.0 * (busy1 - busy0) / CLOCK_TICKS / seconds


# --- hardware counters ----------------------------------------------------------------------


class PerfStat:
    """Instructions, cycles and CPU time (`task-clock`, ms) of some processes while enabled
    (between `enable` and `disable`), counted by `perf stat` (Debian's linux-perf; not a
    dependency). Instructions per request measure the work of the code, whatever the
    machine's speed; cycles per millisecond of CPU time (GHz) measure the speed the processes
    got, whatever the code (on a virtual machine, a CPU the host lends elsewhere counts CPU
    time but no cycles). `stop` answers nothing when perf is missing or not permitted.

    Counting is not free: on this virtual machine every context switch of a counted process
    saves and restores its counters through the hypervisor, and a create at concurrency 32
    served a fifth to a third fewer requests per second while counted (bench/README.md). So
    perf is started with its counters off (its own start-up, a tenth of a second of CPU, is
    out of the way too) and they are switched on and off through its control pipe, for
    seconds apart from the measured ones."""

    EVENTS = ("instructions", "cycles", "task-clock")

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.proc: subprocess.Popen[str] | None = None
        self._control = self._ack = -1
        self.failed = False  # a command went unacknowledged: its counts say nothing

    def start(self) -> PerfStat:
        if shutil.which("perf") is not None and self.pids:
            control_r, self._control = os.pipe()
            self._ack, ack_w = os.pipe()
            command = ["perf", "stat", "-x,", "-e", ",".join(self.EVENTS), "--delay=-1"]
            command.append(f"--control=fd:{control_r},{ack_w}")
            try:
                self.proc = subprocess.Popen(
                    [*command, "-p", ",".join(map(str, self.pids))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    pass_fds=(control_r, ack_w),
                )
            except OSError:
                self._close()
            finally:
                os.close(control_r)
                os.close(ack_w)
        return self

    @staticmethod
    def switch(counters: Iterable[PerfStat], on: bool) -> None:
        """Switch the counters of several perfs on (or off) together: every command is sent
        before any acknowledgement is awaited (perf enables its events one by one)."""
        command = b"enable\n" if on else b"disable\n"
        sent = [counter for counter in counters if counter._send(command)]
        for counter in sent:
            counter._acknowledged()

    def _send(self, command: bytes) -> bool:
        if self.proc is None or self.failed:
            return False
        try:
            os.write(self._control, command)
        except OSError:  # perf is gone
            self.failed = True
            return False
        return True

    def _acknowledged(self) -> None:
        ready, _, _ = select.select([self._ack], [], [], 5.0)
        if not ready or not os.read(self._ack, 64):
            self.failed = True  # no answer: what it counts from now on is unknown

    def _close(self) -> None:
        for fd in (self._control, self._ack):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._control = self._ack = -1

    def stop(self) -> dict[str, float]:
        """The counts (once: a second call answers nothing)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return {}
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {}
        finally:
            self._close()
        if self.failed:
            return {}
        counts = {}
        for line in err.splitlines():  # value,unit,event,...
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in self.EVENTS:
                with contextlib.suppress(ValueError):  # "<not counted>", "<not supported>"
                    counts[fields[2]] = float(fields[0])
        return counts


def speed(counts: dict[str, float], requests: float) -> dict[str, float | None]:
    """Per request: million instructions; and the speed the processes ran at: GHz (cycles
    per ns of CPU time) and instructions per cycle."""
    instructions, cycles, cpu_ms = (counts.get(e) for e in PerfStat.EVENTS)

    def share(a: float | None, b: float | None, scale: float = 1.0) -> float | None:
        return round(a / b / scale, 3) if a is not None and b else None

    return {
        "minstr_per_request": share(instructions, requests, 1e6),
        "ghz": share(cycles, cpu_ms, 1e6),
        "ipc": share(instructions, cycles),
    }


@dataclass
class Sample:
    at: float
    rss: int


class CpuGroup:
    """CPU time used by a changing set of processes during a window: per-process counters
    are followed at every sample, so processes that start or end meanwhile are counted too
    (a process that ends loses at most its last sampling interval)."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def observe(self, pids: list[int], table: dict[int, Proc], *, at_start: bool = False) -> None:
        for pid in pids:
            if pid not in table:
                continue
            ticks = table[pid].ticks
            if pid not in self.first:
                self.first[pid] = ticks if at_start else 0
            self.last[pid] = ticks

    @property
    def seconds(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last) / CLOCK_TICKS


@dataclass
class Watch:
    """During one measurement: the server tree's RSS every `interval` seconds, and the CPU
    used by the server, by PostgreSQL, by this harness (with the load generator), by the
    kernel's own threads and by the whole machine; what the machine used beyond those is
    "foreign" work (other programs).

    The kernel's threads (`kworker`, `ksoftirqd`, ...) are counted
    apart because they work for the measurement: a durable commit's WAL reaches the disk
    through them, so a write scenario's raw limit, committing thousands of times a second,
    keeps them at 10-20 % of a core."""

    server: int | None
    postgres: int
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    started_at: float = 0.0
    stopped_at: float = 0.0
    cpu: dict[str, CpuGroup] = field(default_factory=dict)
    machine_start: int = 0
    machine_end: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def _observe(self, at_start: bool = False) -> None:
        table = process_table()  # one pass over /proc for every group
        server = subtree(table, self.server) if self.server is not None else []
        if server:
            self.samples.append(Sample(time.monotonic(), rss_bytes(server)))
        exclude = set(server)
        own = [p for p in subtree(table, os.getpid()) if p not in exclude]
        self.cpu["server"].observe(server, table, at_start=at_start)
        self.cpu["postgres"].observe(subtree(table, self.postgres), table, at_start=at_start)
        self.cpu["harness"].observe(own, table, at_start=at_start)
        kernel = [pid for pid, proc in table.items() if proc.kernel]
        self.cpu["kernel"].observe(kernel, table, at_start=at_start)

    def start(self) -> Watch:
        self.rebase()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def rebase(self) -> None:
        """Start counting CPU from now (the warm-up is over); RSS samples are kept."""
        with self._lock:
            self._rebase()

    def _rebase(self) -> None:
        self.cpu = {
            "server": CpuGroup(),
            "postgres": CpuGroup(),
            "harness": CpuGroup(),
            "kernel": CpuGroup(),
        }
        self.started_at = time.monotonic()
        self.machine_start = machine_ticks()[0]
        self._observe(at_start=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._observe()

    def stop(self) -> Watch:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._observe()
        self.stopped_at = time.monotonic()
        self.machine_end = machine_ticks()[0]
        return self

    def percent(self, seconds: float) -> float:
        """CPU seconds per wall second, in percent of one core (200 % = both cores busy)."""
        wall = self.stopped_at - self.started_at
        return round(100.0 * seconds / wall, 1) if wall > 0 else 0.0

    @property
    def wall(self) -> float:
        return self.stopped_at - self.started_at

    def cpu_seconds(self) -> dict[str, float]:
        return {name: round(group.seconds, 3) for name, group in self.cpu.items()}

    def cpu_percent(self) -> dict[str, float]:
        machine = (self.machine_end - self.machine_start) / CLOCK_TICKS
        ours = {name: group.seconds for name, group in self.cpu.items()}
        return {
            **{name: self.percent(value) for name, value in ours.items()},
            "machine": self.percent(machine),
            "foreign": self.percent(max(0.0, machine - sum(ours.values()))),
        }


# --- servers --------------------------------------------------------------------------------


def wait_http(
    port: int, path: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}{path}"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not answer {path} in {timeout} s")
        time.sleep(0.2)


class Server:
    """A server process (its own process group, so it can be stopped with all its workers)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        port: int,
        log: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.cwd = cwd
        self.name = name
        self.command = command
        self.env = env
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False

    def start(self, ready_path: str, timeout: float = 60.0) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.stopped = False
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_http(self.port, ready_path, timeout, proc=self.proc)
        except BaseException:
            self.stop()  # a server that never got ready is not left running
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        """The server's processes: its own and every one below it (the workers)."""
        return descendants(self.pid)

    def stop(self) -> None:
        if self.proc is None or self.stopped:
            return
        self.stopped = True  # once: the group's id may be another's later
        # The whole group, even when its leader has exited already: its workers may not have.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def export_tree(ref: str, into: Path) -> tuple[Path, str]:
    """The SDMS sources of a git revision, exported (not checked out) under `into`: the
    benchmark can measure a commit while others keep editing the working tree."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    tree = into / f"tree-{sha[:12]}"
    if not (tree / "app").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "app", "migrations"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, sha


def sdms_env(tree: Path, database_url: str, admin_key: str | None = None) -> dict[str, str]:
    """SDMS's environment: the sources of `tree` first on the path (ahead of the editable
    install), the database, the bootstrap admin key, the region."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "SDMS_DATABASE_URL": database_url,
        "SDMS_REGION": "msk",
    }
    if admin_key is not None:
        env["SDMS_ADMIN_API_KEY"] = admin_key
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def sdms_command(*args: str) -> list[str]:
    """`sdms ARGS` as `python -m app ARGS` (the same CLI), so PYTHONPATH picks the sources."""
    return [sys.executable, "-m", "app", *args]


def sdms_server(tree: Path, database_url: str, admin_key: str, workers: int, log: Path) -> Server:
    port = free_port()
    env = sdms_env(tree, database_url, admin_key)
    command = sdms_command("serve", "--workers", str(workers), "--port", str(port))
    return Server("sdms", command, env, port, log, cwd=tree)


def floor_server(dsn: str, workers: int, log: Path) -> Server:
    port = free_port()
    env = {**os.environ, "FLOOR_DSN": dsn}
    command = [
        sys.executable,
        "-m",
        "bench.floor_app",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return Server("floor", command, env, port, log)


def run_checked(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout
