"""HTTP face of identity and tenancy (section 2 of the contract)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.core.auth import Principal, Role
from app.core.config import API_PREFIX
from app.core.context import Context
from app.core.deps import Action, Admin, CurrentCall, Manager, Staff, Write, WriteContext
from app.core.pagination import PageDep, RecordPageDep
from app.core.responses import Reply, json_response
from app.core.schemas import Page
from app.identity import service
from app.identity.models import contacts
from app.identity.principals import PrincipalCache
from app.identity.schemas import (
    ApiKeyCreated,
    ApiKeyRead,
    ContactCreate,
    ContactPatch,
    ContactRead,
    GroupCreate,
    GroupPatch,
    GroupRead,
    Me,
    OrganizationCreate,
    OrganizationPatch,
    OrganizationRead,
    ServiceCreate,
    ServicePatch,
    ServiceRead,
    UserCreate,
    UserCreated,
    UserPatch,
    UserRead,
)

router = APIRouter(prefix=API_PREFIX)
IdList = Annotated[list[uuid.UUID], Query(max_length=50)]


# --- me -------------------------------------------------------------------------------------


@router.get("/me", response_model=Me, tags=["identity"])
async def get_me(call: CurrentCall) -> Response:
    """Who the caller is; its `ETag` is the user record's (as `GET /users/{id}` answers it)."""
    conn, principal = call.conn, call.principal
    me, version = await service.me(conn, principal=principal)
    return json_response(me, version=version)


# --- organizations --------------------------------------------------------------------------


