"""HTTP face of incident management (section 3 of the contract)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.core.config import API_PREFIX
from app.core.context import Context
from app.core.deps import CurrentCall, Manager, Write
from app.core.pagination import PageDep
from app.core.responses import Reply, json_response
from app.core.schemas import Page
from app.incidents import service
from app.incidents.filters import FiltersDep
from app.incidents.schemas import (
    CommentCreate,
    ConfirmBody,
    EscalationCreate,
    EscalationRead,
    IncidentCreate,
    IncidentPatch,
    IncidentRead,
    RejectBody,
    TransitionBody,
)
from app.itil.journal import JournalEntryRead, entry_views, list_entries

# Routers carry the full prefix themselves, so that a matched route knows its whole template
# (the metrics label requests by it).
router = APIRouter(prefix=f"{API_PREFIX}/incidents", tags=["incidents"])

IncidentRef = Annotated[
    str,
    Path(min_length=1, max_length=64, description="The incident's id or number (INC-MSK-0000042)."),
]


def _reply(incident: service.Incident, ctx: Context, status: int = 200) -> Reply:
    return Reply(incident.view(ctx.principal), status, incident.version)


@router.post("", status_code=201, response_model=IncidentRead)
async def create_incident(body: IncidentCreate, write: Write) -> Response:
    """Open an incident (state `new`). A customer's incident belongs to its organization."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        return _reply(await service.create_incident(conn, ctx=ctx, data=body), ctx, 201)

    return await write.run(action, one_statement=True)


@router.get("", response_model=Page[IncidentRead])
async def list_incidents(
    call: CurrentCall,
    params: PageDep,
    filters: FiltersDep,
) -> Response:
    conn, principal = call.conn, call.principal
    items, cursor = await service.list_incidents(
        conn, principal=principal, filters=filters, params=params, now=call.now()
    )
    return json_response({"items": items, "next_cursor": cursor})


@router.get("/{incident_id}", response_model=IncidentRead)
async def get_incident(incident_id: IncidentRef, call: CurrentCall) -> Response:
    conn, principal = call.conn, call.principal
    incident = await service.read_incident(
        conn, principal=principal, ref=incident_id, now=call.now()
    )
    return json_response(incident.view(principal), version=incident.version)


@router.patch("/{incident_id}", response_model=IncidentRead)
async def update_incident(incident_id: IncidentRef, body: IncidentPatch, write: Write) -> Response:
    """Change any field but `state` and the derived ones. Impact or urgency re-derive the
    priority. Send `If-Match` with the ETag to refuse a stale write (412)."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.update_incident(
            conn, ctx=ctx, ref=incident_id, data=body, if_match=write.if_match
        )
        return _reply(row, ctx)

    return await write.run(action)


@router.post("/{incident_id}/transitions", response_model=IncidentRead)
async def transition_incident(
    incident_id: IncidentRef, body: TransitionBody, write: Write
) -> Response:
    """Move the incident to another state (staff). Refused moves answer 409 with the allowed
    targets; a missing required field answers 422."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.transition(
            conn, ctx=ctx, ref=incident_id, body=body, if_match=write.if_match
        )
        return _reply(row, ctx)

    return await write.run(action)


@router.post("/{incident_id}/confirm", response_model=IncidentRead)
async def confirm_resolution(
    incident_id: IncidentRef, write: Write, body: ConfirmBody | None = None
) -> Response:
    """The customer confirms the resolution: the incident is closed."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        comment = body.comment if body is not None else None
        incident = await service.confirm(
            conn, ctx=ctx, ref=incident_id, comment=comment, if_match=write.if_match
        )
        return _reply(incident, ctx)

    return await write.run(action)


@router.post("/{incident_id}/reject", response_model=IncidentRead)
async def reject_resolution(incident_id: IncidentRef, body: RejectBody, write: Write) -> Response:
    """The customer rejects the resolution: the incident is reopened (in_progress)."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.reject(
            conn, ctx=ctx, ref=incident_id, reason=body.reason, if_match=write.if_match
        )
        return _reply(row, ctx)

    return await write.run(action)


@router.post("/{incident_id}/comments", status_code=201, response_model=JournalEntryRead)
async def add_comment(incident_id: IncidentRef, body: CommentCreate, write: Write) -> Response:
    """Comment on the incident. Customers write public comments; staff default to internal
    work notes. A customer's reply to an incident awaiting it moves it back to in_progress."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        entry = await service.add_comment(conn, ctx=ctx, ref=incident_id, data=body)
        return Reply(JournalEntryRead.model_validate(entry), 201)

    return await write.run(action)


@router.get("/{incident_id}/journal", response_model=Page[JournalEntryRead])
async def list_journal(incident_id: IncidentRef, call: CurrentCall, params: PageDep) -> Response:
    """Comments and field changes, oldest first. Customers see public comments and state
    changes only."""
    conn, principal = call.conn, call.principal
    incident = await service.get_incident(conn, principal=principal, ref=incident_id)
    rows, cursor = await list_entries(
        conn, record_id=incident.id, params=params, customer_view=principal.is_customer
    )
    items = entry_views(rows, customer_view=principal.is_customer)
    return json_response(Page[JournalEntryRead](items=items, next_cursor=cursor))


@router.post("/{incident_id}/escalations", status_code=201, response_model=EscalationRead)
async def escalate_incident(
    incident_id: IncidentRef, body: EscalationCreate, write: Write
) -> Response:
    """Raise the escalation level by one (1: support manager, 2: customer service manager or
    the organization's account manager). Anyone who can see the incident may escalate it."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        _row, escalation = await service.escalate(conn, ctx=ctx, ref=incident_id, data=body)
        return Reply(escalation, 201)

    return await write.run(action)


@router.get("/{incident_id}/escalations", response_model=Page[EscalationRead])
async def list_escalations(
    incident_id: IncidentRef, call: CurrentCall, params: PageDep
) -> Response:
    """Who escalated, why and when, oldest first."""
    conn, principal = call.conn, call.principal
    items, cursor = await service.list_escalations(
        conn, principal=principal, ref=incident_id, params=params
    )
    return json_response(Page[EscalationRead](items=items, next_cursor=cursor))


@router.post("/{incident_id}/sla/rebuild", response_model=IncidentRead)
async def rebuild_sla(incident_id: IncidentRef, write: Write, _: Manager) -> Response:
    """Recompute the SLA clocks from the journal and the agreement that applies now (manager).
    Rebuilding an untouched incident changes nothing."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        return _reply(await service.rebuild_sla(conn, ctx=ctx, ref=incident_id), ctx)

    return await write.run(action)
