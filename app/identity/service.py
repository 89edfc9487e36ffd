"""Identity and tenancy use cases: organizations, users and keys, groups, contacts, services.

Tenancy rule: a customer sees only its own organization's records; anything else is a 404.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, delete, false, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.auth import STAFF, Principal, Role, generate_api_key, hash_api_key
from app.core.changelog import Change
from app.core.concurrency import check_if_match
from app.core.context import Context
from app.core.errors import Forbidden, NotFound, Unprocessable
from app.core.ids import new_id
from app.core.pagination import Keyset, PageParams, timestamp_key
from app.core.records import RecordStore, insert_record, update_record
from app.core.sql import Query
from app.identity.models import (
    api_keys,
    contacts,
    groups,
    organizations,
    services,
    user_groups,
    users,
)
from app.identity.principals import PrincipalCache
from app.identity.schemas import (
    ApiKeyRead,
    ContactCreate,
    ContactPatch,
    ContactRead,
    GroupCreate,
    GroupPatch,
    GroupRead,
    IssuedApiKey,
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

organization_store = RecordStore(
    organizations, entity="organization", view=OrganizationRead.model_validate, unique=["code"]
)
group_store = RecordStore(groups, entity="group", view=GroupRead.model_validate, unique=["name"])
contact_store = RecordStore(
    contacts, entity="contact", view=ContactRead.model_validate, unique=["email"]
)
service_store = RecordStore(
    services, entity="service", view=ServiceRead.model_validate, unique=["code"]
)
# Users are logged with their group ids (see `_log_user`); the store checks e-mails and lists.
user_store = RecordStore(users, entity="user", view=UserRead.model_validate, unique=["email"])


# --- authentication -------------------------------------------------------------------------


# Every request runs it: a hot-path query (app/core/sql.py).
_PRINCIPAL_BY_KEY = Query(
    select(
        api_keys.c.id,
        users.c.id.label("user_id"),
        users.c.role,
        users.c.organization_id,
        users.c.name,
    )
    .join(users, users.c.id == api_keys.c.user_id)
    .where(
        api_keys.c.key_hash == bindparam("key_hash"),
        api_keys.c.revoked_at.is_(None),
        users.c.active.is_(True),
    )
)


async def principal_for_key(
    conn: AsyncConnection, key: str, cache: PrincipalCache
) -> Principal | None:
    """Who holds this key (None: unknown, revoked, or its user disabled), from the cache while
    it is trusted (app/identity/principals.py), else from the database."""
    key_hash = hash_api_key(key)
    principal = cache.get(key_hash)
    if principal is not None:
        return principal
    generation = cache.generation
    row = await _PRINCIPAL_BY_KEY.first(conn, {"key_hash": key_hash})
    if row is None:
        return None
    principal = Principal(row.user_id, Role(row.role), row.organization_id, row.name, row.id)
    cache.put(key_hash, principal, generation)
    return principal


# --- tenancy --------------------------------------------------------------------------------


def organization_scope(principal: Principal, column: Any) -> list[ColumnElement[bool]]:
    """Conditions that confine a query to what the principal's organization may see."""
    if not principal.is_customer:
        return []
    if principal.organization_id is None:
        return [false()]
    return [column == principal.organization_id]


# --- references -----------------------------------------------------------------------------


async def ensure_exists(
    conn: AsyncConnection, table: Any, record_id: uuid.UUID | None, field: str
) -> Row[Any] | None:
    """The referenced row, or a 422 naming the field when it does not exist."""
    if record_id is None:
        return None
    row = (await conn.execute(select(table).where(table.c.id == record_id))).first()
    if row is None:
        raise Unprocessable.field(("body", field), f"{field} {record_id} does not exist")
    return row


async def ensure_staff_user(conn: AsyncConnection, user_id: uuid.UUID | None, field: str) -> None:
    row = await ensure_exists(conn, users, user_id, field)
    if row is not None and (Role(row.role) not in STAFF or not row.active):
        raise Unprocessable.field(("body", field), f"{field} must be an active staff user")


# --- organizations --------------------------------------------------------------------------


async def create_organization(
    conn: AsyncConnection, *, ctx: Context, data: OrganizationCreate
) -> Row[Any]:
    await ensure_staff_user(conn, data.account_manager_id, "account_manager_id")
    return await organization_store.create(conn, ctx, data.model_dump())


async def update_organization(
    conn: AsyncConnection,
    *,
    ctx: Context,
    organization_id: uuid.UUID,
    data: OrganizationPatch,
    if_match: str | None,
) -> Row[Any]:
    changes = _non_null_changes(data, nullable={"account_manager_id"})
    if "account_manager_id" in changes:
        await ensure_staff_user(conn, changes["account_manager_id"], "account_manager_id")
    current = await organization_store.get(conn, organization_id, lock=True)
    return await organization_store.update(conn, ctx, current, changes, if_match=if_match)


