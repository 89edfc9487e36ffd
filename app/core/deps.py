"""FastAPI dependencies shared by every router: the call (connection, caller, time), roles,
and the one write path.

Every dependency is a node FastAPI resolves on each request, so they are few: `Call` carries
what a handler needs, built by one dependency; role checks and `Write` build on it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any, ClassVar

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.core import idempotency, versions
from app.core.auth import BOOTSTRAP_ADMIN, Principal, Role, bootstrap_key_matches
from app.core.clock import Clock
from app.core.config import Settings
from app.core.context import Context
from app.core.db import Database
from app.core.errors import Forbidden, Unauthorized, Unavailable
from app.core.observability import on_request_end
from app.core.responses import JSON, Reply, dump_json

MAX_AUTHORIZATION_LENGTH = 512
STALE_RETRIES = 2  # a write is done again at most this often when its configuration moved
_CONNECTION = "sdms.connection"

log = logging.getLogger("sdms.db")


async def request_connection(request: Request) -> AsyncConnection:
    """The one pooled connection of a request, in autocommit mode: authentication and reads
    use it without BEGIN/ROLLBACK round trips, and a write turns it into one transaction
    (`WriteContext.run`). A request never holds two connections, so a busy pool can only make
    requests wait, never deadlock them. The request middleware hands it back once the response
    is sent (`Database.end_request`; a yield dependency would cost a cancel scope and an exit
    stack).

    No connection, nothing done: a `503` with `Retry-After`, whether the request waited its
    turn for longer than the pool's timeout or the database could not be reached."""
    conn: AsyncConnection | None = request.scope.get(_CONNECTION)
    if conn is None:
        db: Database = request.app.state.db
        try:
            conn = await db.request_connection()
        except PoolTimeout as exc:
            log.warning("no connection for %s %s: %s", request.method, request.url.path, exc)
            raise Unavailable("The service is too busy; try again shortly.") from exc
        except (OSError, DBAPIError) as exc:
            log.error("cannot connect to the database: %r", exc)  # one line per request
            raise Unavailable("The database cannot be reached; try again shortly.") from exc
        request.scope[_CONNECTION] = conn
        on_request_end(request.scope, partial(db.end_request, conn))
    return conn


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler knows of its request: the connection, the caller, the app's parts."""

    conn: AsyncConnection
    principal: Principal
    state: Any  # the app's state: db, settings, clock

    @property
    def db(self) -> Database:
        db: Database = self.state.db
        return db

    @property
    def settings(self) -> Settings:
        settings: Settings = self.state.settings
        return settings

    @property
    def clock(self) -> Clock:
        clock: Clock = self.state.clock
        return clock

    def now(self) -> datetime:
        return self.clock.now()


async def current_call(request: Request) -> Call:
    """The caller, authenticated by its API key, and the request's connection. The header
    and the connection are taken here, not as sub-dependencies: each dependency FastAPI
    resolves costs CPU on every request (the OpenAPI document declares the key as its
    security scheme: app/main.py)."""
    from app.identity.service import principal_for_key  # identity owns the key tables

    authorization = request.headers.get("authorization")
    if authorization is None:
        raise Unauthorized("Send an API key: `Authorization: Bearer <key>`.")
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:  # no key is this long: unknown, a 401
        raise Unauthorized("The API key is unknown, revoked, or its user is disabled.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Use the Bearer scheme: `Authorization: Bearer <key>`.")
    state = request.app.state
    settings: Settings = state.settings
    admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    conn = await request_connection(request)
    if bootstrap_key_matches(token, admin_key):
        return Call(conn, BOOTSTRAP_ADMIN, state)
    principal = await principal_for_key(conn, token, state.principals)
    if principal is None:
        raise Unauthorized("The API key is unknown, revoked, or its user is disabled.")
    return Call(conn, principal, state)


CurrentCall = Annotated[Call, Depends(current_call)]


