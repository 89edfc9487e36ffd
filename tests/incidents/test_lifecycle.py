"""The incident lifecycle rules, tested exhaustively as pure functions."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import Conflict, Unprocessable
from app.incidents.lifecycle import (
    ALLOWED,
    FINAL,
    HoldReason,
    IncidentFacts,
    ResolutionCode,
    State,
    TransitionRequest,
    Via,
    auto_close_due,
    plan_customer_reply,
    plan_escalation,
    plan_patch,
    plan_transition,
)
from app.slm.priority import DEFAULT_MATRIX

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACTOR = uuid.UUID(int=7)

# The contract's table, written out independently of the implementation.
CONTRACT_TABLE = {
    ("new", "in_progress"),
    ("new", "on_hold"),
    ("in_progress", "on_hold"),
    ("on_hold", "in_progress"),
    ("new", "resolved"),
    ("in_progress", "resolved"),
    ("on_hold", "resolved"),
    ("resolved", "closed"),
    ("resolved", "in_progress"),
    ("new", "cancelled"),
    ("in_progress", "cancelled"),
    ("on_hold", "cancelled"),
}


def complete_request(to: State) -> TransitionRequest:
    """A request that carries everything any move to `to` could require."""
    return TransitionRequest(
        to=to,
        hold_reason=HoldReason.awaiting_customer,
        resolution_code=ResolutionCode.solved,
        resolution_notes="Restarted the billing daemon.",
        reason="Because.",
        confirmation_note="Customer confirmed by phone.",
        comment="Which version do you run?",
    )


def facts_in(state: State) -> IncidentFacts:
    return IncidentFacts(
        state=state,
        hold_reason=HoldReason.awaiting_vendor if state is State.on_hold else None,
    )


@pytest.mark.parametrize(("source", "target"), list(itertools.product(State, State)))
def test_every_pair_is_allowed_or_refused_as_the_contract_says(
    source: State, target: State
) -> None:
    facts = facts_in(source)
    if (source.value, target.value) in CONTRACT_TABLE:
        plan = plan_transition(
            facts, complete_request(target), via=Via.agent, actor_id=ACTOR, now=NOW
        )
        assert plan.changes["state"] is target
    else:
        with pytest.raises(Conflict) as refused:
            plan_transition(facts, complete_request(target), via=Via.agent, actor_id=ACTOR, now=NOW)
        allowed = ALLOWED[source]
        for name in allowed:
            assert name in refused.value.detail
        if not allowed:
            assert "final" in refused.value.detail


def test_the_table_matches_the_contract() -> None:
    pairs = {(s.value, t.value) for s, targets in ALLOWED.items() for t in targets}
    assert pairs == CONTRACT_TABLE
    assert {State.closed, State.cancelled} == FINAL


# (from, to, field) -> the field a move requires, checked by leaving it out.
REQUIREMENTS = [
    *[(s, State.on_hold, "hold_reason") for s in (State.new, State.in_progress)],
    *[
        (s, State.resolved, f)
        for s in (State.new, State.in_progress, State.on_hold)
        for f in ("resolution_code", "resolution_notes")
    ],
    (State.resolved, State.closed, "confirmation_note"),
    (State.resolved, State.in_progress, "reason"),
    *[(s, State.cancelled, "reason") for s in (State.new, State.in_progress, State.on_hold)],
]


@pytest.mark.parametrize(("source", "target", "missing"), REQUIREMENTS)
def test_a_required_field_missing_is_a_422_naming_it(
    source: State, target: State, missing: str
) -> None:
    request = complete_request(target)
    fields = {k: getattr(request, k) for k in request.__dataclass_fields__}
    fields[missing] = None
    with pytest.raises(Unprocessable) as invalid:
        plan_transition(
            facts_in(source),
            TransitionRequest(**fields),
            via=Via.agent,
            actor_id=ACTOR,
            now=NOW,
        )
    assert invalid.value.errors is not None
    assert ["body", missing] in [e.loc for e in invalid.value.errors]


def test_required_fields_may_already_be_on_the_record() -> None:
    facts = IncidentFacts(
        state=State.in_progress,
        resolution_code=ResolutionCode.workaround,
        resolution_notes="Use the backup trunk.",
    )
    plan = plan_transition(
        facts, TransitionRequest(to=State.resolved), via=Via.agent, actor_id=ACTOR, now=NOW
    )
    assert plan.changes["resolution_code"] is ResolutionCode.workaround
    assert plan.changes["resolved_at"] == NOW


def test_awaiting_customer_needs_a_public_question() -> None:
    facts = facts_in(State.in_progress)
    request = TransitionRequest(to=State.on_hold, hold_reason=HoldReason.awaiting_customer)
    with pytest.raises(Unprocessable):
        plan_transition(facts, request, via=Via.agent, actor_id=ACTOR, now=NOW)
    private = TransitionRequest(
        to=State.on_hold,
        hold_reason=HoldReason.awaiting_customer,
        comment="Which version?",
        comment_public=False,
    )
    with pytest.raises(Unprocessable):
        plan_transition(facts, private, via=Via.agent, actor_id=ACTOR, now=NOW)
    asked = TransitionRequest(
        to=State.on_hold, hold_reason=HoldReason.awaiting_customer, comment="Which version?"
    )
    plan = plan_transition(facts, asked, via=Via.agent, actor_id=ACTOR, now=NOW)
    assert plan.comment == "Which version?"
    assert plan.comment_public is True


def test_other_hold_reasons_need_no_comment() -> None:
    request = TransitionRequest(to=State.on_hold, hold_reason=HoldReason.awaiting_vendor)
    plan = plan_transition(facts_in(State.new), request, via=Via.agent, actor_id=ACTOR, now=NOW)
    assert plan.changes["hold_reason"] is HoldReason.awaiting_vendor


def test_starting_work_acknowledges_and_assigns_the_caller_by_default() -> None:
    plan = plan_transition(
        facts_in(State.new),
        TransitionRequest(to=State.in_progress),
        via=Via.agent,
        actor_id=ACTOR,
        now=NOW,
    )
    assert plan.changes["acknowledged_at"] == NOW
    assert plan.changes["assignee_id"] == ACTOR
    other = uuid.UUID(int=9)
    keep = IncidentFacts(state=State.new, assignee_id=other)
    plan = plan_transition(
        keep, TransitionRequest(to=State.in_progress), via=Via.agent, actor_id=ACTOR, now=NOW
    )
    assert plan.changes["assignee_id"] == other


def test_reopening_counts_and_clears_the_resolution() -> None:
    facts = IncidentFacts(
        state=State.resolved,
        resolution_code=ResolutionCode.solved,
        resolution_notes="done",
        reopen_count=1,
        acknowledged_at=NOW,
    )
    plan = plan_transition(
        facts,
        TransitionRequest(to=State.in_progress, reason="Still broken"),
        via=Via.agent,
        actor_id=ACTOR,
        now=NOW,
    )
    assert plan.changes["reopen_count"] == 2
    assert plan.changes["resolution_code"] is None
    assert plan.changes["resolved_at"] is None
    assert plan.note == "Still broken"
    assert "acknowledged_at" not in plan.changes


def test_customer_reject_needs_its_reason_only_as_a_note() -> None:
    facts = IncidentFacts(state=State.resolved)
    plan = plan_transition(
        facts,
        TransitionRequest(to=State.in_progress, reason="No"),
        via=Via.customer_reject,
        actor_id=None,
        now=NOW,
    )
    assert plan.changes["reopen_count"] == 1
    assert "assignee_id" not in plan.changes


def test_customer_confirmation_closes_without_a_note() -> None:
    plan = plan_transition(
        IncidentFacts(state=State.resolved),
        TransitionRequest(to=State.closed),
        via=Via.customer_confirm,
        actor_id=None,
        now=NOW,
    )
    assert plan.changes["closed_at"] == NOW


def test_a_customer_reply_resumes_only_an_incident_awaiting_the_customer() -> None:
    earlier = NOW - timedelta(hours=1)
    waiting = IncidentFacts(
        state=State.on_hold,
        hold_reason=HoldReason.awaiting_customer,
        acknowledged_at=earlier,
        responded_at=earlier,
    )
    plan = plan_customer_reply(waiting, NOW)
    assert plan is not None
    assert plan.changes == {"state": State.in_progress, "hold_reason": None}
    # Never acknowledged (on hold straight from new): the move into in_progress does it.
    fresh = IncidentFacts(state=State.on_hold, hold_reason=HoldReason.awaiting_customer)
    plan = plan_customer_reply(fresh, NOW)
    assert plan is not None
    assert plan.changes == {
        "state": State.in_progress,
        "hold_reason": None,
        "acknowledged_at": NOW,
        "responded_at": NOW,
    }
    vendor = IncidentFacts(state=State.on_hold, hold_reason=HoldReason.awaiting_vendor)
    assert plan_customer_reply(vendor, NOW) is None
    assert plan_customer_reply(IncidentFacts(state=State.in_progress), NOW) is None


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("level", [0, 1, 2])
def test_escalation_goes_up_one_level_to_two_and_never_on_final(state: State, level: int) -> None:
    facts = IncidentFacts(state=state, escalation_level=level)
    if state in FINAL or level == 2:
        with pytest.raises(Conflict):
            plan_escalation(facts)
    else:
        assert plan_escalation(facts) == level + 1


def test_auto_close_is_due_after_the_configured_days() -> None:
    assert not auto_close_due(NOW, NOW + timedelta(days=7) - timedelta(seconds=1), 7)
    assert auto_close_due(NOW, NOW + timedelta(days=7), 7)


CURRENT = {
    "impact": 3,
    "urgency": 3,
    "priority": 5,
    "major": False,
    "title": "t",
    "estimated_resolution_at": None,
}


def test_patch_rederives_priority_from_the_matrix() -> None:
    changes = plan_patch(facts_in(State.new), CURRENT, {"impact": 1}, matrix=DEFAULT_MATRIX)
    assert changes == {"impact": 1, "priority": 3}


def test_major_forces_impact_and_urgency_one() -> None:
    changes = plan_patch(facts_in(State.new), CURRENT, {"major": True}, matrix=DEFAULT_MATRIX)
    assert changes == {"major": True, "impact": 1, "urgency": 1, "priority": 1}
    major = {**CURRENT, "major": True, "impact": 1, "urgency": 1, "priority": 1}
    with pytest.raises(Unprocessable):
        plan_patch(facts_in(State.new), major, {"urgency": 2}, matrix=DEFAULT_MATRIX)


@pytest.mark.parametrize("state", sorted(FINAL))
def test_final_incidents_cannot_be_patched(state: State) -> None:
    with pytest.raises(Conflict):
        plan_patch(facts_in(state), CURRENT, {"title": "x"}, matrix=DEFAULT_MATRIX)


def test_hold_reason_can_only_be_changed_while_on_hold() -> None:
    with pytest.raises(Unprocessable):
        plan_patch(
            facts_in(State.in_progress),
            CURRENT,
            {"hold_reason": HoldReason.awaiting_vendor},
            matrix=DEFAULT_MATRIX,
        )
    changes = plan_patch(
        facts_in(State.on_hold),
        {**CURRENT, "hold_reason": "awaiting_vendor"},
        {"hold_reason": HoldReason.awaiting_change},
        matrix=DEFAULT_MATRIX,
    )
    assert changes["hold_reason"] is HoldReason.awaiting_change


def test_an_eta_fires_once() -> None:
    eta = NOW + timedelta(hours=4)
    changes = plan_patch(
        facts_in(State.in_progress),
        CURRENT,
        {"estimated_resolution_at": eta},
        matrix=DEFAULT_MATRIX,
    )
    assert changes["eta_alert_at"] == eta
    fired = IncidentFacts(state=State.in_progress, eta_alerted_for=eta)
    changes = plan_patch(fired, CURRENT, {"estimated_resolution_at": eta}, matrix=DEFAULT_MATRIX)
    assert changes.get("eta_alert_at") is None  # no alert armed for an ETA that already fired


# --- random walks through the lifecycle ------------------------------------------------------

moves = st.lists(st.sampled_from(list(State)), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(moves)
def test_random_walks_keep_the_record_consistent(targets: list[State]) -> None:
    """Whatever the sequence of requests, accepted moves keep the invariants a user relies on:
    timestamps match the state, reopens are counted, final states stay final."""
    record: dict[str, object] = {
        "state": State.new,
        "hold_reason": None,
        "resolved_at": None,
        "closed_at": None,
        "reopen_count": 0,
        "acknowledged_at": None,
        "resolution_code": None,
        "resolution_notes": None,
        "assignee_id": None,
    }
    reopens = 0
    for step, target in enumerate(targets):
        now = NOW + timedelta(minutes=step)
        facts = IncidentFacts(
            state=record["state"],  # type: ignore[arg-type]
            hold_reason=record["hold_reason"],  # type: ignore[arg-type]
            reopen_count=record["reopen_count"],  # type: ignore[arg-type]
            acknowledged_at=record["acknowledged_at"],  # type: ignore[arg-type]
        )
        request = complete_request(target)
        if (facts.state.value, target.value) not in CONTRACT_TABLE:
            with pytest.raises(Conflict):
                plan_transition(facts, request, via=Via.agent, actor_id=ACTOR, now=now)
            continue
        plan = plan_transition(facts, request, via=Via.agent, actor_id=ACTOR, now=now)
        if facts.state is State.resolved and target is State.in_progress:
            reopens += 1
        record.update(plan.changes)
        state = record["state"]
        assert record["reopen_count"] == reopens
        assert (record["hold_reason"] is not None) == (state is State.on_hold)
        assert (record["resolved_at"] is not None) == (state in (State.resolved, State.closed))
        assert (record["closed_at"] is not None) == (state is State.closed)
        if state is State.in_progress:
            assert record["acknowledged_at"] is not None
            assert record["assignee_id"] is not None
