"""`sdms serve` with several worker processes, each listening on its own socket.

uvicorn's own `--workers` shares one listening socket between its processes: whichever worker
wakes first accepts, and a worker that is already running tends to accept everything that
arrives at once. Keep-alive clients (a reverse proxy, an integration's connection pool, the
benchmark's 32 connections) then stay on one worker while the other idles — seen in the
benchmark as 32 / 0 splits. With `SO_REUSEPORT` (Linux) every worker binds its own socket to
the same address and the kernel spreads new connections evenly over them.

Where `SO_REUSEPORT` does not balance (not Linux), or with one worker, uvicorn serves as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

log = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config, like uvicorn's own
STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up failed
RESTART_AFTER_SECONDS = 10.0  # a worker that dies sooner after its start is not restarted
PR_SET_PDEATHSIG = 1  # prctl(2)
APP = "app.main:app_factory"


def balances_connections() -> bool:
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def serve(*, host: str, port: int, workers: int, app: str = APP, **options: Any) -> None:
    """Serve `app` (an import string: SDMS's factory unless told otherwise; the benchmark's
    floor app is served the same way); `options` are uvicorn's (factory, access_log, ...)."""
    options = {"factory": app == APP, **options}
    # Port 0 (any free port) would give every worker a port of its own: uvicorn's way then.
    if workers == 1 or port == 0 or not balances_connections():
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return
    Supervisor(app, host, port, workers, options).run()


def _listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(app: str, host: str, port: int, options: dict[str, Any]) -> None:
    _die_with_parent()
    try:
        sock = _listening_socket(host, port)
        config = uvicorn.Config(app, host=host, port=port, **options)
        server = uvicorn.Server(config)
    except Exception:
        log.exception("worker could not start")
        sys.exit(STARTUP_FAILURE)
    # Ctrl+C reaches the whole process group: uvicorn shuts down, then re-raises it.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _die_with_parent() -> None:
    """Have the kernel stop this worker when the supervisor dies (even by SIGKILL): orphans
    would go on serving, and hold the port against the next `sdms serve`."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the request took effect
        sys.exit(1)


class Supervisor:
    """Starts the workers, restarts one that dies, stops them all on SIGINT/SIGTERM."""

    def __init__(
        self, app: str, host: str, port: int, workers: int, options: dict[str, Any]
    ) -> None:
        self.app, self.host, self.port, self.options = app, host, port, options
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = [None] * workers
        self.started: list[float] = [0.0] * workers
        self.stopping = False

    def _start(self, index: int) -> None:
        process = self.context.Process(
            target=_worker,
            args=(self.app, self.host, self.port, self.options),
            name=f"sdms-worker-{index}",
        )
        process.start()
        self.processes[index] = process
        self.started[index] = time.monotonic()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        uvicorn.Config(self.app, **self.options)  # configures logging, as uvicorn.run does
        # Bind once here first, without SO_REUSEPORT: a port in use (another SDMS included,
        # whose sockets would otherwise accept ours beside them) fails now, clearly.
        try:
            _listening_socket(self.host, self.port, shared=False).close()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.host, self.port, exc.strerror)
            sys.exit(1)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        failed = False
        try:
            for index in range(len(self.processes)):
                self._start(index)
            log.info(
                "serving on http://%s:%d with %d workers",
                self.host,
                self.port,
                len(self.processes),
            )
            failed = self._watch()
        finally:
            self._stop_all()
        if failed:
            sys.exit(STARTUP_FAILURE)

    def _watch(self) -> bool:
        """Restart workers that die, until told to stop; True when workers cannot start."""
        while not self.stopping:
            time.sleep(0.2)
            for index, process in enumerate(self.processes):
                if self.stopping or process.is_alive():
                    continue
                lived = time.monotonic() - self.started[index]
                if process.exitcode == STARTUP_FAILURE or lived < RESTART_AFTER_SECONDS:
                    # A worker that fails at start fails again: report it, do not spin.
                    log.error("worker %d could not start (exit %s)", index, process.exitcode)
                    return True
                log.warning("worker %d exited (%s); starting another", index, process.exitcode)
                self._start(index)
        return False

    def _stop_all(self) -> None:
        for process in self.processes:
            if process is not None and process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes its requests, then exits
        deadline = time.monotonic() + 30
        for process in self.processes:
            if process is None:
                continue
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
