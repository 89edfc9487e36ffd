"""Incident use cases: one transaction each, rules from `lifecycle`, journal and change log."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.auth import Principal, Role
from app.core.changelog import Change
from app.core.concurrency import check_if_match
from app.core.context import Context
from app.core.errors import Forbidden, NotFound, Unprocessable
from app.core.ids import new_id
from app.core.pagination import Keyset, PageParams, integer_key, timestamp_key
from app.core.records import parse_uuid, update_record
from app.core.schemas import Page
from app.identity.models import groups, organizations, services
from app.identity.service import ensure_exists, ensure_staff_user
from app.incidents import lifecycle
from app.incidents.lifecycle import IncidentFacts, Plan, State, TransitionRequest, Via
from app.incidents.models import escalations, incidents
from app.incidents.schemas import (
    CUSTOMER_FORBIDDEN_ON_CREATE,
    PATCH_NULLABLE,
    CommentCreate,
    EscalationCreate,
    EscalationRead,
    IncidentCreate,
    IncidentPatch,
    IncidentPublic,
    IncidentRead,
    TransitionBody,
)
from app.itil.journal import JournalWriter
from app.itil.numbers import looks_like_number, next_number
from app.slm.priority import derive_priority, load_matrix

RECORD_TYPE = "incident"
# Fields SDMS keeps for itself: never answered, never journaled.
INTERNAL_FIELDS = frozenset({"responded_at", "eta_alert_at", "eta_alerted_for"})


# --- reading --------------------------------------------------------------------------------


def view(row: Row[Any], principal: Principal) -> IncidentPublic:
    """The incident as this caller may see it."""
    if principal.is_customer:
        return IncidentPublic.model_validate(row)
    return IncidentRead.model_validate(row)


def page_view(
    rows: Sequence[Row[Any]], principal: Principal, cursor: str | None
) -> Page[IncidentPublic] | Page[IncidentRead]:
    if principal.is_customer:
        return Page[IncidentPublic](
            items=[IncidentPublic.model_validate(r) for r in rows], next_cursor=cursor
        )
    return Page[IncidentRead](
        items=[IncidentRead.model_validate(r) for r in rows], next_cursor=cursor
    )


def admin_view(row: Row[Any]) -> dict[str, Any]:
    return IncidentRead.model_validate(row).model_dump(mode="json")


def tenancy(principal: Principal) -> list[ColumnElement[bool]]:
    if principal.is_customer:
        return [incidents.c.organization_id == principal.organization_id]
    return []


def _ref_condition(ref: str) -> ColumnElement[bool] | None:
    record_id = parse_uuid(ref)
    if record_id is not None:
        return incidents.c.id == record_id
    if looks_like_number(ref, "INC"):
        return incidents.c.number == ref.upper()
    return None


async def get_incident(
    conn: AsyncConnection, *, principal: Principal, ref: str, lock: bool = False
) -> Row[Any]:
    """An incident by id or number, if the caller may see it; 404 otherwise."""
    condition = _ref_condition(ref)
    row = None
    if condition is not None:
        stmt = select(incidents).where(condition, *tenancy(principal))
        if lock:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound(f"No incident {ref}.")
    return row


@dataclass(frozen=True, slots=True)
class IncidentFilters:
    state: Sequence[State] = ()
    priority: Sequence[int] = ()
    organization_id: Sequence[uuid.UUID] = ()
    assignee_id: Sequence[uuid.UUID] = ()
    group_id: Sequence[uuid.UUID] = ()
    service_id: Sequence[uuid.UUID] = ()
    region: Sequence[str] = ()
    request_type: Sequence[str] = ()
    channel: Sequence[str] = ()
    major: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    q: str | None = None

    def conditions(self, principal: Principal) -> list[ColumnElement[bool]]:
        if principal.is_customer and (self.assignee_id or self.group_id):
            raise Forbidden("Customers cannot filter by assignee_id or group_id.")
        c = incidents.c
        conditions = tenancy(principal)
        for column, values in (
            (c.state, [s.value for s in self.state]),
            (c.priority, self.priority),
            (c.organization_id, self.organization_id),
            (c.assignee_id, self.assignee_id),
            (c.group_id, self.group_id),
            (c.service_id, self.service_id),
            (c.region, [r.lower() for r in self.region]),
            (c.request_type, self.request_type),
            (c.channel, self.channel),
        ):
            if values:
                conditions.append(column.in_(list(values)))
        if self.major is not None:
            conditions.append(c.major.is_(self.major))
        if self.created_after is not None:
            conditions.append(c.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(c.created_at < self.created_before)
        if self.q:
            pattern = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            conditions.append(
                c.title.ilike(pattern, escape="\\") | c.description.ilike(pattern, escape="\\")
            )
        return conditions


SORT_KEYS = {
    "created_at": timestamp_key("created_at", incidents.c.created_at),
    "updated_at": timestamp_key("updated_at", incidents.c.updated_at),
    "priority": integer_key("priority", incidents.c.priority),
}


async def list_incidents(
    conn: AsyncConnection, *, principal: Principal, filters: IncidentFilters, params: PageParams
) -> tuple[Sequence[Row[Any]], str | None]:
    keyset = Keyset.choose(params.sort, SORT_KEYS, incidents.c.id, "-created_at")
    stmt = keyset.apply(select(incidents).where(*filters.conditions(principal)), params)
    rows = (await conn.execute(stmt)).all()
    return keyset.page(rows, params)


# --- creating -------------------------------------------------------------------------------


REFERENCES = frozenset({"organization_id", "service_id", "group_id", "assignee_id"})


async def _check_references(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    if "organization_id" in values:
        await ensure_exists(conn, organizations, values["organization_id"], "organization_id")
    if "service_id" in values:
        await ensure_exists(conn, services, values["service_id"], "service_id")
    if "group_id" in values:
        await ensure_exists(conn, groups, values["group_id"], "group_id")
    if "assignee_id" in values:
        await ensure_staff_user(conn, values["assignee_id"], "assignee_id")


async def create_incident(conn: AsyncConnection, *, ctx: Context, data: IncidentCreate) -> Row[Any]:
    principal, now = ctx.principal, ctx.now
    values = data.model_dump(exclude_unset=True)
    if principal.is_customer:
        sent = [f for f in CUSTOMER_FORBIDDEN_ON_CREATE if values.get(f) is not None]
        if sent:
            raise Unprocessable.field(("body", sent[0]), f"customers cannot set {sent[0]}")
        values["organization_id"] = principal.organization_id
    elif data.organization_id is None:
        raise Unprocessable.field(("body", "organization_id"), "organization_id is required")
    if data.opened_at is not None:
        if principal.role not in (Role.integration, Role.admin):
            raise Forbidden("Only integration callers may import incidents with opened_at.")
        if data.opened_at > now:
            raise Unprocessable.field(("body", "opened_at"), "opened_at cannot be in the future")
    references = {k: v for k, v in values.items() if k in REFERENCES and v is not None}
    if principal.is_customer:
        references.pop("organization_id")  # the caller's own, known to exist
    await _check_references(conn, references)
    impact, urgency = (1, 1) if data.major else (data.impact, data.urgency)
    matrix, _ = await load_matrix(conn)
    row_values = {
        **values,
        "id": new_id(),
        "number": await next_number(conn, "INC", ctx.region),
        "region": ctx.region,
        "description": data.description,
        "channel": data.channel,
        "impact": impact,
        "urgency": urgency,
        "priority": derive_priority(matrix, impact, urgency),
        "major": data.major,
        "request_type": data.request_type,
        "state": State.new,
        "escalation_level": 0,
        "reopen_count": 0,
        "opened_at": data.opened_at or now,
        "created_by_id": principal.author_id,
        "eta_alert_at": data.estimated_resolution_at,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    row: Row[Any] = (
        await conn.execute(insert(incidents).values(row_values).returning(incidents))
    ).one()
    journal = JournalWriter(RECORD_TYPE, row.id, principal.author_id, now)
    journal.field_changes({}, {"state": State.new})
    log = await journal.flush(conn)
    log.append(Change("incident", row.id, "incident.created", admin_view(row), row.version))
    await ctx.log_all(conn, log)
    return row


# --- changing -------------------------------------------------------------------------------


async def _apply(
    conn: AsyncConnection,
    ctx: Context,
    current: Row[Any],
    changes: Mapping[str, Any],
    *,
    event: str,
    note: str | None = None,
    journal: JournalWriter | None = None,
    author_id: uuid.UUID | None = None,
) -> Row[Any]:
    """Write the changes, journal every visible field change, and change-log the result."""
    if journal is None:
        journal = JournalWriter(RECORD_TYPE, current.id, author_id, ctx.now)
    row = (
        await update_record(conn, incidents, current, changes, now=ctx.now) if changes else current
    )
    visible = {k: v for k, v in changes.items() if k not in INTERNAL_FIELDS}
    journal.field_changes(current._mapping, visible, note=note)
    log = await journal.flush(conn)
    if changes:
        log.append(Change("incident", row.id, event, admin_view(row), row.version))
    await ctx.log_all(conn, log)
    return row


def _staff_response(current: Row[Any], principal: Principal, now: datetime) -> dict[str, Any]:
    """The first public comment by staff is the response (section 7)."""
    if principal.is_staff and current.responded_at is None:
        return {"responded_at": now}
    return {}


async def update_incident(
    conn: AsyncConnection, *, ctx: Context, ref: str, data: IncidentPatch, if_match: str | None
) -> Row[Any]:
    if ctx.principal.is_customer:
        raise Forbidden("Customers cannot change incidents; comment instead.")
    patch = data.model_dump(exclude_unset=True)
    for name, value in patch.items():
        if value is None and name not in PATCH_NULLABLE:
            raise Unprocessable.field(("body", name), f"{name} cannot be null")
    current = await get_incident(conn, principal=ctx.principal, ref=ref, lock=True)
    check_if_match(if_match, current.version)
    facts = IncidentFacts.of(current)
    matrix, _ = await load_matrix(conn)
    changes = lifecycle.plan_patch(facts, current._mapping, patch, matrix=matrix)
    await _check_references(
        conn, {k: v for k, v in changes.items() if k in REFERENCES and v is not None}
    )
    return await _apply(
        conn, ctx, current, changes, event="incident.updated", author_id=ctx.principal.author_id
    )


async def transition(
    conn: AsyncConnection, *, ctx: Context, ref: str, body: TransitionBody, if_match: str | None
) -> Row[Any]:
    if ctx.principal.is_customer:
        raise Forbidden(
            "Customers confirm or reject a resolution with /confirm and /reject; "
            "other moves are made by the support team."
        )
    current = await get_incident(conn, principal=ctx.principal, ref=ref, lock=True)
    check_if_match(if_match, current.version)
    request = TransitionRequest(**body.model_dump())
    plan = lifecycle.plan_transition(
        IncidentFacts.of(current),
        request,
        via=Via.agent,
        actor_id=ctx.principal.author_id,
        now=ctx.now,
    )
    if "assignee_id" in plan.changes and plan.changes["assignee_id"] != current.assignee_id:
        await ensure_staff_user(conn, plan.changes["assignee_id"], "assignee_id")
    return await apply_plan(conn, ctx, current, plan)


async def apply_plan(
    conn: AsyncConnection, ctx: Context, current: Row[Any], plan: Plan
) -> Row[Any]:
    author = ctx.principal.author_id
    journal = JournalWriter(RECORD_TYPE, current.id, author, ctx.now)
    changes = dict(plan.changes)
    if plan.comment:
        journal.comment(plan.comment, public=plan.comment_public)
        if plan.comment_public:
            changes.update(_staff_response(current, ctx.principal, ctx.now))
    return await _apply(
        conn,
        ctx,
        current,
        changes,
        event="incident.state_changed",
        note=plan.note,
        journal=journal,
    )


async def _customer_move(
    conn: AsyncConnection, ctx: Context, ref: str, request: TransitionRequest, via: Via
) -> Row[Any]:
    if not ctx.principal.is_customer:
        raise Forbidden(
            "Only the customer confirms or rejects a resolution; staff use /transitions "
            "(closing with confirmation_note, reopening with reason)."
        )
    current = await get_incident(conn, principal=ctx.principal, ref=ref, lock=True)
    plan = lifecycle.plan_transition(
        IncidentFacts.of(current), request, via=via, actor_id=None, now=ctx.now
    )
    return await apply_plan(conn, ctx, current, plan)


async def confirm(
    conn: AsyncConnection, *, ctx: Context, ref: str, comment: str | None
) -> Row[Any]:
    request = TransitionRequest(
        to=State.closed,
        comment=comment,
        comment_public=True,
        reason="Resolution confirmed by the customer.",
    )
    return await _customer_move(conn, ctx, ref, request, Via.customer_confirm)


async def reject(conn: AsyncConnection, *, ctx: Context, ref: str, reason: str) -> Row[Any]:
    request = TransitionRequest(to=State.in_progress, reason=reason)
    return await _customer_move(conn, ctx, ref, request, Via.customer_reject)


async def add_comment(
    conn: AsyncConnection, *, ctx: Context, ref: str, data: CommentCreate
) -> tuple[Row[Any], dict[str, Any]]:
    """Add a comment; answers the journal entry. A customer's reply resumes a waiting incident."""
    principal = ctx.principal
    current = await get_incident(conn, principal=principal, ref=ref, lock=True)
    facts = IncidentFacts.of(current)
    if principal.is_customer:
        if data.public is False:
            raise Forbidden("Customers can only write public comments.")
        public = True
        lifecycle.refuse_if_final(facts, "commented on by the customer")
    else:
        public = bool(data.public)
    journal = JournalWriter(RECORD_TYPE, current.id, principal.author_id, ctx.now)
    journal.comment(data.body, public=public)
    entry = dict(journal.rows[0])
    changes: dict[str, Any] = {}
    note = None
    event = "incident.updated"
    if public and principal.is_staff:
        changes.update(_staff_response(current, principal, ctx.now))
    if principal.is_customer:
        reply = lifecycle.plan_customer_reply(facts)
        if reply is not None:
            changes.update(reply.changes)
            note, event = reply.note, "incident.state_changed"
    row = await _apply(conn, ctx, current, changes, event=event, note=note, journal=journal)
    return row, entry


