"""Incident use cases: one transaction each, rules from `lifecycle`, journal and change log."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, Select, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import versions
from app.core.auth import Principal, Role
from app.core.changelog import Change
from app.core.concurrency import check_if_match
from app.core.context import Context
from app.core.db import Bound
from app.core.errors import Forbidden, NotFound, Unavailable, Unprocessable
from app.core.ids import new_id
from app.core.pagination import Keyset, PageParams, integer_key, timestamp_key
from app.core.records import parse_uuid, update_into
from app.core.sql import Batch, DriverError, Query, as_dict
from app.core.sql import Row as SqlRow
from app.identity.models import groups, organizations, services
from app.identity.service import ensure_exists, ensure_staff_user
from app.incidents import lifecycle
from app.incidents.filters import IncidentFilters
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
from app.itil.numbers import drawn_number, looks_like_number, next_number_and_version, not_drawn
from app.slm import config as slm_config
from app.slm import service as slm
from app.slm.service import ClockView

RECORD_TYPE = "incident"
_INSERT_INCIDENT = Query(insert(incidents))
# On PostgreSQL a new incident's number is drawn by its write, which writes only while the
# cached SLM configuration is current (app/core/versions.py): no round trip before it.
_DRAWN_NUMBER = drawn_number("INC", versions.unchanged(slm_config.TOPIC))
_INSERT_INCIDENT_DRAWN = Query(insert(incidents), row_values={"number": _DRAWN_NUMBER.value})
# What a new incident's row holds beyond the values it is created with.
_EMPTY_INCIDENT = {str(column.name): None for column in incidents.columns}
# Fields SDMS keeps for itself: never answered, never journaled.
INTERNAL_FIELDS = frozenset({"responded_at", "eta_alert_at", "eta_alerted_for"})
# The row's copy of its SLA clocks (app/slm/models.py): shown as `sla`, never journaled.
CLOCK_FIELDS = frozenset(slm.SHOWN_COLUMNS)


# --- reading --------------------------------------------------------------------------------


# The fields of IncidentRead / IncidentPublic, read straight from a row: responses are built
# from rows without a model validation per incident (a page has fifty). tests/incidents check
# that the result is what the models would answer.
STAFF_FIELDS = tuple(name for name in IncidentRead.model_fields if name != "sla")
PUBLIC_FIELDS = tuple(name for name in IncidentPublic.model_fields if name != "sla")
# A view is the row as a dict (one C call) less the columns it does not show.
_COLUMNS = frozenset(column.name for column in incidents.columns)
assert _COLUMNS.issuperset(STAFF_FIELDS), "every field of a view is a column"
STAFF_HIDDEN = tuple(sorted(_COLUMNS - set(STAFF_FIELDS)))
assert set(STAFF_HIDDEN) == INTERNAL_FIELDS | CLOCK_FIELDS, "staff see every other column"
PUBLIC_HIDDEN = tuple(sorted(_COLUMNS - set(PUBLIC_FIELDS)))


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is slower (pages of 50)
class Incident:
    """An incident record with its SLA clocks as of one instant."""

    row: Any  # a row of `incidents`: SQLAlchemy's, or app.core.sql.Row (attributes, _mapping)
    sla: list[ClockView]

    @property
    def version(self) -> int:
        return int(self.row.version)

    def view(self, principal: Principal) -> dict[str, Any]:
        """The incident as this caller may see it: customers get no internal fields."""
        return self._data(PUBLIC_HIDDEN if principal.is_customer else STAFF_HIDDEN)

    def admin_data(self) -> dict[str, Any]:
        """The record as an admin GET answers it: what the change log keeps."""
        return self._data(STAFF_HIDDEN)

    def _data(self, hidden: tuple[str, ...]) -> dict[str, Any]:
        data = as_dict(self.row._mapping)
        for name in hidden:
            data.pop(name, None)  # a list's rows come without the internal fields
        data["sla"] = self.sla
        return data


async def with_clocks(conn: AsyncConnection, row: Any, now: datetime) -> Incident:
    """The incident of a row of `incidents` (its clock columns give its `sla`)."""
    return Incident(row, (await slm.sla_of(conn, [slm.shown_values(row._mapping)], now))[0])


def _incident_by(column: str, *, customer: bool, lock: bool) -> Select[Any]:
    stmt = select(incidents).where(incidents.c[column] == bindparam("ref"))
    if customer:
        stmt = stmt.where(incidents.c.organization_id == bindparam("organization_id"))
    return stmt.with_for_update() if lock else stmt


# Every variant of "one incident by id or number": hot-path queries (app/core/sql.py).
_INCIDENT_BY = {
    (column, customer, lock): Query(_incident_by(column, customer=customer, lock=lock))
    for column in ("id", "number")
    for customer in (False, True)
    for lock in (False, True)
}


def _reference(ref: str) -> tuple[str, Any]:
    """The column an id or a number names, and its value; 404 for anything else."""
    record_id = parse_uuid(ref)
    if record_id is not None:
        return "id", record_id
    if looks_like_number(ref, "INC"):
        return "number", ref.upper()
    raise NotFound(f"No incident {ref}.")


log = logging.getLogger("sdms.incidents")

# A read that met clocks being moved (slm.ClocksMoved) is made again, this many times in all.
_READS = 3
T = TypeVar("T")


async def _despite_moving_clocks(what: str, read: Callable[[], Awaitable[T]]) -> T:
    """`read` (incidents with their clocks), made again when it met their clocks being moved
    by a rebuild or re-target (`slm.ClocksMoved`); a 503 after `_READS` tries."""
    for _ in range(_READS):
        try:
            return await read()
        except slm.ClocksMoved as exc:
            moved = exc
    log.warning("%s: %s, %d reads in a row", what, moved, _READS)
    raise Unavailable("SLA clocks are being recomputed; try again shortly.") from moved


async def read_incident(
    conn: AsyncConnection, *, principal: Principal, ref: str, now: datetime
) -> Incident:
    """An incident with its SLA clocks, in one statement; 404 if the caller may not see it."""

    async def read() -> Incident:
        return await with_clocks(conn, await get_incident(conn, principal=principal, ref=ref), now)

    return await _despite_moving_clocks(f"incident {ref}", read)


async def get_incident(
    conn: AsyncConnection, *, principal: Principal, ref: str, lock: bool = False
) -> Row[Any]:
    """An incident by id or number, if the caller may see it; 404 otherwise."""
    column, value = _reference(ref)
    query = _INCIDENT_BY[column, principal.is_customer, lock]
    row: Row[Any] | None = await query.first(
        conn, {"ref": value, "organization_id": principal.organization_id}
    )
    if row is None:
        raise NotFound(f"No incident {ref}.")
    return row


async def _locked(conn: AsyncConnection, ctx: Context, ref: str) -> tuple[Row[Any], Context]:
    """The incident, locked for a write, and the write's context timed once it holds the lock:
    writes that waited for one another are journaled, and move the clocks, in the order they
    were made (`Context.after_lock`)."""
    current = await get_incident(conn, principal=ctx.principal, ref=ref, lock=True)
    return current, ctx.after_lock(current.updated_at)


SORT_KEYS = {
    "created_at": timestamp_key("created_at", incidents.c.created_at),
    "updated_at": timestamp_key("updated_at", incidents.c.updated_at),
    "priority": integer_key("priority", incidents.c.priority),
}


_list_queries: dict[tuple[Any, ...], Query] = {}
# A page reads what its views show, in their order (the public fields are the first of the
# staff's), then the clock columns: an incident's view is its first values zipped with the
# names of its fields, and its `sla` comes from the rest (fifty rows a page).
assert STAFF_FIELDS[: len(PUBLIC_FIELDS)] == PUBLIC_FIELDS
_LISTED = tuple(incidents.c[name] for name in (*STAFF_FIELDS, *slm.SHOWN_COLUMNS))
_CLOCKS_LISTED_AT = len(STAFF_FIELDS)


def _list_query(keyset: Keyset, params: PageParams, bound: Bound, dialect: str) -> Query:
    """The list statement for these filters' shape: compiled once per shape (a hot path)."""
    keyset.bind(params, bound)
    shape = (dialect, *bound.shape)
    query = _list_queries.get(shape)
    if query is None:
        if len(_list_queries) > 512:  # shapes are few; this only bounds a pathological mix
            _list_queries.clear()
        query = _list_queries[shape] = Query(keyset.ordered(select(*_LISTED), bound))
    return query


