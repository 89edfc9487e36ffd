"""Incident lifecycle rules: pure functions over plain data (no I/O, time passed in).

new ──▶ in_progress ◀──▶ on_hold
 │  ╲       │               │
 │   ╲──────┼───────────────┴──▶ resolved ──▶ closed
 │          │                       │
 │          │◀──────── reopen ──────┘
 └──────────┴───────────────────────────────▶ cancelled   (from new, in_progress, on_hold)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from app.core.errors import Conflict, ErrorItem, Unprocessable


class State(StrEnum):
    new = "new"
    in_progress = "in_progress"
    on_hold = "on_hold"
    resolved = "resolved"
    closed = "closed"
    cancelled = "cancelled"


class HoldReason(StrEnum):
    awaiting_customer = "awaiting_customer"
    awaiting_vendor = "awaiting_vendor"
    awaiting_change = "awaiting_change"
    awaiting_problem = "awaiting_problem"


class ResolutionCode(StrEnum):
    solved = "solved"
    workaround = "workaround"
    not_possible = "not_possible"
    feature_request = "feature_request"
    feature_request_escalated = "feature_request_escalated"
    bug_reported = "bug_reported"
    duplicate = "duplicate"


class EscalationReason(StrEnum):
    not_understood = "not_understood"
    unsatisfactory_solution = "unsatisfactory_solution"
    recurring_incidents = "recurring_incidents"
    reputation_risk = "reputation_risk"
    recurrence_after_resolution = "recurrence_after_resolution"
    data_loss_risk = "data_loss_risk"
    poor_experience = "poor_experience"
    sla_breach = "sla_breach"


class Channel(StrEnum):
    phone = "phone"
    email = "email"
    portal = "portal"
    chat = "chat"
    api = "api"
    monitoring = "monitoring"


class RequestType(StrEnum):
    incident = "incident"
    service_request = "service_request"
    consultation = "consultation"
    complaint = "complaint"


class Via(StrEnum):
    """Who moves the incident, which decides what the move requires."""

    agent = "agent"  # POST /transitions by staff
    customer_confirm = "customer_confirm"  # POST /confirm
    customer_reject = "customer_reject"  # POST /reject
    customer_reply = "customer_reply"  # a customer's public comment while awaiting the customer
    auto_close = "auto_close"  # the auto-close job


# How the customer answers a resolution: /confirm and /reject, and only of a resolved incident.
CUSTOMER_VERDICTS: Mapping[Via, str] = {
    Via.customer_confirm: "confirmed",
    Via.customer_reject: "rejected",
}
FINAL = frozenset({State.closed, State.cancelled})
# Moving into one of these states is the response to the customer (SLA `response` clock stops),
# if no public staff comment came first.
RESPONDING = frozenset({State.in_progress, State.resolved, State.closed, State.cancelled})
OPEN = frozenset({State.new, State.in_progress, State.on_hold})
MAX_ESCALATION_LEVEL = 2

ALLOWED: Mapping[State, tuple[State, ...]] = {
    State.new: (State.in_progress, State.on_hold, State.resolved, State.cancelled),
    State.in_progress: (State.on_hold, State.resolved, State.cancelled),
    State.on_hold: (State.in_progress, State.resolved, State.cancelled),
    State.resolved: (State.closed, State.in_progress),
    State.closed: (),
    State.cancelled: (),
}


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What the rules need to know about an incident."""

    state: State
    hold_reason: HoldReason | None = None
    assignee_id: uuid.UUID | None = None
    acknowledged_at: datetime | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: str | None = None
    reopen_count: int = 0
    escalation_level: int = 0
    estimated_resolution_at: datetime | None = None
    eta_alerted_for: datetime | None = None
    responded_at: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> IncidentFacts:
        return cls(
            state=State(row.state),
            hold_reason=HoldReason(row.hold_reason) if row.hold_reason else None,
            assignee_id=row.assignee_id,
            acknowledged_at=row.acknowledged_at,
            resolution_code=ResolutionCode(row.resolution_code) if row.resolution_code else None,
            resolution_notes=row.resolution_notes,
            reopen_count=row.reopen_count,
            escalation_level=row.escalation_level,
            estimated_resolution_at=row.estimated_resolution_at,
            eta_alerted_for=row.eta_alerted_for,
            responded_at=row.responded_at,
        )


