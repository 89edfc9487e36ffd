"""Service-level reports, computed in SQL (grouped aggregates over indexed columns), never by
loading incidents into Python: metrics, backlog, breaches.

Clock outcomes come from the stored clock columns: a clock is *breached* once its `breach_at`
has passed (running clocks: their due instant; paused or stopped ones: the instant their
counted time passed the target), and *met* when it stopped without a breach.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import KeyedColumnElement

from app.core.auth import Principal
from app.core.errors import Forbidden, Unprocessable
from app.core.pagination import Keyset, PageParams, string_key, timestamp_key, uuid_key
from app.incidents.filters import IncidentFilters
from app.incidents.lifecycle import State
from app.incidents.models import incidents
from app.slm.models import sla_clocks
from app.slm.schemas import BacklogItem, BreachRead, MetricsItem


class MetricsGroup(StrEnum):
    priority = "priority"
    organization = "organization"
    service = "service"
    region = "region"
    group = "group"
    request_type = "request_type"


class BacklogGroup(StrEnum):
    state = "state"
    priority = "priority"
    group = "group"


GROUP_COLUMNS: dict[str, KeyedColumnElement[Any]] = {
    "priority": incidents.c.priority,
    "organization": incidents.c.organization_id,
    "service": incidents.c.service_id,
    "region": incidents.c.region,
    "group": incidents.c.group_id,
    "request_type": incidents.c.request_type,
    "state": incidents.c.state,
}
CLOSED_FOR_BACKLOG = (State.resolved, State.closed, State.cancelled)


def _refuse_internal_grouping(principal: Principal, group_by: str) -> None:
    if principal.is_customer and group_by == "group":
        raise Forbidden("Support groups are internal; customers cannot group by them.")


def _epoch(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """Seconds since the epoch, for averaging durations in SQL on both backends."""
    if dialect == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def metrics(
    conn: AsyncConnection,
    *,
    principal: Principal,
    group_by: MetricsGroup,
    opened_from: datetime | None,
    opened_to: datetime | None,
    filters: IncidentFilters,
    now: datetime,
) -> list[MetricsItem]:
    _refuse_internal_grouping(principal, group_by)
    filter_conditions = filters.bind(principal, conn.dialect.name)
    key = GROUP_COLUMNS[group_by]
    response = sla_clocks.alias("response")
    resolution = sla_clocks.alias("resolution")
    dialect = conn.dialect.name

    def met(clock: Any) -> ColumnElement[bool]:
        return and_(clock.c.mode == "stopped", clock.c.breach_at.is_(None))

    def breached(clock: Any) -> ColumnElement[bool]:
        passed: ColumnElement[bool] = clock.c.breach_at < now
        return passed

    resolution_met = _count(met(resolution))
    resolution_breached = _count(breached(resolution))
    stmt = (
        select(
            key.label("key"),
            func.count().label("opened"),
            func.count(incidents.c.resolved_at).label("resolved"),
            _count(met(response)).label("response_met"),
            _count(breached(response)).label("response_breached"),
            resolution_met.label("resolution_met"),
            resolution_breached.label("resolution_breached"),
            func.avg(
                _epoch(incidents.c.acknowledged_at, dialect)
                - _epoch(incidents.c.opened_at, dialect)
            ).label("mtta_seconds"),
            func.avg(
                _epoch(incidents.c.resolved_at, dialect) - _epoch(incidents.c.opened_at, dialect)
            ).label("mttr_seconds"),
        )
        .select_from(incidents)
        .outerjoin(
            response,
            and_(response.c.incident_id == incidents.c.id, response.c.kind == "response"),
        )
        .outerjoin(
            resolution,
            and_(resolution.c.incident_id == incidents.c.id, resolution.c.kind == "resolution"),
        )
        .where(*filter_conditions.conditions)
        .group_by(key)
        .order_by(key)
    )
    if opened_from is not None:
        stmt = stmt.where(incidents.c.opened_at >= opened_from)
    if opened_to is not None:
        stmt = stmt.where(incidents.c.opened_at < opened_to)
    items = []
    for row in await conn.execute(stmt, filter_conditions.params):
        measured = row.resolution_met + row.resolution_breached
        items.append(
            MetricsItem(
                key=_key(row.key),
                opened=row.opened,
                resolved=row.resolved,
                response_met=row.response_met,
                response_breached=row.response_breached,
                resolution_met=row.resolution_met,
                resolution_breached=row.resolution_breached,
                compliance_percent=(
                    round(row.resolution_met * 100 / measured, 2) if measured else None
                ),
                mtta_seconds=_seconds(row.mtta_seconds),
                mttr_seconds=_seconds(row.mttr_seconds),
            )
        )
    return items


def _key(value: Any) -> int | str | None:
    if value is None or isinstance(value, int):
        return value
    return str(value)


def _seconds(value: Any) -> int | None:
    """A mean duration in whole seconds, as every `*_seconds` field of the API."""
    return None if value is None else round(float(value))


METRICS_COLUMNS = list(MetricsItem.model_fields)


def metrics_csv(items: Sequence[MetricsItem]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(METRICS_COLUMNS)
    for item in items:
        values = item.model_dump()
        writer.writerow(["" if values[c] is None else values[c] for c in METRICS_COLUMNS])
    return buffer.getvalue()


async def backlog(
    conn: AsyncConnection,
    *,
    principal: Principal,
    group_by: BacklogGroup,
    filters: IncidentFilters,
) -> list[BacklogItem]:
    _refuse_internal_grouping(principal, group_by)
    filter_conditions = filters.bind(principal, conn.dialect.name)
    key = GROUP_COLUMNS[group_by]
    stmt = (
        select(key.label("key"), func.count().label("count"))
        .where(incidents.c.state.not_in([s.value for s in CLOSED_FOR_BACKLOG]))
        .where(*filter_conditions.conditions)
        .group_by(key)
        .order_by(key)
    )
    rows = await conn.execute(stmt, filter_conditions.params)
    return [BacklogItem(key=_key(r.key), count=r.count) for r in rows]


BREACH_ORDER = (
    timestamp_key("breached_at", sla_clocks.c.breach_at),
    uuid_key("incident_id", sla_clocks.c.incident_id),
    string_key("kind", sla_clocks.c.kind),
)


async def breaches(
    conn: AsyncConnection,
    *,
    principal: Principal,
    breached_from: datetime | None,
    breached_to: datetime | None,
    params: PageParams,
    now: datetime,
) -> tuple[list[BreachRead], str | None]:
    """Clocks that passed their target, newest breach first (by `breached_at`)."""
    if params.sort not in (None, "-breached_at"):
        raise Unprocessable.field(("query", "sort"), "breaches are listed by -breached_at")
    keyset = Keyset("-breached_at", BREACH_ORDER, descending=True)
    tenancy_conditions = IncidentFilters().bind(principal, conn.dialect.name)
    stmt = (
        select(
            sla_clocks.c.incident_id,
            incidents.c.number,
            incidents.c.organization_id,
            incidents.c.priority,
            sla_clocks.c.kind,
            sla_clocks.c.due_at,
            sla_clocks.c.breach_at.label("breached_at"),
        )
        .join(incidents, incidents.c.id == sla_clocks.c.incident_id)
        .where(sla_clocks.c.breach_at < now)
        .where(*tenancy_conditions.conditions)
    )
    if breached_from is not None:
        stmt = stmt.where(sla_clocks.c.breach_at >= breached_from)
    if breached_to is not None:
        stmt = stmt.where(sla_clocks.c.breach_at < breached_to)
    result = await conn.execute(keyset.apply(stmt, params), tenancy_conditions.params)
    rows, cursor = keyset.page(result.all(), params)
    return [BreachRead.model_validate(r) for r in rows], cursor
