"""RFC 9457 problem details: the one shape of every error SDMS answers."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("sdms.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5  # what a 503 asks a client to wait before it tries again


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[ErrorItem] | None = None


def problem_type(slug: str) -> str:
    return f"urn:sdms:problem:{slug}"


class AppError(Exception):
    """A failure the client can act on; rendered as a problem with this status."""

    status = 500
    slug = "internal-error"
    headers: dict[str, str] | None = None

    def __init__(
        self, detail: str, *, errors: Sequence[ErrorItem] | None = None, slug: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        if slug is not None:
            self.slug = slug


class Unauthorized(AppError):
    status = 401
    slug = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    status = 403
    slug = "forbidden"


class NotFound(AppError):
    status = 404
    slug = "not-found"


class Conflict(AppError):
    status = 409
    slug = "conflict"


class PreconditionFailed(AppError):
    status = 412
    slug = "precondition-failed"


class Unavailable(AppError):
    """Nothing was done, and the same request may succeed a little later (the database was
    out of reach, or the service too busy to give the request a connection in time)."""

    status = 503
    slug = "unavailable"
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class Unprocessable(AppError):
    status = 422
    slug = "validation-error"

    @classmethod
    def field(cls, loc: Iterable[str | int], msg: str) -> Unprocessable:
        return cls(msg, errors=[ErrorItem(loc=list(loc), msg=msg)])


# Titles (and so types) that Python's own phrases renamed after 3.11 (3.13: "Content Too
# Large", "Unprocessable Content"): the API's answers do not change with the interpreter.
_TITLES = {413: "Request Entity Too Large", 422: "Unprocessable Entity"}


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: Sequence[ErrorItem] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    phrase = _TITLES.get(status) or (
        HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    )
    if slug is None and status == 422:
        slug = Unprocessable.slug  # one type for every invalid input, whoever found it
    body: dict[str, Any] = {
        "type": problem_type(slug or phrase.lower().replace(" ", "-")),
        "title": phrase,
        "status": status,
        "detail": detail,
    }
    if errors is None and status == 422:
        # Clients read `errors` on every 422; a failure without field detail still has one.
        errors = [ErrorItem(loc=[], msg=detail)]
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _loc(loc: Sequence[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def _validation_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        ErrorItem(loc=_loc(e.get("loc", ())), msg=str(e.get("msg", ""))) for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:5])
    return problem_response(422, f"The request is invalid: {summary}", errors=errors)


def _app_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return problem_response(
        exc.status, exc.detail, slug=exc.slug, errors=exc.errors, headers=exc.headers
    )


def _http_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such resource."
    return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}) or None)


def _db_error_handler(request: Request, exc: Exception) -> Response:
    """Constraint and data errors the service checks missed: a client problem, never SQL text."""
    assert isinstance(exc, DBAPIError)
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(exc, IntegrityError) or (isinstance(code, str) and code.startswith("23")):
        log.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(409, "The request conflicts with existing data.", slug="conflict")
    if isinstance(code, str) and code.startswith("22"):
        log.info("data error on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(422, "A value in the request is out of range or malformed.")
    return _unexpected_handler(request, exc)


def _unexpected_handler(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("sdms.request_id", "-")
    log.error(
        "unexpected error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    return problem_response(
        500, f"An unexpected error occurred; quote request id {request_id} when reporting it."
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(DBAPIError, _db_error_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