@dataclass(frozen=True, slots=True)
class TransitionRequest:
    to: State
    hold_reason: HoldReason | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: str | None = None
    reason: str | None = None
    confirmation_note: str | None = None
    comment: str | None = None
    comment_public: bool | None = None
    assignee_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of a rule: field changes, the note on the state change, an optional comment."""

    changes: dict[str, Any]
    note: str | None = None
    comment: str | None = None
    comment_public: bool = False
    events: tuple[str, ...] = field(default=())


def refuse_if_final(facts: IncidentFacts, action: str) -> None:
    if facts.state in FINAL:
        raise Conflict(
            f"The incident is {facts.state}, which is final: it cannot be {action}.",
            slug="final-state",
        )


def _refuse_move(facts: IncidentFacts, to: State) -> Conflict:
    allowed = ALLOWED[facts.state]
    targets = ", ".join(allowed) if allowed else f"none ({facts.state} is final)"
    return Conflict(
        f"An incident cannot move from {facts.state} to {to}. "
        f"Allowed targets from {facts.state}: {targets}.",
        slug="transition-not-allowed",
    )


def _missing(*fields: str, why: str) -> Unprocessable:
    return Unprocessable(
        f"{why}: send {', '.join(fields)}.",
        errors=[ErrorItem(loc=["body", f], msg=f"{f} is required {why}") for f in fields],
        slug="missing-field",
    )


def plan_transition(
    facts: IncidentFacts,
    request: TransitionRequest,
    *,
    via: Via,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> Plan:
    """Check a state change against the table and its requirements; say what it changes.

    Required fields may come in the request or already be set on the record. Fields that the
    move does not use are ignored, except `reason` (the state change's note) and `comment`.
    """
    to = request.to
    if via in CUSTOMER_VERDICTS and facts.state is not State.resolved:
        # the customer answers a resolution; nothing else (a reject from `new` would have
        # acknowledged the incident and stopped its response clock)
        raise Conflict(
            f"Only a resolved incident can be {CUSTOMER_VERDICTS[via]}; this one is {facts.state}.",
            slug="transition-not-allowed",
        )
    if to not in ALLOWED[facts.state]:
        raise _refuse_move(facts, to)
    if via is Via.agent and to is State.closed and not request.confirmation_note:
        raise _missing(
            "confirmation_note",
            why="to close on the customer's behalf (confirmation received by phone or mail)",
        )

    changes: dict[str, Any] = {"state": to}
    note = request.reason
    comment, comment_public = request.comment, bool(request.comment_public)

    if to is State.in_progress:
        changes["hold_reason"] = None
        if facts.state is State.resolved:
            if via is not Via.customer_reject and not request.reason:
                raise _missing("reason", why="to reopen a resolved incident")
            changes.update(
                reopen_count=facts.reopen_count + 1,
                resolved_at=None,
                resolution_code=None,
                resolution_notes=None,
            )
            if (
                facts.estimated_resolution_at is not None
                and facts.estimated_resolution_at != facts.eta_alerted_for
            ):
                changes["eta_alert_at"] = facts.estimated_resolution_at
        if facts.acknowledged_at is None:
            changes["acknowledged_at"] = now
        assignee = request.assignee_id or facts.assignee_id or actor_id
        if via is Via.agent and assignee is not None:
            changes["assignee_id"] = assignee
    elif to is State.on_hold:
        hold_reason = request.hold_reason
        if hold_reason is None:
            raise _missing("hold_reason", why="to put an incident on hold")
        changes["hold_reason"] = hold_reason
        if hold_reason is HoldReason.awaiting_customer:
            if not request.comment:
                raise _missing(
                    "comment", why="to wait for the customer (the question asked, made public)"
                )
            if request.comment_public is False:
                raise Unprocessable.field(
                    ("body", "comment_public"),
                    "the question to the customer must be a public comment",
                )
            comment_public = True
    elif to is State.resolved:
        code = request.resolution_code or facts.resolution_code
        notes = request.resolution_notes or facts.resolution_notes
        missing = [
            name
            for name, value in (("resolution_code", code), ("resolution_notes", notes))
            if not value
        ]
        if missing:
            raise _missing(*missing, why="to resolve an incident")
        changes.update(
            resolution_code=code,
            resolution_notes=notes,
            resolved_at=now,
            hold_reason=None,
            eta_alert_at=None,
        )
    elif to is State.closed:
        changes.update(closed_at=now, eta_alert_at=None)
        note = request.confirmation_note or note
    elif to is State.cancelled:
        if not request.reason:
            raise _missing("reason", why="to cancel an incident")
        changes.update(hold_reason=None, eta_alert_at=None)
    if to in RESPONDING and facts.responded_at is None:
        changes["responded_at"] = now
    return Plan(changes=changes, note=note, comment=comment, comment_public=comment_public)


def plan_customer_reply(facts: IncidentFacts, now: datetime) -> Plan | None:
    """A customer's public comment answers the question the incident was waiting on: the
    incident moves back to in_progress, with what every move into in_progress does (the
    acknowledgement and the response, if not yet recorded: rebuilt clocks see the move too)."""
    if facts.state is State.on_hold and facts.hold_reason is HoldReason.awaiting_customer:
        request = TransitionRequest(to=State.in_progress, reason="The customer replied.")
        return plan_transition(facts, request, via=Via.customer_reply, actor_id=None, now=now)
    return None


def plan_escalation(facts: IncidentFacts) -> int:
    """The new escalation level, or 409 when the incident is final or already at the top."""
    refuse_if_final(facts, "escalated")
    if facts.escalation_level >= MAX_ESCALATION_LEVEL:
        raise Conflict(
            f"The incident is already at escalation level {MAX_ESCALATION_LEVEL}, the highest.",
            slug="escalation-at-maximum",
        )
    return facts.escalation_level + 1


def auto_close_due(resolved_at: datetime, now: datetime, days: int) -> bool:
    return now >= resolved_at + timedelta(days=days)


def plan_patch(
    facts: IncidentFacts,
    current: Mapping[Any, Any],
    patch: Mapping[str, Any],
    *,
    matrix: Mapping[int, Mapping[int, int]],
) -> dict[str, Any]:
    """The field changes a PATCH makes, with the derived ones (priority, ETA alert)."""
    refuse_if_final(facts, "changed")
    changes = dict(patch)
    major = changes.get("major", current["major"])
    if major:
        for name in ("impact", "urgency"):
            if changes.get(name, 1) != 1:
                raise Unprocessable.field(
                    ("body", name),
                    f"a major incident has {name} 1; send major=false to lower it",
                )
        changes["impact"] = changes["urgency"] = 1
    if "hold_reason" in changes:
        if facts.state is not State.on_hold:
            raise Unprocessable.field(
                ("body", "hold_reason"),
                "hold_reason is set by the transition to on_hold; the incident is not on hold",
            )
        if changes["hold_reason"] is None:
            raise Unprocessable.field(("body", "hold_reason"), "an incident on hold needs one")
        if (
            changes["hold_reason"] == HoldReason.awaiting_customer
            and facts.hold_reason is not HoldReason.awaiting_customer
        ):
            # waiting for the customer starts with the question asked, which a PATCH cannot
            # carry: that is the transition's (back to in_progress, then on_hold with it)
            raise Unprocessable.field(
                ("body", "hold_reason"),
                "waiting for the customer starts with the question asked: move the incident "
                "to in_progress, then to on_hold with hold_reason awaiting_customer and the "
                "question as a public comment (POST /transitions)",
            )
    if facts.state is State.resolved:
        for name in ("resolution_code", "resolution_notes"):
            if name in changes and not changes[name]:
                raise Unprocessable.field(
                    ("body", name), f"a resolved incident keeps its {name}; reopen it first"
                )
    impact = changes.get("impact", current["impact"])
    urgency = changes.get("urgency", current["urgency"])
    changes["priority"] = (
        matrix[impact][urgency]
        if ("impact" in changes or "urgency" in changes)
        else current["priority"]
    )
    if "estimated_resolution_at" in changes:
        eta = changes["estimated_resolution_at"]
        unresolved = facts.state not in (State.resolved, *FINAL)
        # One event per ETA: an ETA that already fired does not fire again.
        changes["eta_alert_at"] = eta if unresolved and eta != facts.eta_alerted_for else None
    return {k: v for k, v in changes.items() if current.get(k) != v}
