"""Request ids, access logging and Prometheus metrics, in one pure-ASGI middleware."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response

log = logging.getLogger("sdms.access")
error_log = logging.getLogger("sdms.errors")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")

REQUESTS = Counter(
    "sdms_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "sdms_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# The labelled children of the two request metrics, by (method, route, status).
_metric_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def metrics_text() -> tuple[bytes, str]:
    """The process's metrics, or every worker's when running under several processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def gauge_text(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> bytes:
    """A gauge in Prometheus text format, from values read at scrape time (`/metrics`)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
    return ("\n".join(lines) + "\n").encode()


_PROCESS_TAG = secrets.token_hex(8)
_request_counter = itertools.count(1)


def _new_request_id() -> bytes:
    """Unique per process run and request, without a system call per request."""
    return f"{_PROCESS_TAG}-{next(_request_counter):x}".encode()


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


_CLEANUP = "sdms.on_request_end"


def on_request_end(scope: Scope, cleanup: Callable[[], Awaitable[Any]]) -> None:
    """Have `cleanup` run when the request's work is over, whatever happened: as its response
    starts (every response's body is built by then: no route streams from the database), so
    that a client slow to read it holds no connection, nor a worker's turn for one."""
    scope.setdefault(_CLEANUP, []).append(cleanup)


async def _run_cleanups(scope: Scope) -> None:
    for cleanup in scope.pop(_CLEANUP, ()):
        try:
            await cleanup()
        except Exception:
            error_log.exception("clean-up after request %s failed", scope["sdms.request_id"])


class RequestContextMiddleware:
    """Gives every request an id (echoing a sane client one), times it, counts it, turns an
    unexpected exception into a logged 500 problem that still carries the request id, and runs
    the request's `on_request_end` clean-ups (handing its connection on) as its response starts."""

    def __init__(
        self, app: ASGIApp, *, access_log: bool = False, max_body_bytes: int | None = None
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value
                break
        if not _VALID_REQUEST_ID.match(request_id):
            request_id = _new_request_id()
        scope["sdms.request_id"] = request_id.decode()
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
                await _run_cleanups(scope)
            await send(message)

        try:
            limit = self.max_body_bytes
            if limit is None:
                await self.app(scope, receive, send_with_id)
            elif _declared_length(scope) > limit:
                await _too_large(limit)(scope, receive, send_with_id)
            else:
                await self.app(scope, _limited(receive, limit), send_with_id)
        except BodyTooLarge as exc:
            if response_started:
                raise
            await _too_large(exc.limit)(scope, receive, send_with_id)
        except Exception as exc:
            error_log.error(
                "unexpected error on %s %s (request %s)",
                scope["method"],
                scope["path"],
                scope["sdms.request_id"],
                exc_info=exc,
            )
            if response_started:
                raise
            response = problem_response(
                500,
                "An unexpected error occurred; quote request id "
                f"{scope['sdms.request_id']} when reporting it.",
            )
            await response(scope, receive, send_with_id)
        finally:
            await _run_cleanups(scope)  # if no response started
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            counted = _metric_children.get((method, route, status))
            if counted is None:  # routes, methods and statuses are few: each pair made once
                counted = _metric_children[method, route, status] = (
                    REQUESTS.labels(method, route, str(status)),
                    LATENCY.labels(method, route),
                )
            counted[0].inc()
            counted[1].observe(elapsed)
            if self.access_log:
                log.info(
                    "%s %s %s %.1fms id=%s",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    scope["sdms.request_id"],
                )


class BodyTooLarge(StarletteHTTPException):
    """The request body grew past the limit while being read (413, a problem like any other)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_detail(limit))
        self.limit = limit


def _too_large_detail(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes."


def _too_large(limit: int) -> Response:
    return problem_response(413, _too_large_detail(limit))


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


def _limited(receive: Receive, limit: int) -> Receive:
    """Count the body as it arrives (a missing or false Content-Length is no way around it)."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_limited


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def request_id_of(scope: dict[str, Any]) -> str:
    return str(scope.get("sdms.request_id", "-"))