def require_role(*roles: Role) -> Callable[[Call], Awaitable[Call]]:
    allowed: Collection[Role] = frozenset(roles)

    async def check(call: CurrentCall) -> Call:
        role = call.principal.role
        if role not in allowed:
            raise Forbidden(
                f"This needs one of the roles {', '.join(sorted(allowed))}; the caller is {role}."
            )
        return call

    return check


Staff = Annotated[
    Call, Depends(require_role(Role.admin, Role.manager, Role.agent, Role.integration))
]
Manager = Annotated[Call, Depends(require_role(Role.admin, Role.manager))]
Admin = Annotated[Call, Depends(require_role(Role.admin))]

Action = Callable[[AsyncConnection, Context], Awaitable[Reply]]


class WriteContext:
    """The one write path: a transaction, the Idempotency-Key, commit, then the answer."""

    def __init__(self, request: Request, call: Call, idempotency_key: str | None) -> None:
        self.request = request
        self.call = call
        self.idempotency_key = idempotency_key

    @property
    def if_match(self) -> str | None:
        return self.request.headers.get("if-match")

    async def run(self, action: Action, *, one_statement: bool = False) -> Response:
        """Run `action` in one transaction. `one_statement` says that the action writes with
        one statement on PostgreSQL (reads before it, one `Batch` of writes): without an
        Idempotency-Key to claim, that statement is atomic and durable on its own, and the
        BEGIN and COMMIT round trips are spared. A write that found the configuration it
        cached changed (`versions.Stale`: it wrote nothing) is done again, with that
        configuration reloaded."""
        for _ in range(STALE_RETRIES):
            try:
                return await self._run(action, one_statement)
            except versions.Stale:
                continue
        return await self._run(action, one_statement)

    async def _run(self, action: Action, one_statement: bool) -> Response:
        call = self.call
        now = call.now()
        key = self.idempotency_key
        if one_statement and key is None and call.db.dialect == "postgresql":
            reply = await action(call.conn, Context(call.principal, now, call.settings, call.clock))
            return Response(dump_json(reply.body), reply.status, reply.headers(), media_type=JSON)
        principal_id = call.principal.user_id
        fingerprint = ""
        if key is not None:
            fingerprint = idempotency.fingerprint(
                self.request.method, self.request.url.path, await self.request.body()
            )
        async with call.db.transaction_on(call.conn) as conn:
            if key is not None:
                stored = await idempotency.claim(
                    conn, principal_id=principal_id, key=key, fingerprint=fingerprint, now=now
                )
                if stored is not None:
                    headers = {**stored.headers, "Idempotent-Replayed": "true"}
                    return Response(stored.body, stored.status_code, headers, media_type=JSON)
            reply = await action(conn, Context(call.principal, now, call.settings, call.clock))
            body = dump_json(reply.body)
            headers = reply.headers()
            if key is not None:
                await idempotency.store(
                    conn,
                    principal_id=principal_id,
                    key=key,
                    status_code=reply.status,
                    body=reply.replay_body(body),
                    headers=headers,
                )
        return Response(body, reply.status, headers, media_type=JSON)


IDEMPOTENCY_KEY = "Idempotency-Key"
_IDEMPOTENCY_DESCRIPTION = "Repeat a create safely: the same key and body replay the answer."


class _WriteDependency:
    """`Write`. The Idempotency-Key header is read here, not declared as a FastAPI header
    parameter: FastAPI resolves each declared parameter through several layers on every
    request (app/core/queryparams.py). It is declared in the OpenAPI document all the same."""

    openapi_parameters: ClassVar[list[dict[str, Any]]] = [
        {
            "name": IDEMPOTENCY_KEY,
            "in": "header",
            "required": False,
            "description": _IDEMPOTENCY_DESCRIPTION,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": _IDEMPOTENCY_DESCRIPTION,
            },
        }
    ]

    async def __call__(self, request: Request, call: CurrentCall) -> WriteContext:
        key = request.headers.get(IDEMPOTENCY_KEY)
        return WriteContext(request, call, None if key is None else idempotency.validate_key(key))


write_context = _WriteDependency()
Write = Annotated[WriteContext, Depends(write_context)]