async def list_incidents(
    conn: AsyncConnection,
    *,
    principal: Principal,
    filters: IncidentFilters,
    params: PageParams,
    now: datetime,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of incidents as this caller may see them, and the cursor of the next."""
    keyset = Keyset.choose(params.sort, SORT_KEYS, incidents.c.id, "-created_at")
    bound = filters.bind(principal, conn.dialect.name)
    query = _list_query(keyset, params, bound, conn.dialect.name)

    async def read() -> tuple[list[tuple[Any, ...]], str | None, list[list[ClockView]]]:
        rows, cursor = keyset.page(await query.all(conn, bound.params), params)
        values = [tuple(row) for row in rows]
        return values, cursor, await slm.sla_of(conn, [v[_CLOCKS_LISTED_AT:] for v in values], now)

    values, cursor, sla = await _despite_moving_clocks("incident list", read)
    names = PUBLIC_FIELDS if principal.is_customer else STAFF_FIELDS
    items = []
    for shown, clocks in zip(values, sla, strict=True):
        view = dict(zip(names, shown, strict=False))  # the first len(names) values
        view["sla"] = clocks
        items.append(view)
    return items, cursor


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


async def create_incident(conn: AsyncConnection, *, ctx: Context, data: IncidentCreate) -> Incident:
    """Reads, then every write in one `Batch`: one statement on PostgreSQL, which the router
    relies on to run it without a transaction of its own (`WriteContext.run(one_statement)`).
    Keep it so: a second writing statement here needs that flag dropped.

    On PostgreSQL that statement also draws the number, and writes only if the SLM
    configuration it was computed with is still current (else `versions.Stale`, and the
    router's write is done again). Elsewhere the number and the configuration's version are
    read first."""
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
    drawn = conn.dialect.name == "postgresql"
    if drawn:  # the write draws the number, guarded by the configuration's version
        config = slm_config.cached(conn) or await slm_config.current(conn)
        number = None
    else:  # the number and the version of the SLM configuration
        number, version = await next_number_and_version(conn, "INC", ctx.region, slm_config.TOPIC)
        config = await slm_config.current(conn, version)
    row_values = {
        **values,
        "id": new_id(),
        "region": ctx.region,
        "description": data.description,
        "channel": data.channel,
        "impact": impact,
        "urgency": urgency,
        "priority": config.priority(impact, urgency),
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
    clocks = slm.start_clocks(SqlRow({**_EMPTY_INCIDENT, **row_values}), now, config)
    row_values.update(slm.shown(clocks))
    # The incident, its journal entry, its clocks and their change-log rows are written
    # together: one round trip on PostgreSQL (app/core/sql.py Batch).
    if drawn:
        batch = Batch(
            {"number_region": ctx.region, **versions.expected(slm_config.TOPIC, config.version)}
        )
        batch.insert(_INSERT_INCIDENT_DRAWN, [row_values])
        batch.answer(number=_DRAWN_NUMBER.value)
    else:
        row_values["number"] = number
        batch = Batch()
        batch.insert(_INSERT_INCIDENT, [row_values])
    slm.insert_clocks(batch, clocks)
    row = SqlRow({**_EMPTY_INCIDENT, **row_values})
    journal = JournalWriter(RECORD_TYPE, row.id, principal, now)
    journal.field_changes({}, {"state": State.new})
    log = journal.into(batch)
    incident = await with_clocks(conn, row, now)
    record = incident.admin_data()
    if drawn:
        record["number"] = _DRAWN_NUMBER.placeholder
    log.append(Change("incident", row.id, "incident.created", record, row.version))
    ctx.log_into(batch, conn.dialect.name, log, _DRAWN_NUMBER.fill if drawn else None)
    try:
        answer = await batch.run(conn)
    except DriverError as exc:
        if drawn and not_drawn(exc):  # the configuration changed since it was cached
            slm_config.forget(conn)
            raise versions.Stale from exc
        raise
    if drawn:
        incident.row = SqlRow({**row._mapping, "number": answer.number})
    return incident


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
) -> Incident:
    """Write the changes, journal every visible field change, keep the SLA clocks in step,
    and change-log the result. A PATCH that changes nothing writes nothing."""
    if not changes:
        return await with_clocks(conn, current, ctx.now)
    if journal is None:
        journal = JournalWriter(RECORD_TYPE, current.id, ctx.principal, ctx.now)
    # The update, its journal entries, the clocks' changes and the change-log rows are
    # written together: one round trip on PostgreSQL (app/core/sql.py Batch).
    batch = Batch()
    visible = {k: v for k, v in changes.items() if k not in INTERNAL_FIELDS}
    journal.field_changes(current._mapping, visible, note=note)
    log = journal.into(batch)
    after = SqlRow({**as_dict(current._mapping), **changes})
    clocks = await slm.follow_incident(conn, batch, current, after, ctx.now)
    row = update_into(batch, incidents, current, {**changes, **clocks}, now=ctx.now)
    incident = await with_clocks(conn, row, ctx.now)
    log.append(Change("incident", row.id, event, incident.admin_data(), row.version))
    ctx.log_into(batch, conn.dialect.name, log)
    await batch.run(conn)
    return incident


def _staff_response(current: Row[Any], principal: Principal, now: datetime) -> dict[str, Any]:
    """The first public comment by staff is the response (section 7)."""
    if principal.is_staff and current.responded_at is None:
        return {"responded_at": now}
    return {}


async def update_incident(
    conn: AsyncConnection, *, ctx: Context, ref: str, data: IncidentPatch, if_match: str | None
) -> Incident:
    if ctx.principal.is_customer:
        raise Forbidden("Customers cannot change incidents; comment instead.")
    patch = data.model_dump(exclude_unset=True)
    for name, value in patch.items():
        if value is None and name not in PATCH_NULLABLE:
            raise Unprocessable.field(("body", name), f"{name} cannot be null")
    current, ctx = await _locked(conn, ctx, ref)
    check_if_match(if_match, current.version)
    facts = IncidentFacts.of(current)
    config = await slm_config.current(conn)
    changes = lifecycle.plan_patch(facts, current._mapping, patch, matrix=config.matrix)
    await _check_references(
        conn, {k: v for k, v in changes.items() if k in REFERENCES and v is not None}
    )
    return await _apply(conn, ctx, current, changes, event="incident.updated")


async def transition(
    conn: AsyncConnection, *, ctx: Context, ref: str, body: TransitionBody, if_match: str | None
) -> Incident:
    if ctx.principal.is_customer:
        raise Forbidden(
            "Customers confirm or reject a resolution with /confirm and /reject; "
            "other moves are made by the support team."
        )
    current, ctx = await _locked(conn, ctx, ref)
    check_if_match(if_match, current.version)
    request = TransitionRequest(**body.model_dump())
    plan = lifecycle.plan_transition(
        IncidentFacts.of(current),
        request,
        via=Via.agent,
        actor_id=ctx.principal.author_id,
        now=ctx.now,
    )
    assignee = plan.changes.get("assignee_id")
    # The caller is an authenticated, active staff user: no need to look it up again.
    if assignee not in (None, current.assignee_id, ctx.principal.user_id):
        await ensure_staff_user(conn, assignee, "assignee_id")
    return await apply_plan(conn, ctx, current, plan)


async def apply_plan(
    conn: AsyncConnection, ctx: Context, current: Row[Any], plan: Plan
) -> Incident:
    journal = JournalWriter(RECORD_TYPE, current.id, ctx.principal, ctx.now)
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
    conn: AsyncConnection,
    ctx: Context,
    ref: str,
    request: TransitionRequest,
    via: Via,
    if_match: str | None,
) -> Incident:
    if not ctx.principal.is_customer:
        raise Forbidden(
            "Only the customer confirms or rejects a resolution; staff use /transitions "
            "(closing with confirmation_note, reopening with reason)."
        )
    current, ctx = await _locked(conn, ctx, ref)
    check_if_match(if_match, current.version)
    plan = lifecycle.plan_transition(
        IncidentFacts.of(current), request, via=via, actor_id=None, now=ctx.now
    )
    return await apply_plan(conn, ctx, current, plan)


async def confirm(
    conn: AsyncConnection,
    *,
    ctx: Context,
    ref: str,
    comment: str | None,
    if_match: str | None,
) -> Incident:
    request = TransitionRequest(
        to=State.closed,
        comment=comment,
        comment_public=True,
        reason="Resolution confirmed by the customer.",
    )
    return await _customer_move(conn, ctx, ref, request, Via.customer_confirm, if_match)


async def reject(
    conn: AsyncConnection, *, ctx: Context, ref: str, reason: str, if_match: str | None
) -> Incident:
    request = TransitionRequest(to=State.in_progress, reason=reason)
    return await _customer_move(conn, ctx, ref, request, Via.customer_reject, if_match)


async def add_comment(
    conn: AsyncConnection, *, ctx: Context, ref: str, data: CommentCreate
) -> dict[str, Any]:
    """Add a comment; answers the journal entry. A customer's reply resumes a waiting incident."""
    principal = ctx.principal
    current, ctx = await _locked(conn, ctx, ref)
    facts = IncidentFacts.of(current)
    if principal.is_customer:
        if data.public is False:
            raise Forbidden("Customers can only write public comments.")
        public = True
        lifecycle.refuse_if_final(facts, "commented on by the customer")
    else:
        public = bool(data.public)
    journal = JournalWriter(RECORD_TYPE, current.id, principal, ctx.now)
    journal.comment(data.body, public=public)
    entry = dict(journal.rows[0])
    changes: dict[str, Any] = {}
    note = None
    event = "incident.updated"
    if public and principal.is_staff:
        changes.update(_staff_response(current, principal, ctx.now))
    if principal.is_customer:
        reply = lifecycle.plan_customer_reply(facts, ctx.now)
        if reply is not None:
            changes.update(reply.changes)
            note, event = reply.note, "incident.state_changed"
    if changes:
        await _apply(conn, ctx, current, changes, event=event, note=note, journal=journal)
    else:
        batch = Batch()
        ctx.log_into(batch, conn.dialect.name, journal.into(batch))
        await batch.run(conn)
    return entry


async def escalate(
    conn: AsyncConnection, *, ctx: Context, ref: str, data: EscalationCreate
) -> tuple[Incident, EscalationRead]:
    current, ctx = await _locked(conn, ctx, ref)
    level = lifecycle.plan_escalation(IncidentFacts.of(current))
    return await record_escalation(
        conn, ctx, current, level=level, reason=data.reason, note=data.note
    )


async def record_escalation(
    conn: AsyncConnection,
    ctx: Context,
    current: Row[Any],
    *,
    level: int,
    reason: str,
    note: str | None,
) -> tuple[Incident, EscalationRead]:
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
                created_by_role=ctx.principal.author_role,
                created_at=ctx.now,
            )
            .returning(escalations)
        )
    ).one()
    read = EscalationRead.model_validate(escalation)
    incident = await _apply(
        conn,
        ctx,
        current,
        {"escalation_level": level},
        event="incident.escalated",
        note=f"{reason}: {note}" if note else reason,
    )
    await ctx.log_changes(
        conn, Change("escalation", read.id, "escalation.created", read.model_dump(mode="json"))
    )
    return incident, read


