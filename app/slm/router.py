"""HTTP face of service-level management (section 7 of the contract)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.core.config import API_PREFIX
from app.core.context import Context
from app.core.deps import Admin, CurrentCall, Manager, Write
from app.core.pagination import PageDep, RecordPageDep
from app.core.responses import Reply, json_response
from app.core.schemas import InstantBound, Page
from app.incidents.filters import FiltersDep
from app.slm import reports, service
from app.slm.priority import (
    PriorityMatrixBody,
    PriorityMatrixRead,
    load_matrix,
)
from app.slm.schemas import (
    AddBody,
    AddResult,
    AgreementBody,
    AgreementRead,
    BacklogResult,
    BreachRead,
    CalendarBody,
    CalendarRead,
    ElapsedBody,
    ElapsedResult,
    MetricsResult,
)

router = APIRouter(prefix=f"{API_PREFIX}/slm", tags=["slm"])


@router.get("/priority-matrix", response_model=PriorityMatrixRead)
async def get_priority_matrix(call: CurrentCall) -> Response:
    """impact -> urgency -> priority, as used for records created or reclassified now."""
    conn = call.conn
    matrix, version = await load_matrix(conn)
    return json_response(PriorityMatrixRead(matrix=matrix, version=version), version=version)


@router.put("/priority-matrix", response_model=PriorityMatrixRead)
async def put_priority_matrix(body: PriorityMatrixBody, write: Write, _: Admin) -> Response:
    """Replace the matrix (admin). Existing records keep their priority until reclassified.
    `If-Match` names the version replaced (`"0"` before the first save)."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        view = await service.set_priority_matrix(
            conn, ctx=ctx, matrix=body.matrix, if_match=write.if_match
        )
        return Reply(view, 200, view.version)

    return await write.run(action)


# --- calendars ------------------------------------------------------------------------------


@router.post("/calendars", status_code=201, response_model=CalendarRead)
async def create_calendar(body: CalendarBody, write: Write, _: Manager) -> Response:
    """A business calendar: IANA time zone, weekly working intervals, holidays (or 24x7)."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.create_calendar(conn, ctx=ctx, body=body)
        return Reply(service.calendar_view(row), 201, row.version)

    return await write.run(action)


@router.get("/calendars", response_model=Page[CalendarRead])
async def list_calendars(call: CurrentCall, params: RecordPageDep) -> Response:
    conn = call.conn
    rows, cursor = await service.calendar_store.page(conn, params)
    items = [service.calendar_view(r) for r in rows]
    return json_response(Page[CalendarRead](items=items, next_cursor=cursor))


@router.get("/calendars/{calendar_id}", response_model=CalendarRead)
async def get_calendar(calendar_id: uuid.UUID, call: CurrentCall) -> Response:
    conn = call.conn
    row = await service.calendar_store.get(conn, calendar_id)
    return json_response(service.calendar_view(row), version=row.version)


@router.put("/calendars/{calendar_id}", response_model=CalendarRead)
async def replace_calendar(
    calendar_id: uuid.UUID, body: CalendarBody, write: Write, _: Manager
) -> Response:
    """Replace the calendar. Running SLA clocks keep the calendar they started with until
    `POST /incidents/{id}/sla/rebuild`."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.replace_calendar(
            conn, ctx=ctx, calendar_id=calendar_id, body=body, if_match=write.if_match
        )
        return Reply(service.calendar_view(row), 200, row.version)

    return await write.run(action)


@router.post("/calendars/{calendar_id}/add", response_model=AddResult)
async def calendar_add(calendar_id: uuid.UUID, body: AddBody, call: CurrentCall) -> AddResult:
    """The instant when `seconds` of working time after `start` have passed."""
    conn = call.conn
    end = await service.calendar_add(
        conn, calendar_id=calendar_id, start=body.start, seconds=body.seconds
    )
    return AddResult(end=end)


@router.post("/calendars/{calendar_id}/elapsed", response_model=ElapsedResult)
async def calendar_elapsed(
    calendar_id: uuid.UUID, body: ElapsedBody, call: CurrentCall
) -> ElapsedResult:
    """Working seconds between `start` and `end` (whole seconds, rounded down)."""
    conn = call.conn
    seconds = await service.calendar_elapsed(
        conn, calendar_id=calendar_id, start=body.start, end=body.end
    )
    return ElapsedResult(seconds=seconds)


