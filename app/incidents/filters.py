"""Incident list filters (section 1): the query parameters, and the SQL conditions they mean
for a caller, tenancy included. Shared by the incident list and the SLM reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import AwareDatetime, Field
from sqlalchemy import ColumnElement

from app.core.auth import Principal
from app.core.db import one_of
from app.core.errors import Forbidden
from app.incidents.lifecycle import Channel, RequestType, State
from app.incidents.models import incidents

IdList = Annotated[list[uuid.UUID], Query(max_length=50)]
PriorityValue = Annotated[int, Field(ge=1, le=5)]
Region = Annotated[str, Field(max_length=10)]


def tenancy(principal: Principal) -> list[ColumnElement[bool]]:
    if principal.is_customer:
        return [incidents.c.organization_id == principal.organization_id]
    return []


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

    def conditions(self, principal: Principal, dialect: str) -> list[ColumnElement[bool]]:
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
                conditions.append(one_of(column, list(values), dialect))
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


async def incident_filters(
    state: Annotated[list[State], Query(max_length=6)] = [],  # noqa: B006 (query lists)
    priority: Annotated[list[PriorityValue], Query(max_length=5)] = [],  # noqa: B006
    organization_id: IdList = [],  # noqa: B006
    assignee_id: IdList = [],  # noqa: B006
    group_id: IdList = [],  # noqa: B006
    service_id: IdList = [],  # noqa: B006
    region: Annotated[list[Region], Query(max_length=20)] = [],  # noqa: B006
    request_type: Annotated[list[RequestType], Query(max_length=4)] = [],  # noqa: B006
    channel: Annotated[list[Channel], Query(max_length=6)] = [],  # noqa: B006
    major: bool | None = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> IncidentFilters:
    if q is not None and "\x00" in q:
        q = q.replace("\x00", "")
    return IncidentFilters(
        state=state,
        priority=priority,
        organization_id=organization_id,
        assignee_id=assignee_id,
        group_id=group_id,
        service_id=service_id,
        region=region,
        request_type=[r.value for r in request_type],
        channel=[c.value for c in channel],
        major=major,
        created_after=created_after,
        created_before=created_before,
        q=q or None,
    )


FiltersDep = Annotated[IncidentFilters, Depends(incident_filters)]
