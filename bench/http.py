"""A small HTTP/1.1 keep-alive client over raw asyncio sockets, for the load generator and the
seeder. One request at a time per connection (no pipelining); responses are parsed by httptools
(the C parser uvicorn uses), so the client costs little CPU next to the server it measures.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httptools
import orjson


class ConnectionClosed(Exception):
    """The server closed the connection (or it failed) before the answer was complete."""


def build_request(
    method: str,
    path: str,
    *,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request, ready to send as is."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + body if body is not None else head


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends raw request bytes and waits for the answer."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._chunks: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(cls, host, port)
        return protocol

    # asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionClosed(f"bad response: {exc}"))
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionClosed(str(exc) if exc else "connection closed by the server"))

    # httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._chunks = []

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), b"".join(self._chunks)))

    # ---------------------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request and return (status, body)."""
        if self.closed or self._transport is None:
            raise ConnectionClosed("connection is closed")
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(raw)
        return await waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Client:
    """A pool of keep-alive connections for setup work (seeding, probing), with JSON helpers.

    `concurrency` bounds how many requests are in flight; closed connections are reopened."""

    def __init__(
        self, host: str, port: int, *, key: str | None = None, concurrency: int = 16
    ) -> None:
        self.host = host
        self.port = port
        self.key = key
        self._idle: list[HttpConnection] = []
        self._slots = asyncio.Semaphore(concurrency)

    def as_key(self, key: str | None) -> Client:
        other = Client(self.host, self.port, key=key)
        other._idle = self._idle
        other._slots = self._slots
        return other

    async def raw(self, raw: bytes) -> tuple[int, bytes]:
        async with self._slots:
            for attempt in range(3):
                conn = self._idle.pop() if self._idle else None
                if conn is None or conn.closed:
                    conn = await HttpConnection.open(self.host, self.port)
                try:
                    result = await conn.request(raw)
                except ConnectionClosed:
                    if attempt == 2:
                        raise
                    continue
                self._idle.append(conn)
                return result
        raise AssertionError("unreachable")

    def build(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> bytes:
        merged = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        merged.update(headers or {})
        payload = orjson.dumps(body) if body is not None else None
        return build_request(method, path, host=self.host, headers=merged, body=payload)

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """A JSON request; returns the status and the decoded JSON body (None when empty)."""
        status, payload = await self.raw(self.build(method, path, body, headers))
        try:
            decoded = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            decoded = payload.decode(errors="replace")
        return status, decoded

    async def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """A JSON request that must answer `expect` (else RuntimeError with the answer)."""
        status, decoded = await self.call(method, path, body)
        if status != expect:
            raise RuntimeError(f"{method} {path} answered {status}: {decoded}")
        return decoded

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