@router.post(
    "/organizations", status_code=201, response_model=OrganizationRead, tags=["organizations"]
)
async def create_organization(body: OrganizationCreate, _: Admin, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.create_organization(conn, ctx=ctx, data=body)
        return Reply(OrganizationRead.model_validate(row), 201, row.version)

    return await write.run(action)


@router.get("/organizations", response_model=Page[OrganizationRead], tags=["organizations"])
async def list_organizations(call: CurrentCall, params: RecordPageDep) -> Response:
    conn, principal = call.conn, call.principal
    rows, cursor = await service.list_organizations(conn, principal=principal, params=params)
    items = [OrganizationRead.model_validate(r) for r in rows]
    return json_response(Page[OrganizationRead](items=items, next_cursor=cursor))


@router.get(
    "/organizations/{organization_id}", response_model=OrganizationRead, tags=["organizations"]
)
async def get_organization(organization_id: uuid.UUID, call: CurrentCall) -> Response:
    conn, principal = call.conn, call.principal
    row = await service.get_organization(conn, principal=principal, organization_id=organization_id)
    return json_response(OrganizationRead.model_validate(row), version=row.version)


@router.patch(
    "/organizations/{organization_id}", response_model=OrganizationRead, tags=["organizations"]
)
async def update_organization(
    organization_id: uuid.UUID, body: OrganizationPatch, _: Admin, write: Write
) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.update_organization(
            conn, ctx=ctx, organization_id=organization_id, data=body, if_match=write.if_match
        )
        return Reply(OrganizationRead.model_validate(row), 200, row.version)

    return await write.run(action)


# --- users and API keys ---------------------------------------------------------------------


@router.post("/users", status_code=201, response_model=UserCreated, tags=["users"])
async def create_user(body: UserCreate, _: Admin, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        user = await service.create_user(conn, ctx=ctx, data=body)
        return Reply(user, 201, user.version, secret_fields=("api_key",))

    return await write.run(action)


@router.get("/users", response_model=Page[UserRead], tags=["users"])
async def list_users(
    call: CurrentCall,
    params: RecordPageDep,
    role: Annotated[list[Role], Query(max_length=5)] = [],  # noqa: B006 (FastAPI query list)
    organization_id: IdList = [],  # noqa: B006
    group_id: IdList = [],  # noqa: B006
) -> Response:
    conn, principal = call.conn, call.principal
    items, cursor = await service.list_users(
        conn,
        principal=principal,
        params=params,
        role=role,
        organization_id=organization_id,
        group_id=group_id,
    )
    views = [_user_view(user, principal) for user in items]
    return json_response({"items": views, "next_cursor": cursor})


def _seen_by(principal: Principal, record: BaseModel, internal: set[str]) -> dict[str, Any]:
    """A record as the caller may see it: customers without its internal fields."""
    return record.model_dump(mode="json", exclude=internal if principal.is_customer else None)


def _user_view(user: UserRead, principal: Principal) -> dict[str, Any]:
    """Customers do not see a user's groups (the support lines are internal)."""
    return _seen_by(principal, user, {"group_ids"})


@router.get("/users/{user_id}", response_model=UserRead, tags=["users"])
async def get_user(user_id: uuid.UUID, call: CurrentCall) -> Response:
    conn, principal = call.conn, call.principal
    user = await service.get_user(conn, principal=principal, user_id=user_id)
    return json_response(_user_view(user, principal), version=user.version)


@router.patch("/users/{user_id}", response_model=UserRead, tags=["users"])
async def update_user(user_id: uuid.UUID, body: UserPatch, _: Admin, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        user = await service.update_user(
            conn, ctx=ctx, user_id=user_id, data=body, if_match=write.if_match
        )
        return Reply(user, 200, user.version)

    return await _changing_principals(write, action)


@router.post(
    "/users/{user_id}/api-keys", status_code=201, response_model=ApiKeyCreated, tags=["users"]
)
async def create_api_key(user_id: uuid.UUID, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        key = await service.create_api_key(conn, ctx=ctx, user_id=user_id)
        created = ApiKeyCreated.model_validate(key)
        return Reply(created, 201, key.version, secret_fields=("api_key",))

    return await write.run(action)


@router.get("/users/{user_id}/api-keys", response_model=Page[ApiKeyRead], tags=["users"])
async def list_api_keys(user_id: uuid.UUID, call: CurrentCall, params: PageDep) -> Response:
    conn, principal = call.conn, call.principal
    items, cursor = await service.list_api_keys(
        conn, principal=principal, user_id=user_id, params=params
    )
    return json_response(Page[ApiKeyRead](items=items, next_cursor=cursor))


@router.delete("/users/{user_id}/api-keys/{key_id}", response_model=ApiKeyRead, tags=["users"])
async def revoke_api_key(user_id: uuid.UUID, key_id: uuid.UUID, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        key = await service.revoke_api_key(conn, ctx=ctx, user_id=user_id, key_id=key_id)
        return Reply(key, 200, key.version)

    return await _changing_principals(write, action)


async def _changing_principals(write: WriteContext, action: Action) -> Response:
    """A write to a user or a key: once it is committed, this process forgets who holds which
    key (other processes hear of it from PostgreSQL: app/identity/principals.py)."""
    principals: PrincipalCache = write.call.state.principals
    try:
        return await write.run(action)
    finally:  # also when the commit went through but its answer was lost
        principals.forget()


# --- groups ---------------------------------------------------------------------------------


@router.post("/groups", status_code=201, response_model=GroupRead, tags=["groups"])
async def create_group(body: GroupCreate, _: Admin, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.create_group(conn, ctx=ctx, data=body)
        return Reply(GroupRead.model_validate(row), 201, row.version)

    return await write.run(action)


@router.get("/groups", response_model=Page[GroupRead], tags=["groups"])
async def list_groups(call: Staff, params: RecordPageDep) -> Response:
    conn = call.conn
    rows, cursor = await service.group_store.page(conn, params)
    items = [GroupRead.model_validate(r) for r in rows]
    return json_response(Page[GroupRead](items=items, next_cursor=cursor))


@router.get("/groups/{group_id}", response_model=GroupRead, tags=["groups"])
async def get_group(group_id: uuid.UUID, call: Staff) -> Response:
    conn = call.conn
    row = await service.group_store.get(conn, group_id)
    return json_response(GroupRead.model_validate(row), version=row.version)


@router.patch("/groups/{group_id}", response_model=GroupRead, tags=["groups"])
async def update_group(group_id: uuid.UUID, body: GroupPatch, _: Admin, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.update_group(
            conn, ctx=ctx, group_id=group_id, data=body, if_match=write.if_match
        )
        return Reply(GroupRead.model_validate(row), 200, row.version)

    return await write.run(action)


# --- contacts -------------------------------------------------------------------------------


@router.post("/contacts", status_code=201, response_model=ContactRead, tags=["contacts"])
async def create_contact(body: ContactCreate, _: Manager, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.create_contact(conn, ctx=ctx, data=body)
        return Reply(ContactRead.model_validate(row), 201, row.version)

    return await write.run(action)


@router.get("/contacts", response_model=Page[ContactRead], tags=["contacts"])
async def list_contacts(
    call: CurrentCall,
    params: RecordPageDep,
    organization_id: IdList = [],  # noqa: B006
    email: Annotated[str | None, Query(max_length=254)] = None,
) -> Response:
    conn, principal = call.conn, call.principal
    conditions = service.contact_scope(principal)
    if organization_id:
        conditions.append(contacts.c.organization_id.in_(organization_id))
    if email is not None:
        conditions.append(contacts.c.email == email.lower())
    rows, cursor = await service.contact_store.page(conn, params, *conditions)
    items = [ContactRead.model_validate(r) for r in rows]
    return json_response(Page[ContactRead](items=items, next_cursor=cursor))


@router.get("/contacts/{contact_id}", response_model=ContactRead, tags=["contacts"])
async def get_contact(contact_id: uuid.UUID, call: CurrentCall) -> Response:
    conn, principal = call.conn, call.principal
    row = await service.contact_store.get(conn, contact_id, *service.contact_scope(principal))
    return json_response(ContactRead.model_validate(row), version=row.version)


@router.patch("/contacts/{contact_id}", response_model=ContactRead, tags=["contacts"])
async def update_contact(
    contact_id: uuid.UUID, body: ContactPatch, _: Manager, write: Write
) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.update_contact(
            conn, ctx=ctx, contact_id=contact_id, data=body, if_match=write.if_match
        )
        return Reply(ContactRead.model_validate(row), 200, row.version)

    return await write.run(action)


# --- services -------------------------------------------------------------------------------


@router.post("/services", status_code=201, response_model=ServiceRead, tags=["services"])
async def create_service(body: ServiceCreate, _: Admin, write: Write) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.create_service(conn, ctx=ctx, data=body)
        return Reply(ServiceRead.model_validate(row), 201, row.version)

    return await write.run(action)


def _service_view(row: Any, principal: Principal) -> dict[str, Any]:
    """Customers do not see a service's owner group (internal)."""
    return _seen_by(principal, ServiceRead.model_validate(row), {"owner_group_id"})


@router.get("/services", response_model=Page[ServiceRead], tags=["services"])
async def list_services(call: CurrentCall, params: RecordPageDep) -> Response:
    conn, principal = call.conn, call.principal
    rows, cursor = await service.service_store.page(conn, params)
    items = [_service_view(r, principal) for r in rows]
    return json_response({"items": items, "next_cursor": cursor})


@router.get("/services/{service_id}", response_model=ServiceRead, tags=["services"])
async def get_service(service_id: uuid.UUID, call: CurrentCall) -> Response:
    conn, principal = call.conn, call.principal
    row = await service.service_store.get(conn, service_id)
    return json_response(_service_view(row, principal), version=row.version)


@router.patch("/services/{service_id}", response_model=ServiceRead, tags=["services"])
async def update_service(
    service_id: uuid.UUID, body: ServicePatch, _: Admin, write: Write
) -> Response:
    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.update_service(
            conn, ctx=ctx, service_id=service_id, data=body, if_match=write.if_match
        )
        return Reply(ServiceRead.model_validate(row), 200, row.version)

    return await write.run(action)
