"""`sdms serve` with several worker processes, each connection dealt to the least busy one.

uvicorn's own `--workers` shares one listening socket between its processes: whichever worker
wakes first accepts, and a worker that is already running tends to accept everything that
arrives at once. Keep-alive clients (a reverse proxy, an integration's connection pool, the
benchmark's 32 connections) then stay on one worker while the other idles: 32 / 0 splits.
One `SO_REUSEPORT` socket per worker (SDMS's way before this one) lets the kernel spread them
by a hash of each connection's addresses: even on average, not each time (21 / 11 for 32
connections in about one benchmark run in five, and the worker holding 21 answers slowest).

So the supervisor holds the one listening socket, accepts each connection and hands it (its
file descriptor, over a Unix socket: `SCM_RIGHTS`) to the worker holding the fewest open
connections. Each worker counts the connections it has closed in shared memory, so the
supervisor knows who holds what. A connection costs the supervisor one `accept` and one
`sendmsg`; the requests on it go straight to the worker.

Where descriptors cannot be passed (Windows), or with one worker, uvicorn serves as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

log = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config, like uvicorn's own
STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up failed
RESTART_AFTER_SECONDS = 10.0  # a worker that dies sooner after its start is not restarted
WATCH_SECONDS = 0.2  # how often the supervisor looks for dead workers
HAND_TIMEOUT_SECONDS = 5.0  # a worker that takes no connection for this long is not waited for
PR_SET_PDEATHSIG = 1  # prctl(2)
APP = "app.main:app_factory"


def balances_connections() -> bool:
    return sys.platform != "win32" and hasattr(socket, "send_fds")


def serve(*, host: str, port: int, workers: int, app: str = APP, **options: Any) -> None:
    """Serve `app` (an import string: SDMS's factory unless told otherwise; the benchmark's
    floor app is served the same way); `options` are uvicorn's (factory, access_log, ...)."""
    options = {"factory": app == APP, **options}
    if workers == 1 or not balances_connections():
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return
    Supervisor(app, host, port, workers, options).run()


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _DealtServer(uvicorn.Server):
    """A uvicorn server with no listening socket of its own: it serves the connections the
    supervisor sends down `channel`, and counts in `closed[index]` those it has closed."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket, shared: Any, index: int):
        super().__init__(config)
        self.channel, self.shared, self.index = channel, shared, index
        self.adopting: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if not self.started:
            return
        self.protocol_factory = functools.partial(
            _counting(self.config, self.shared.closed, self.index),
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        self.channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._take)
        self.shared.ready[self.index] = 1

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.shared.ready[self.index] = 0
        asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets=sockets)

    def _take(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self.channel, 64, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:  # the supervisor is gone
                loop.remove_reader(self.channel.fileno())
                self.should_exit = True
                return
            # One byte per connection sent. A descriptor that did not arrive (this process at
            # its limit of open files: the kernel drops it) is a connection closed.
            if len(fds) < len(data):
                log.warning("%d connection(s) lost: out of file descriptors", len(data) - len(fds))
                self.shared.closed[self.index] += len(data) - len(fds)
            for fd in fds:
                task = loop.create_task(self._adopt(socket.socket(fileno=fd)))
                self.adopting.add(task)
                task.add_done_callback(self.adopting.discard)

    async def _adopt(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self.protocol_factory, sock, ssl=self.config.ssl)
        except OSError:  # the client left before we got to it
            sock.close()
            self.shared.closed[self.index] += 1


def _counting(config: uvicorn.Config, closed: Any, index: int) -> Any:
    """The HTTP protocol class, counting in `closed[index]` the connections it has closed:
    its own, and those it handed to a WebSocket protocol (an upgrade, even one refused)."""
    websocket = config.ws_protocol_class and _counted(config.ws_protocol_class, closed, index)

    class Http(_counted(config.http_protocol_class, closed, index)):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.ws_protocol_class = websocket

    return Http


def _counted(protocol: type[asyncio.Protocol], closed: Any, index: int) -> Any:
    class Counted(protocol):  # type: ignore[valid-type,misc]
        def connection_lost(self, exc: Exception | None) -> None:
            try:
                super().connection_lost(exc)
            finally:
                closed[index] += 1  # only this worker writes its own slot

    return Counted


def _worker(
    app: str, options: dict[str, Any], channel: socket.socket, shared: Any, index: int
) -> None:
    _die_with_parent()
    try:
        server = _DealtServer(uvicorn.Config(app, **options), channel, shared, index)
    except Exception:
        log.exception("worker could not start")
        sys.exit(STARTUP_FAILURE)
    # Ctrl+C reaches the whole process group: uvicorn shuts down, then re-raises it.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _die_with_parent() -> None:
    """Have the kernel stop this worker when the supervisor dies (even by SIGKILL): orphans
    would go on serving their connections."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the request took effect
        sys.exit(1)


