"""Request and response shapes of incident management (section 3 of the contract)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from app.core.schemas import Email, InputModel, Instant, LongText, OutputModel, Title
from app.incidents.lifecycle import (
    Channel,
    EscalationReason,
    HoldReason,
    RequestType,
    ResolutionCode,
    State,
)
from app.slm.schemas import SlaClockRead

Level = Annotated[int, Field(ge=1, le=3, description="1 high - 3 low")]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]

# Fields a client may never write: derived by SDMS or changed only through their own endpoint.
DERIVED_FIELDS = frozenset(
    {
        "id",
        "number",
        "region",
        "priority",
        "escalation_level",
        "reopen_count",
        "opened_at",
        "acknowledged_at",
        "resolved_at",
        "closed_at",
        "created_at",
        "updated_at",
        "version",
        "sla",
    }
)


def _refuse_state_and_derived(data: Any, *, allow: frozenset[str] = frozenset()) -> Any:
    if isinstance(data, dict):
        if "state" in data:
            raise ValueError("state changes only through POST /incidents/{id}/transitions")
        derived = sorted((DERIVED_FIELDS - allow) & data.keys())
        if derived:
            raise ValueError(f"{', '.join(derived)} cannot be set: derived by SDMS")
    return data


class IncidentCreate(InputModel):
    title: Title
    description: LongText = ""
    organization_id: uuid.UUID | None = Field(
        default=None, description="Required for staff; a customer's incident is always its own."
    )
    service_id: uuid.UUID | None = None
    category: Category | None = None
    channel: Channel = Channel.api
    contact_email: Email | None = None
    impact: Level = 3
    urgency: Level = 3
    major: bool = Field(default=False, description="true forces impact 1 and urgency 1")
    request_type: RequestType = RequestType.incident
    assignee_id: uuid.UUID | None = None
    group_id: uuid.UUID | None = None
    estimated_resolution_at: Instant | None = None
    opened_at: Instant | None = Field(
        default=None,
        description="Integration (and admin) callers importing from a legacy system: when the "
        "incident was really opened; SLA clocks start there. Not in the future.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_state(cls, data: Any) -> Any:
        return _refuse_state_and_derived(data, allow=frozenset({"opened_at"}))


# What a customer may not set on create (internal fields and imports).
CUSTOMER_FORBIDDEN_ON_CREATE = ("assignee_id", "group_id", "estimated_resolution_at", "opened_at")


class IncidentPatch(InputModel):
    title: Title | None = None
    description: LongText | None = None
    organization_id: uuid.UUID | None = None
    service_id: uuid.UUID | None = None
    category: Category | None = None
    channel: Channel | None = None
    contact_email: Email | None = None
    impact: Level | None = None
    urgency: Level | None = None
    major: bool | None = None
    request_type: RequestType | None = None
    assignee_id: uuid.UUID | None = None
    group_id: uuid.UUID | None = None
    estimated_resolution_at: Instant | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: LongText | None = None
    hold_reason: HoldReason | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_state(cls, data: Any) -> Any:
        return _refuse_state_and_derived(data)


# PATCH fields that `null` may clear; the others need a value when sent.
PATCH_NULLABLE = frozenset(
    {
        "service_id",
        "category",
        "contact_email",
        "assignee_id",
        "group_id",
        "estimated_resolution_at",
        "resolution_code",
        "resolution_notes",
        "hold_reason",
    }
)


class TransitionBody(InputModel):
    to: State
    hold_reason: HoldReason | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: LongText | None = None
    reason: Note | None = Field(
        default=None,
        description="Why: required to cancel and to reopen; the state change's note in the "
        "journal, which customers see too.",
    )
    confirmation_note: Note | None = Field(
        default=None,
        description="Closing on the customer's behalf: how the confirmation was received "
        "(the state change's note, which customers see too).",
    )
    comment: Note | None = Field(
        default=None,
        description="A journal comment made with the move; required (and public) when waiting "
        "for the customer: the question asked.",
    )
    comment_public: bool | None = None
    assignee_id: uuid.UUID | None = None


class CommentCreate(InputModel):
    body: Note
    public: bool | None = Field(
        default=None,
        description="Default: public for customers (who can only write public comments), an "
        "internal work note for staff.",
    )


class ConfirmBody(InputModel):
    comment: Note | None = None


class RejectBody(InputModel):
    reason: Note


class EscalationCreate(InputModel):
    reason: EscalationReason
    note: LongText | None = None


class EscalationRead(OutputModel):
    id: uuid.UUID
    incident_id: uuid.UUID
    escalation_level: int
    reason: EscalationReason
    note: str | None
    created_by_id: uuid.UUID | None
    created_by_role: str | None = Field(
        default=None, description="the author's role when escalating; null for SDMS itself"
    )
    created_at: datetime


class IncidentPublic(OutputModel):
    """An incident as its customer sees it: no internal fields."""

    id: uuid.UUID
    number: str
    region: str
    title: str
    description: str
    organization_id: uuid.UUID
    service_id: uuid.UUID | None
    category: str | None
    channel: Channel
    contact_email: str | None
    impact: int
    urgency: int
    priority: int
    state: State
    hold_reason: HoldReason | None
    major: bool
    request_type: RequestType
    estimated_resolution_at: datetime | None
    resolution_code: ResolutionCode | None
    resolution_notes: str | None
    escalation_level: int
    reopen_count: int
    opened_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    sla: list[SlaClockRead] = Field(default_factory=list)


class IncidentRead(IncidentPublic):
    """An incident as staff see it."""

    assignee_id: uuid.UUID | None
    group_id: uuid.UUID | None
    problem_id: uuid.UUID | None
    caused_by_change_id: uuid.UUID | None
    created_by_id: uuid.UUID | None
