"""`sdms serve --workers N` (app/core/serving.py): the supervisor deals each connection to the
worker holding the fewest, and goes on serving when a worker dies."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn

from tests.core.test_operations import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
SETTLE = 0.5  # seconds for a worker to count a connection closed (it takes one loop pass)


class Client:
    """One keep-alive HTTP/1.1 connection, asking the pid app which process serves it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def pid(self) -> int:
        self.writer.write(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return int(await self.reader.readexactly(length))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def pids_of(clients: list[Client]) -> list[int]:
    return list(await asyncio.gather(*(client.pid() for client in clients)))


@contextlib.asynccontextmanager
async def supervisor(port: int, workers: int) -> AsyncIterator[asyncio.subprocess.Process]:
    code = (
        "from app.core.serving import serve; "
        f"serve(host='127.0.0.1', port={port}, workers={workers}, app='tests.core.pid_app:app')"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(300):  # connections are accepted once every worker has started
            with contextlib.suppress(OSError):
                client = await Client.open(port)
                await client.pid()
                await client.close()
                break
            await asyncio.sleep(0.1)
        # Tests below count on where a tie goes (the first worker): let the workers count that
        # probe's close first. Counting takes the worker a pass of its loop; 0.5 s is ample.
        await asyncio.sleep(SETTLE)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=60)


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def is_dead(pid: int) -> bool:
    """Its descriptors are closed: a zombie, or reaped already."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def served_by(port: int) -> int:
    probe = await Client.open(port)
    pid = await probe.pid()
    await probe.close()
    return pid


async def test_connections_go_to_the_worker_holding_fewest() -> None:
    port = free_port()
    async with supervisor(port, workers=2):
        # A burst of keep-alive connections, as a proxy's pool or the benchmark opens them:
        # split evenly, where the kernel's hash of addresses gave 21 / 11 one time in five.
        clients = await asyncio.gather(*(Client.open(port) for _ in range(32)))
        pids = await pids_of(clients)
        assert sorted(collections.Counter(pids).values()) == [16, 16]
        # Each connection stays with its worker.
        assert await pids_of(clients) == pids

        # The client closes all of one worker's connections: the next 16 go to that worker
        # (fewest open), not half and half. It is the worker a tie does not go to, so that
        # the probe below reaches it only once its closes are counted.
        tie = await served_by(port)
        first = next(pid for pid in pids if pid != tie)
        await asyncio.sleep(SETTLE)  # the probe's close, counted
        await asyncio.gather(*(c.close() for c, p in zip(clients, pids, strict=True) if p == first))
        kept = [c for c, p in zip(clients, pids, strict=True) if p != first]

        async def noticed() -> bool:  # a worker counts a connection closed when it sees EOF
            return await served_by(port) == first

        await until(noticed)
        await asyncio.sleep(SETTLE)  # the probe's own close, counted
        new = await asyncio.gather(*(Client.open(port) for _ in range(16)))
        assert await pids_of(new) == [first] * 16
        for client in [*kept, *new]:
            await client.close()


async def refused_upgrade(port: int) -> bytes:
    """A WebSocket upgrade (the pid app accepts none): uvicorn hands the connection to its
    WebSocket protocol, which refuses it and closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    answer = await reader.read()  # until the server closes
    writer.close()
    return answer


async def test_a_refused_websocket_upgrade_counts_as_closed() -> None:
    port = free_port()
    async with supervisor(port, workers=2):
        tie = await served_by(port)  # nothing open: a tie goes to the first worker
        await asyncio.sleep(SETTLE)
        assert b" 403 " in (await refused_upgrade(port)).split(b"\r\n")[0]  # to that worker

        # Counted closed, the first worker takes the next connection again; counted open
        # forever, it would send every later connection to the other.
        async def tie_again() -> bool:
            return await served_by(port) == tie

        await until(tie_again)


async def test_a_descriptor_that_did_not_arrive_counts_as_closed() -> None:
    """A worker at its limit of open files: the kernel drops the descriptor passed to it (the
    message arrives without it). The supervisor counted it handed; the worker counts it
    closed, or the worker would look busier than it is for good."""
    from app.core import serving

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    shared = SimpleNamespace(closed=[0, 0], ready=[1, 1])
    server = serving._DealtServer(uvicorn.Config("tests.core.pid_app:app"), theirs, shared, 1)
    theirs.setblocking(False)
    ours.sendall(b"cc")  # two connections sent, neither descriptor arrived
    server._take()
    assert shared.closed == [0, 2]
    assert not server.should_exit
    ours.close()
    server._take()  # the supervisor is gone: the worker stops
    assert server.should_exit
    theirs.close()


async def test_a_dead_workers_connections_go_to_the_others_until_it_is_replaced() -> None:
    port = free_port()
    async with supervisor(port, workers=2) as process:
        started = time.monotonic()
        clients = await asyncio.gather(*(Client.open(port) for _ in range(4)))
        pids = await pids_of(clients)
        victim, survivor = pids[0], next(p for p in pids if p != pids[0])
        # A worker that dies within 10 s of its start counts as a start-up failure.
        await asyncio.sleep(max(0.0, 10.5 - (time.monotonic() - started)))
        os.kill(victim, signal.SIGKILL)

        async def dead() -> bool:
            return await asyncio.to_thread(is_dead, victim)

        await until(dead)
        # New connections are served meanwhile, by the other worker (the supervisor finds the
        # dead one's channel closed before it has noticed the death) or already the new one.
        fresh = await asyncio.gather(*(Client.open(port) for _ in range(8)))
        fresh_pids = await pids_of(fresh)
        assert victim not in fresh_pids

        # A new worker takes the dead one's place, and the next connections go to it.
        async def replaced() -> bool:
            return await served_by(port) not in (victim, survivor)

        await until(replaced, seconds=60)
        assert process.returncode is None
        for client, pid in [*zip(clients, pids, strict=True), *zip(fresh, fresh_pids, strict=True)]:
            if pid != victim:
                await client.close()