async def list_escalations(
    conn: AsyncConnection, *, principal: Principal, ref: str, params: PageParams
) -> tuple[list[EscalationRead], str | None]:
    """Oldest first. Customers see who escalated and why in their own words only for
    escalations that customers made (of the incident's organization, as only they can); of
    staff's and SDMS's own, the level, the reason and the time (the note is internal, as in
    the journal)."""
    incident = await get_incident(conn, principal=principal, ref=ref)
    keyset = Keyset.choose(
        params.sort,
        {"created_at": timestamp_key("created_at", escalations.c.created_at)},
        escalations.c.id,
        "created_at",
        within=incident.id,
    )
    stmt = select(escalations).where(escalations.c.incident_id == incident.id)
    rows, cursor = keyset.page((await conn.execute(keyset.apply(stmt, params))).all(), params)
    views = [EscalationRead.model_validate(r) for r in rows]
    if principal.is_customer:
        hidden = {"note": None, "created_by_id": None}
        views = [
            v if v.created_by_role == Role.customer else v.model_copy(update=hidden) for v in views
        ]
    return views, cursor


async def rebuild_sla(conn: AsyncConnection, *, ctx: Context, ref: str) -> Incident:
    """Recompute the SLA clocks from the journal and the agreement (e.g. after a holiday was
    added retroactively). The incident record itself does not change."""
    current, ctx = await _locked(conn, ctx, ref)
    clocks = await slm.rebuild_clocks(conn, current, ctx.now)
    # The row's copy of its clocks follows; the record itself (its version) does not change.
    await conn.execute(update(incidents).where(incidents.c.id == current.id).values(clocks))
    incident = await with_clocks(conn, SqlRow({**as_dict(current._mapping), **clocks}), ctx.now)
    await ctx.log_changes(
        conn,
        Change(
            "incident", current.id, "incident.sla_rebuilt", incident.admin_data(), current.version
        ),
    )
    return incident