# --- agreements -----------------------------------------------------------------------------


@router.post("/agreements", status_code=201, response_model=AgreementRead)
async def create_agreement(body: AgreementBody, write: Write, _: Manager) -> Response:
    """An agreement: targets per priority on a calendar, for an organization and/or service
    (neither: the default). Incidents get the most specific one when opened."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.create_agreement(conn, ctx=ctx, body=body)
        return Reply(service.agreement_view(row), 201, row.version)

    return await write.run(action)


@router.get("/agreements", response_model=Page[AgreementRead])
async def list_agreements(call: CurrentCall, params: RecordPageDep) -> Response:
    conn, principal = call.conn, call.principal
    rows, cursor = await service.agreement_store.page(
        conn, params, *service.agreement_scope(principal)
    )
    items = [service.agreement_view(r) for r in rows]
    return json_response(Page[AgreementRead](items=items, next_cursor=cursor))


@router.get("/agreements/{agreement_id}", response_model=AgreementRead)
async def get_agreement(agreement_id: uuid.UUID, call: CurrentCall) -> Response:
    conn, principal = call.conn, call.principal
    row = await service.agreement_store.get(conn, agreement_id, *service.agreement_scope(principal))
    return json_response(service.agreement_view(row), version=row.version)


@router.put("/agreements/{agreement_id}", response_model=AgreementRead)
async def replace_agreement(
    agreement_id: uuid.UUID, body: AgreementBody, write: Write, _: Manager
) -> Response:
    """Replace the agreement. Existing clocks keep their targets until the incident is
    reclassified or its clocks are rebuilt."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        row = await service.replace_agreement(
            conn, ctx=ctx, agreement_id=agreement_id, body=body, if_match=write.if_match
        )
        return Reply(service.agreement_view(row), 200, row.version)

    return await write.run(action)


# --- reports --------------------------------------------------------------------------------

From = Annotated[InstantBound | None, Query(alias="from", description="inclusive")]
To = Annotated[InstantBound | None, Query(alias="to", description="exclusive")]


@router.get(
    "/metrics",
    response_model=MetricsResult,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def get_metrics(
    request: Request,
    call: CurrentCall,
    filters: FiltersDep,
    opened_from: From = None,
    opened_to: To = None,
    group_by: reports.MetricsGroup = reports.MetricsGroup.priority,
) -> Response:
    """Incidents opened in `[from, to)`, grouped: counts, SLA outcomes, compliance, MTTA and
    MTTR (wall-clock means). Customers see their own organization only. `Accept: text/csv`
    answers the same table as CSV."""
    conn, principal = call.conn, call.principal
    items = await reports.metrics(
        conn,
        principal=principal,
        group_by=group_by,
        opened_from=opened_from,
        opened_to=opened_to,
        filters=filters,
        now=call.now(),
    )
    if "text/csv" in request.headers.get("accept", ""):
        return Response(reports.metrics_csv(items), media_type="text/csv")
    return json_response(MetricsResult(items=items))


@router.get("/backlog", response_model=BacklogResult)
async def get_backlog(
    call: CurrentCall,
    filters: FiltersDep,
    group_by: reports.BacklogGroup = reports.BacklogGroup.state,
) -> Response:
    """Incidents not resolved, closed or cancelled, counted by state, priority or group."""
    conn, principal = call.conn, call.principal
    items = await reports.backlog(conn, principal=principal, group_by=group_by, filters=filters)
    return json_response(BacklogResult(items=items))


@router.get("/breaches", response_model=Page[BreachRead])
async def list_breaches(
    call: CurrentCall,
    params: PageDep,
    breached_from: From = None,
    breached_to: To = None,
) -> Response:
    """SLA clocks that passed their target, with the instant they did, newest first."""
    conn, principal = call.conn, call.principal
    items, cursor = await reports.breaches(
        conn,
        principal=principal,
        breached_from=breached_from,
        breached_to=breached_to,
        params=params,
        now=call.now(),
    )
    return json_response(Page[BreachRead](items=items, next_cursor=cursor))
