"""FastAPI dependencies shared by every router: database, clock, principal, roles, writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.core import idempotency
from app.core.auth import BOOTSTRAP_ADMIN, Principal, Role, bootstrap_key_matches
from app.core.clock import Clock
from app.core.config import Settings
from app.core.context import Context
from app.core.db import Database
from app.core.errors import Forbidden, Unauthorized
from app.core.responses import JSON, Reply

MAX_AUTHORIZATION_LENGTH = 512


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbDep = Annotated[Database, Depends(get_db)]
ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def request_connection(db: DbDep) -> AsyncIterator[AsyncConnection]:
    """The one pooled connection of a request, in autocommit mode: authentication and reads
    use it without BEGIN/ROLLBACK round trips, and a write turns it into one transaction
    (`WriteContext.run`). A request never holds two connections, so a busy pool can only
    make requests wait, never deadlock them."""
    async with db.read() as conn:
        yield conn


ReadConn = Annotated[AsyncConnection, Depends(request_connection)]


async def current_principal(
    conn: ReadConn,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    from app.identity.service import principal_for_key  # identity owns the key tables

    if authorization is None:
        raise Unauthorized("Send an API key: `Authorization: Bearer <key>`.")
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:  # no key is this long: unknown, a 401
        raise Unauthorized("The API key is unknown, revoked, or its user is disabled.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Use the Bearer scheme: `Authorization: Bearer <key>`.")
    admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    if bootstrap_key_matches(token, admin_key):
        return BOOTSTRAP_ADMIN
    principal = await principal_for_key(conn, token)
    if principal is None:
        raise Unauthorized("The API key is unknown, revoked, or its user is disabled.")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    allowed: Collection[Role] = frozenset(roles)

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(
                f"This needs one of the roles {', '.join(sorted(allowed))}; "
                f"the caller is {principal.role}."
            )
        return principal

    return check


Staff = Annotated[
    Principal, Depends(require_role(Role.admin, Role.manager, Role.agent, Role.integration))
]
Manager = Annotated[Principal, Depends(require_role(Role.admin, Role.manager))]
Admin = Annotated[Principal, Depends(require_role(Role.admin))]

Action = Callable[[AsyncConnection, Context], Awaitable[Reply]]


class WriteContext:
    """The one write path: a transaction, the Idempotency-Key, commit, then the answer."""

    def __init__(
        self,
        request: Request,
        db: DbDep,
        conn: ReadConn,
        clock: ClockDep,
        settings: SettingsDep,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                max_length=255,
                description="Repeat a create safely: the same key and body replay the answer.",
            ),
        ] = None,
    ) -> None:
        self.request = request
        self.db = db
        self.conn = conn
        self.clock = clock
        self.settings = settings
        self.principal = principal
        self.idempotency_key = (
            idempotency.validate_key(idempotency_key) if idempotency_key is not None else None
        )

    @property
    def if_match(self) -> str | None:
        return self.request.headers.get("if-match")

    async def run(self, action: Action) -> Response:
        now = self.clock.now()
        key = self.idempotency_key
        principal_id = self.principal.user_id
        fingerprint = ""
        if key is not None:
            fingerprint = idempotency.fingerprint(
                self.request.method, self.request.url.path, await self.request.body()
            )
        async with self.db.transaction_on(self.conn) as conn:
            if key is not None:
                stored = await idempotency.claim(
                    conn, principal_id=principal_id, key=key, fingerprint=fingerprint, now=now
                )
                if stored is not None:
                    headers = {**stored.headers, "Idempotent-Replayed": "true"}
                    return Response(stored.body, stored.status_code, headers, media_type=JSON)
            reply = await action(conn, Context(self.principal, now, self.settings))
            body = reply.body.model_dump_json().encode()
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


Write = Annotated[WriteContext, Depends()]