class _Shared:
    """Memory the workers write and the supervisor reads: per worker, whether it serves and
    how many of the connections handed to it it has closed."""

    def __init__(self, context: Any, workers: int) -> None:
        self.ready = context.RawArray("b", workers)
        self.closed = context.RawArray("q", workers)


class Supervisor:
    """Accepts connections and deals them to the workers; restarts a worker that dies, stops
    them all on SIGINT/SIGTERM."""

    def __init__(
        self, app: str, host: str, port: int, workers: int, options: dict[str, Any]
    ) -> None:
        self.app, self.host, self.port = app, host, port
        self.options = {**options, "host": host, "port": port}
        self.context = multiprocessing.get_context("spawn")
        self.shared = _Shared(self.context, workers)
        self.processes: list[Any] = [None] * workers
        self.channels: list[socket.socket | None] = [None] * workers
        self.handed = [0] * workers  # connections handed to each worker since its start
        self.started = [0.0] * workers
        self.stopping = False

    def _start(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.shared.ready[index] = 0
        self.shared.closed[index] = 0
        self.handed[index] = 0
        process = self.context.Process(
            target=_worker,
            args=(self.app, self.options, theirs, self.shared, index),
            name=f"sdms-worker-{index}",
        )
        try:
            process.start()
        finally:
            theirs.close()
        ours.settimeout(HAND_TIMEOUT_SECONDS)
        if self.channels[index] is not None:
            self.channels[index].close()  # type: ignore[union-attr]
        self.channels[index] = ours
        self.processes[index] = process
        self.started[index] = time.monotonic()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        uvicorn.Config(self.app, **self.options)  # configures logging, as uvicorn.run does
        try:
            listener = _listening_socket(self.host, self.port, self.options.get("backlog", 2048))
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.host, self.port, exc.strerror)
            sys.exit(1)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        failed = False
        try:
            for index in range(len(self.processes)):
                self._start(index)
            host = f"[{self.host}]" if ":" in self.host else self.host
            log.info(
                "serving on http://%s:%d with %d workers",
                host,
                listener.getsockname()[1],
                len(self.processes),
            )
            failed = self._serve(listener)
        finally:
            listener.close()  # new connections are refused from here on
            self._stop_all()
        if failed:
            sys.exit(STARTUP_FAILURE)

    def _serve(self, listener: socket.socket) -> bool:
        """Deal connections and restart workers that die, until told to stop; True when
        workers cannot start. Connections wait in the listen queue until every worker has
        started once (a burst would otherwise all go to the first one up)."""
        with selectors.DefaultSelector() as selector:
            accepting = False
            watched = time.monotonic()
            while not self.stopping:
                if not accepting and all(self.shared.ready):
                    selector.register(listener, selectors.EVENT_READ)
                    accepting = True
                if accepting and selector.select(timeout=WATCH_SECONDS):
                    self._accept(listener)
                elif not accepting:
                    time.sleep(0.05)
                if time.monotonic() - watched >= WATCH_SECONDS:
                    watched = time.monotonic()
                    if self._watch():
                        return True
        return False

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping:
            try:
                conn, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: let connections wait in the listen queue
                    # rather than spin on them.
                    log.warning("accept failed: %s", exc.strerror)
                    time.sleep(0.1)
                    return
                continue  # that client gave up already (ECONNABORTED ...)
            with conn:
                self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        passed: set[int] = set()
        while True:
            serving = [
                i for i in range(len(self.processes)) if self.shared.ready[i] and i not in passed
            ]
            if not serving:  # none can take it (all restarting): the client is refused
                log.warning("no worker took a connection")
                return
            index = min(serving, key=lambda i: self.handed[i] - self.shared.closed[i])
            try:
                socket.send_fds(self.channels[index], [b"c"], [conn.fileno()])  # type: ignore[arg-type]
            except OSError as exc:
                log.warning("worker %d took no connection: %s", index, exc)
                passed.add(index)
                if isinstance(exc, BrokenPipeError | ConnectionResetError):
                    self.shared.ready[index] = 0  # it is gone; _watch starts another
                continue
            self.handed[index] += 1
            return

    def _watch(self) -> bool:
        """Restart workers that died; True when workers cannot start."""
        for index, process in enumerate(self.processes):
            if self.stopping or process.is_alive():
                continue
            self.shared.ready[index] = 0
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
        for channel in self.channels:
            if channel is not None:
                channel.close()