async def escalate(
    conn: AsyncConnection, *, ctx: Context, ref: str, data: EscalationCreate
) -> tuple[Row[Any], EscalationRead]:
    current = await get_incident(conn, principal=ctx.principal, ref=ref, lock=True)
    level = lifecycle.plan_escalation(IncidentFacts.of(current))
    return await _record_escalation(
        conn, ctx, current, level=level, reason=data.reason, note=data.note
    )


async def _record_escalation(
    conn: AsyncConnection,
    ctx: Context,
    current: Row[Any],
    *,
    level: int,
    reason: str,
    note: str | None,
) -> tuple[Row[Any], EscalationRead]:
    author = ctx.principal.author_id
    escalation = (
        await conn.execute(
            insert(escalations)
            .values(
                id=new_id(),
                incident_id=current.id,
                escalation_level=level,
                reason=reason,
                note=note,
                created_by_id=author,
                created_at=ctx.now,
            )
            .returning(escalations)
        )
    ).one()
    read = EscalationRead.model_validate(escalation)
    row = await _apply(
        conn,
        ctx,
        current,
        {"escalation_level": level},
        event="incident.escalated",
        note=f"{reason}: {note}" if note else reason,
        author_id=author,
    )
    await ctx.log_changes(
        conn, Change("escalation", read.id, "escalation.created", read.model_dump(mode="json"))
    )
    return row, read


async def list_escalations(
    conn: AsyncConnection, *, principal: Principal, ref: str
) -> list[EscalationRead]:
    incident = await get_incident(conn, principal=principal, ref=ref)
    rows = await conn.execute(
        select(escalations)
        .where(escalations.c.incident_id == incident.id)
        .order_by(escalations.c.created_at, escalations.c.id)
    )
    return [EscalationRead.model_validate(r) for r in rows]