async def get_organization(
    conn: AsyncConnection, *, principal: Principal, organization_id: uuid.UUID
) -> Row[Any]:
    return await organization_store.get(
        conn, organization_id, *organization_scope(principal, organizations.c.id)
    )


async def list_organizations(
    conn: AsyncConnection, *, principal: Principal, params: PageParams
) -> tuple[Sequence[Row[Any]], str | None]:
    return await organization_store.page(
        conn, params, *organization_scope(principal, organizations.c.id)
    )


# --- users and API keys ---------------------------------------------------------------------


async def group_ids_of(
    conn: AsyncConnection, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    ids = list(user_ids)
    result: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    if not ids:
        return result
    stmt = (
        select(user_groups.c.user_id, user_groups.c.group_id)
        .where(user_groups.c.user_id.in_(ids))
        .order_by(user_groups.c.group_id)
    )
    for row in await conn.execute(stmt):
        result[row.user_id].append(row.group_id)
    return result


def user_view(row: Row[Any], group_ids: list[uuid.UUID]) -> UserRead:
    return UserRead.model_validate({**row._mapping, "group_ids": group_ids})


async def _check_user_fields(
    conn: AsyncConnection,
    *,
    role: Role,
    organization_id: uuid.UUID | None,
    group_ids: Sequence[uuid.UUID],
) -> None:
    if role is Role.customer and organization_id is None:
        raise Unprocessable.field(
            ("body", "organization_id"), "a customer must belong to an organization"
        )
    await ensure_exists(conn, organizations, organization_id, "organization_id")
    if group_ids:
        if role is Role.customer:
            raise Unprocessable.field(
                ("body", "group_ids"), "groups are support lines; customers cannot join them"
            )
        found = set(
            (await conn.execute(select(groups.c.id).where(groups.c.id.in_(group_ids)))).scalars()
        )
        missing = [str(g) for g in group_ids if g not in found]
        if missing:
            raise Unprocessable.field(
                ("body", "group_ids"), f"unknown groups: {', '.join(missing)}"
            )


async def _set_groups(
    conn: AsyncConnection, user_id: uuid.UUID, group_ids: Sequence[uuid.UUID]
) -> None:
    await conn.execute(delete(user_groups).where(user_groups.c.user_id == user_id))
    unique_ids = list(dict.fromkeys(group_ids))
    if unique_ids:
        await conn.execute(
            insert(user_groups), [{"user_id": user_id, "group_id": g} for g in unique_ids]
        )


async def _issue_key(conn: AsyncConnection, ctx: Context, user_id: uuid.UUID) -> IssuedApiKey:
    key = generate_api_key()
    row = (
        await conn.execute(
            insert(api_keys)
            .values(
                id=new_id(),
                user_id=user_id,
                key_hash=hash_api_key(key),
                prefix=key[:12],
                created_at=ctx.now,
            )
            .returning(api_keys)
        )
    ).one()
    await ctx.log_changes(
        conn,
        Change(
            "api_key",
            row.id,
            "api_key.created",
            ApiKeyRead.model_validate(row).model_dump(mode="json"),
            row.version,
        ),
    )
    return IssuedApiKey(
        id=row.id, api_key=key, prefix=row.prefix, created_at=row.created_at, version=row.version
    )


async def create_user(conn: AsyncConnection, *, ctx: Context, data: UserCreate) -> UserCreated:
    await _check_user_fields(
        conn, role=data.role, organization_id=data.organization_id, group_ids=data.group_ids
    )
    await user_store.check_unique(conn, {"email": data.email})
    values = data.model_dump(exclude={"group_ids"}) | {"active": True}
    row = await _insert_user(conn, ctx, values)
    await _set_groups(conn, row.id, data.group_ids)
    view = user_view(row, list(dict.fromkeys(data.group_ids)))
    await _log_user(conn, ctx, view, "created")
    key = await _issue_key(conn, ctx, row.id)
    return UserCreated(**view.model_dump(), api_key=key.api_key, api_key_id=key.id)


async def _insert_user(conn: AsyncConnection, ctx: Context, values: dict[str, Any]) -> Row[Any]:
    return await insert_record(conn, users, values, now=ctx.now)


async def _log_user(conn: AsyncConnection, ctx: Context, view: UserRead, event: str) -> None:
    await ctx.log_changes(
        conn, Change("user", view.id, f"user.{event}", view.model_dump(mode="json"), view.version)
    )


async def create_service_account(
    conn: AsyncConnection,
    *,
    ctx: Context,
    name: str,
    role: Role,
    organization_id: uuid.UUID | None = None,
) -> IssuedApiKey:
    """A user without e-mail and its first key (the `sdms create-api-key` command)."""
    await _check_user_fields(conn, role=role, organization_id=organization_id, group_ids=[])
    row = await _insert_user(
        conn,
        ctx,
        {
            "email": None,
            "name": name,
            "role": role,
            "organization_id": organization_id,
            "active": True,
        },
    )
    await _log_user(conn, ctx, user_view(row, []), "created")
    return await _issue_key(conn, ctx, row.id)


async def update_user(
    conn: AsyncConnection,
    *,
    ctx: Context,
    user_id: uuid.UUID,
    data: UserPatch,
    if_match: str | None,
) -> UserRead:
    current = await user_store.get(conn, user_id, lock=True)
    check_if_match(if_match, current.version)
    changes = _non_null_changes(data, nullable={"organization_id"})
    group_ids = changes.pop("group_ids", None)
    current_groups = (await group_ids_of(conn, [user_id]))[user_id]
    role = Role(changes.get("role", current.role))
    organization_id = changes.get("organization_id", current.organization_id)
    await _check_user_fields(
        conn,
        role=role,
        organization_id=organization_id,
        group_ids=group_ids if group_ids is not None else current_groups,
    )
    if "email" in changes:
        await user_store.check_unique(conn, {"email": changes["email"]}, exclude=user_id)
    changes = {k: v for k, v in changes.items() if getattr(current, k) != v}
    groups_changed = group_ids is not None and set(group_ids) != set(current_groups)
    if not changes and not groups_changed:
        return user_view(current, current_groups)
    row = await update_record(conn, users, current, changes, now=ctx.now)
    if groups_changed:
        assert group_ids is not None
        await _set_groups(conn, user_id, group_ids)
        current_groups = sorted(dict.fromkeys(group_ids))
    view = user_view(row, current_groups)
    await _log_user(conn, ctx, view, "updated")
    return view


def _customer_user_scope(principal: Principal) -> list[ColumnElement[bool]]:
    return organization_scope(principal, users.c.organization_id)


async def get_user(conn: AsyncConnection, *, principal: Principal, user_id: uuid.UUID) -> UserRead:
    row = (
        await conn.execute(
            select(users).where(users.c.id == user_id, *_customer_user_scope(principal))
        )
    ).first()
    if row is None:
        raise NotFound(f"No user {user_id}.")
    return user_view(row, (await group_ids_of(conn, [row.id]))[row.id])


async def list_users(
    conn: AsyncConnection,
    *,
    principal: Principal,
    params: PageParams,
    role: Sequence[Role] = (),
    organization_id: Sequence[uuid.UUID] = (),
    group_id: Sequence[uuid.UUID] = (),
) -> tuple[list[UserRead], str | None]:
    if group_id and principal.is_customer:  # memberships are internal: not even by filter
        raise Forbidden("Customers cannot filter users by group_id.")
    conditions = _customer_user_scope(principal)
    if role:
        conditions.append(users.c.role.in_([r.value for r in role]))
    if organization_id:
        conditions.append(users.c.organization_id.in_(organization_id))
    if group_id:
        conditions.append(
            users.c.id.in_(
                select(user_groups.c.user_id).where(user_groups.c.group_id.in_(group_id))
            )
        )
    rows, cursor = await user_store.page(conn, params, *conditions)
    memberships = await group_ids_of(conn, [r.id for r in rows])
    return [user_view(r, memberships[r.id]) for r in rows], cursor


async def me(conn: AsyncConnection, *, principal: Principal) -> tuple[Me, int | None]:
    """Who the caller is, and the version of its user record (None: the built-in admin, which
    has none)."""
    organization = None
    if principal.organization_id is not None:
        org_row = await organization_store.get(conn, principal.organization_id)
        organization = OrganizationRead.model_validate(org_row)
    if principal.is_bootstrap:
        bootstrap = Me(
            id=principal.user_id,
            email=None,
            name=principal.name,
            role=principal.role,
            organization_id=None,
            organization=None,
            group_ids=[],
        )
        return bootstrap, None
    user = await get_user(conn, principal=principal, user_id=principal.user_id)
    me = Me(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        organization_id=user.organization_id,
        organization=organization,
        group_ids=user.group_ids,
    )
    return me, user.version


def _may_manage_keys(principal: Principal, user_id: uuid.UUID) -> bool:
    return principal.role is Role.admin or principal.user_id == user_id


async def _key_owner(conn: AsyncConnection, principal: Principal, user_id: uuid.UUID) -> Row[Any]:
    if not _may_manage_keys(principal, user_id):
        if principal.is_customer:
            # A customer must not learn whether another user exists.
            await get_user(conn, principal=principal, user_id=user_id)
        raise Forbidden("Only an admin or the user themself can manage a user's API keys.")
    row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound(f"No user {user_id}.")
    return row


async def create_api_key(
    conn: AsyncConnection, *, ctx: Context, user_id: uuid.UUID
) -> IssuedApiKey:
    owner = await _key_owner(conn, ctx.principal, user_id)
    if not owner.active:
        raise Unprocessable("The user is disabled; enable it before issuing keys.")
    return await _issue_key(conn, ctx, user_id)


_API_KEY_ORDER = {"created_at": timestamp_key("created_at", api_keys.c.created_at)}


async def list_api_keys(
    conn: AsyncConnection, *, principal: Principal, user_id: uuid.UUID, params: PageParams
) -> tuple[list[ApiKeyRead], str | None]:
    """A user's keys, a page at a time like every list (newest first by default)."""
    await _key_owner(conn, principal, user_id)
    keyset = Keyset.choose(
        params.sort, _API_KEY_ORDER, api_keys.c.id, "-created_at", within=user_id
    )
    stmt = keyset.apply(select(api_keys).where(api_keys.c.user_id == user_id), params)
    rows, cursor = keyset.page((await conn.execute(stmt)).all(), params)
    return [ApiKeyRead.model_validate(r) for r in rows], cursor


async def revoke_api_key(
    conn: AsyncConnection, *, ctx: Context, user_id: uuid.UUID, key_id: uuid.UUID
) -> ApiKeyRead:
    await _key_owner(conn, ctx.principal, user_id)
    this_key = (api_keys.c.id == key_id, api_keys.c.user_id == user_id)
    revoked = (
        await conn.execute(
            update(api_keys)
            .where(*this_key, api_keys.c.revoked_at.is_(None))  # also when revokes race
            .values(revoked_at=ctx.now, version=api_keys.c.version + 1)
            .returning(api_keys)
        )
    ).first()
    if revoked is None:  # no such key, or revoked already: revoking again changes nothing
        row = (await conn.execute(select(api_keys).where(*this_key))).first()
        if row is None:
            raise NotFound(f"No API key {key_id} of user {user_id}.")
        return ApiKeyRead.model_validate(row)
    view = ApiKeyRead.model_validate(revoked)
    await ctx.log_changes(
        conn,
        Change("api_key", view.id, "api_key.revoked", view.model_dump(mode="json"), view.version),
    )
    return view


# --- groups, contacts, services -------------------------------------------------------------


async def create_group(conn: AsyncConnection, *, ctx: Context, data: GroupCreate) -> Row[Any]:
    return await group_store.create(conn, ctx, data.model_dump())


async def update_group(
    conn: AsyncConnection,
    *,
    ctx: Context,
    group_id: uuid.UUID,
    data: GroupPatch,
    if_match: str | None,
) -> Row[Any]:
    current = await group_store.get(conn, group_id, lock=True)
    changes = _non_null_changes(data, nullable={"description"})
    return await group_store.update(conn, ctx, current, changes, if_match=if_match)


async def create_contact(conn: AsyncConnection, *, ctx: Context, data: ContactCreate) -> Row[Any]:
    await ensure_exists(conn, organizations, data.organization_id, "organization_id")
    return await contact_store.create(conn, ctx, data.model_dump())


async def update_contact(
    conn: AsyncConnection,
    *,
    ctx: Context,
    contact_id: uuid.UUID,
    data: ContactPatch,
    if_match: str | None,
) -> Row[Any]:
    current = await contact_store.get(conn, contact_id, lock=True)
    changes = _non_null_changes(data, nullable={"phone"})
    return await contact_store.update(conn, ctx, current, changes, if_match=if_match)


def contact_scope(principal: Principal) -> list[ColumnElement[bool]]:
    return organization_scope(principal, contacts.c.organization_id)


async def create_service(conn: AsyncConnection, *, ctx: Context, data: ServiceCreate) -> Row[Any]:
    await ensure_exists(conn, groups, data.owner_group_id, "owner_group_id")
    return await service_store.create(conn, ctx, data.model_dump())


async def update_service(
    conn: AsyncConnection,
    *,
    ctx: Context,
    service_id: uuid.UUID,
    data: ServicePatch,
    if_match: str | None,
) -> Row[Any]:
    changes = _non_null_changes(data, nullable={"owner_group_id"})
    if changes.get("owner_group_id") is not None:
        await ensure_exists(conn, groups, changes["owner_group_id"], "owner_group_id")
    current = await service_store.get(conn, service_id, lock=True)
    return await service_store.update(conn, ctx, current, changes, if_match=if_match)


def _non_null_changes(data: Any, *, nullable: set[str]) -> dict[str, Any]:
    """The fields a PATCH sent; `null` clears a field only where the field may be empty."""
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None and name not in nullable:
            raise Unprocessable.field(("body", name), f"{name} cannot be null")
    return changes
