"""SLM shapes shared with other domains (the incident's `sla` field)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from app.core.schemas import InputModel, Instant, Name, OutputModel
from app.slm.calendar import WorkingCalendar, parse_week


class SlaClockRead(OutputModel):
    kind: Literal["response", "resolution"]
    agreement_id: uuid.UUID
    target_seconds: int
    elapsed_seconds: int
    due_at: datetime | None
    state: Literal["running", "paused", "met", "breached"]
    breached: bool
    percent: float
    stopped_at: datetime | None = None


# --- calendars ------------------------------------------------------------------------------

MAX_SECONDS = 10 * 366 * 86_400  # ten years: far beyond any service-level target
# How far apart `/add` and `/elapsed` count: a hundred years. Counting costs time for each
# change of the zone's offset crossed (twice a year with daylight saving time).
MAX_SPAN = timedelta(days=36_525)
MAX_SPAN_TEXT = "100 years"


class CalendarBody(InputModel):
    name: Name
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="IANA time zone, e.g. Europe/Moscow"
    )
    always_on: bool = Field(default=False, description="24x7: ignores hours and holidays")
    hours: dict[str, list[list[str]]] = Field(
        default_factory=dict,
        description='Local working intervals per weekday: {"mon": [["09:00", "18:00"]], ...}; '
        '"24:00" may end a day.',
        max_length=7,
    )
    holidays: Annotated[list[date], Field(max_length=2000)] = Field(
        default_factory=list, description="Local dates without working time."
    )

    def working_calendar(self) -> WorkingCalendar:
        return WorkingCalendar(
            timezone=self.timezone,
            always_on=self.always_on,
            week=parse_week(self.hours),
            holidays=frozenset(self.holidays),
        )

    @model_validator(mode="after")
    def _valid(self) -> CalendarBody:
        try:
            self.working_calendar()
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
        return self


class CalendarRead(OutputModel):
    id: uuid.UUID
    name: str
    timezone: str
    always_on: bool
    hours: dict[str, list[list[str]]]
    holidays: list[date]
    created_at: datetime
    updated_at: datetime
    version: int


class AddBody(InputModel):
    start: Instant
    seconds: Annotated[int, Field(ge=0, le=MAX_SECONDS)]


class AddResult(OutputModel):
    end: datetime


class ElapsedBody(InputModel):
    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> ElapsedBody:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if self.end - self.start > MAX_SPAN:
            raise ValueError(f"end must lie within {MAX_SPAN_TEXT} of start")
        return self


class ElapsedResult(OutputModel):
    seconds: int


# --- agreements -----------------------------------------------------------------------------

TargetSeconds = Annotated[int, Field(ge=1, le=MAX_SECONDS)]


class TargetBody(InputModel):
    priority: Annotated[int, Field(ge=1, le=5)]
    response_seconds: TargetSeconds
    resolution_seconds: TargetSeconds
    calendar_id: uuid.UUID | None = Field(
        default=None, description="Overrides the agreement's calendar for this priority."
    )


class AgreementBody(InputModel):
    name: Name
    organization_id: uuid.UUID | None = None
    service_id: uuid.UUID | None = None
    calendar_id: uuid.UUID
    warn_at_percent: Annotated[int, Field(ge=1, le=99)] = 75
    targets: Annotated[list[TargetBody], Field(min_length=1, max_length=5)]

    @model_validator(mode="after")
    def _one_target_per_priority(self) -> AgreementBody:
        priorities = [t.priority for t in self.targets]
        if len(set(priorities)) != len(priorities):
            raise ValueError("targets must name each priority at most once")
        return self


class TargetRead(OutputModel):
    priority: int
    response_seconds: int
    resolution_seconds: int
    calendar_id: uuid.UUID | None = None


class AgreementRead(OutputModel):
    id: uuid.UUID
    name: str
    organization_id: uuid.UUID | None
    service_id: uuid.UUID | None
    calendar_id: uuid.UUID
    warn_at_percent: int
    targets: list[TargetRead]
    created_at: datetime
    updated_at: datetime
    version: int


# --- reports --------------------------------------------------------------------------------


class MetricsItem(OutputModel):
    key: int | str | None
    opened: int
    resolved: int
    response_met: int
    response_breached: int
    resolution_met: int
    resolution_breached: int
    compliance_percent: float | None
    mtta_seconds: int | None = Field(description="mean, rounded to whole seconds")
    mttr_seconds: int | None = Field(description="mean, rounded to whole seconds")


class MetricsResult(OutputModel):
    items: list[MetricsItem]


class BacklogItem(OutputModel):
    key: int | str | None
    count: int


class BacklogResult(OutputModel):
    items: list[BacklogItem]


class BreachRead(OutputModel):
    incident_id: uuid.UUID
    number: str
    organization_id: uuid.UUID
    priority: int
    kind: Literal["response", "resolution"]
    due_at: datetime | None
    breached_at: datetime
