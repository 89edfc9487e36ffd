"""Incident list filters (section 1): the query parameters, and the SQL conditions they mean
for a caller, tenancy included. Shared by the incident list and the SLM reports."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Annotated

from fastapi import Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import BindParameter, ColumnElement, bindparam

from app.core.auth import Principal
from app.core.db import Bound, one_of
from app.core.errors import Forbidden
from app.core.queryparams import QueryModel
from app.core.schemas import InstantBound
from app.incidents.lifecycle import Channel, RequestType, State
from app.incidents.models import incidents

IdList = Annotated[list[uuid.UUID], Field(max_length=50)]
PriorityValue = Annotated[int, Field(ge=1, le=5)]
Region = Annotated[str, Field(max_length=10)]


_LISTS = (
    ("state", "state"),
    ("priority", "priority"),
    ("organization_id", "organization_id"),
    ("assignee_id", "assignee_id"),
    ("group_id", "group_id"),
    ("service_id", "service_id"),
    ("region", "region"),
    ("request_type", "request_type"),
    ("channel", "channel"),
)


class IncidentFilters(BaseModel):
    """The filter parameters (section 1): repeat a parameter for several values. Read from the
    query string as one model (app/core/queryparams.py)."""

    model_config = ConfigDict(frozen=True)

    state: Annotated[list[State], Field(max_length=6)] = []
    priority: Annotated[list[PriorityValue], Field(max_length=5)] = []
    organization_id: IdList = []
    assignee_id: IdList = []
    group_id: IdList = []
    service_id: IdList = []
    region: Annotated[list[Region], Field(max_length=20)] = []
    request_type: Annotated[list[RequestType], Field(max_length=4)] = []
    channel: Annotated[list[Channel], Field(max_length=6)] = []
    major: bool | None = None
    created_after: InstantBound | None = None
    created_before: InstantBound | None = None
    q: Annotated[str | None, Field(min_length=1, max_length=200)] = None

    @field_validator("q")
    @classmethod
    def _printable(cls, q: str | None) -> str | None:
        return (q.replace("\x00", "") or None) if q is not None else None

    def bind(self, principal: Principal, dialect: str) -> Bound:
        """The filters and the caller's tenancy as conditions with named parameters."""
        if principal.is_customer and (self.assignee_id or self.group_id):
            raise Forbidden("Customers cannot filter by assignee_id or group_id.")
        c = incidents.c
        bound = Bound()
        if principal.is_customer:
            bound.add(
                lambda: c.organization_id == bindparam("f_tenant"),
                "tenant",
                f_tenant=principal.organization_id,
            )
        for field_name, column in _LISTS:
            values = [v.value if isinstance(v, Enum) else v for v in getattr(self, field_name)]
            if field_name == "region":
                values = [r.lower() for r in values]
            if values:
                one_of(bound, c[column], f"f_{field_name}", values, dialect)
        if self.major is not None:
            bound.add(lambda: c.major == bindparam("f_major"), "major", f_major=self.major)
        if self.created_after is not None:
            bound.add(
                lambda: c.created_at >= bindparam("f_after"), "after", f_after=self.created_after
            )
        if self.created_before is not None:
            bound.add(
                lambda: c.created_at < bindparam("f_before"), "before", f_before=self.created_before
            )
        if self.q:
            pattern = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            bound.add(_text_search, "q", f_q=pattern + "%")
        return bound


def _text_search() -> ColumnElement[bool]:
    """Text in the title or the description (`f_q`: a LIKE pattern, `\\` escaping)."""
    text: BindParameter[str] = bindparam("f_q")
    c = incidents.c
    return c.title.ilike(text, escape="\\") | c.description.ilike(text, escape="\\")


incident_filters = QueryModel(IncidentFilters, lambda filters: filters)
FiltersDep = Annotated[IncidentFilters, Depends(incident_filters)]
