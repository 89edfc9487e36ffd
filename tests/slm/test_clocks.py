"""SLA clock rules as pure functions: segments, pauses, re-targeting, replay from history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.slm.calendar import WorkingCalendar, parse_week
from app.slm.clocks import (
    Clock,
    Kind,
    Mode,
    Moment,
    advance,
    elapsed_closed_us,
    live_elapsed_us,
    mode_of,
    replay,
    schedule,
    state_of,
    used_percent,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
ALWAYS = WorkingCalendar(timezone="UTC", always_on=True)
OFFICE = WorkingCalendar(
    timezone="UTC",
    week=parse_week({d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}),
)
H = timedelta(hours=1)


def clock(
    calendar: WorkingCalendar = ALWAYS,
    segments: tuple[tuple[datetime, datetime | None], ...] = ((T0, None),),
    mode: Mode = Mode.running,
    target_hours: float = 4,
    warn: int = 75,
) -> Clock:
    return Clock(
        kind=Kind.resolution,
        calendar=calendar,
        target_seconds=int(target_hours * 3600),
        warn_at_percent=warn,
        segments=segments,
        mode=mode,
        stopped_at=segments[-1][1] if mode is Mode.stopped and segments else None,
    )


def test_modes_follow_the_contract() -> None:
    def resolution(state: str, hold: str | None = None) -> Mode:
        return mode_of(Kind.resolution, state=state, hold_reason=hold, responded=False)

    assert resolution("new") is Mode.running
    assert resolution("in_progress") is Mode.running
    assert resolution("on_hold", "awaiting_customer") is Mode.paused
    assert resolution("on_hold", "awaiting_vendor") is Mode.paused
    assert resolution("on_hold", "awaiting_change") is Mode.running
    assert resolution("on_hold", "awaiting_problem") is Mode.running
    for state in ("resolved", "closed", "cancelled"):
        assert resolution(state) is Mode.stopped
    assert mode_of(Kind.response, state="on_hold", hold_reason=None, responded=False) is (
        Mode.running
    )
    assert mode_of(Kind.response, state="new", hold_reason=None, responded=True) is Mode.stopped


def test_a_running_clock_is_due_target_working_time_after_it_started() -> None:
    plan = schedule(clock(OFFICE, target_hours=10), warned=False, breach_notified=False)
    # Monday 09:00 + 10 working hours on 09-17 = Tuesday 11:00.
    assert plan.due_at == datetime(2026, 3, 3, 11, 0, tzinfo=UTC)
    assert plan.breach_at == plan.due_at
    # 75 % of 10 h = 7.5 h: Monday 16:30.
    assert plan.warn_at == datetime(2026, 3, 2, 16, 30, tzinfo=UTC)
    assert plan.next_check_at == plan.warn_at
    after_warning = schedule(clock(OFFICE, target_hours=10), warned=True, breach_notified=False)
    assert after_warning.next_check_at == plan.due_at


def test_pausing_keeps_the_time_counted_and_has_no_due_date() -> None:
    paused = clock(segments=((T0, T0 + H),), mode=Mode.paused)
    plan = schedule(paused, warned=False, breach_notified=False)
    assert plan.elapsed_closed_us == 3600 * 10**6
    assert plan.due_at is None
    assert plan.next_check_at is None
    resumed = clock(segments=((T0, T0 + H), (T0 + 5 * H, None)))
    # 1 h counted, 3 h to go from the resume at T0+5h.
    assert schedule(resumed, warned=False, breach_notified=False).due_at == T0 + 8 * H


def test_hold_time_is_measured_in_business_time_not_wall_clock() -> None:
    # On hold from Monday 16:00 to Tuesday 10:00 (18 wall-clock hours, 1 working hour).
    segments = ((T0, T0 + 7 * H), (T0 + 25 * H, None))
    resumed = clock(OFFICE, segments=segments, target_hours=10)
    # 7 h counted before the hold; 3 h to go from Tuesday 10:00 -> Tuesday 13:00.
    assert schedule(resumed, warned=False, breach_notified=False).due_at == datetime(
        2026, 3, 3, 13, 0, tzinfo=UTC
    )


def test_used_percent_is_rounded_to_hundredths() -> None:
    hour = 3600 * 10**6
    assert used_percent(2 * hour, 3 * 3600) == 66.67
    assert used_percent(hour // 3, 3600) == 33.33
    assert used_percent(0, 3600) == 0.0
    assert used_percent(hour * 12_345 // 10_000, 3600) == 123.45  # past the target
    assert used_percent(36_540_000, 3600) == 1.02  # exactly 1.015 %: the half to even
    assert used_percent(1, 3600) == 0.0  # a microsecond of an hour


def test_a_stopped_clock_is_met_or_breached() -> None:
    met = clock(segments=((T0, T0 + 3 * H),), mode=Mode.stopped)
    elapsed = elapsed_closed_us(met)
    assert state_of(Mode.stopped, 4 * 3600, elapsed) == ("met", False)
    assert used_percent(elapsed, 4 * 3600) == 75.0
    assert schedule(met, warned=False, breach_notified=False).breach_at is None

    late = clock(segments=((T0, T0 + 5 * H),), mode=Mode.stopped)
    plan = schedule(late, warned=False, breach_notified=False)
    assert plan.breach_at == T0 + 4 * H  # when it passed the target, not when it stopped
    assert plan.warn_at == T0 + 3 * H
    assert plan.next_check_at == T0 + 3 * H  # both events still owed
    elapsed = elapsed_closed_us(late)
    assert state_of(Mode.stopped, 4 * 3600, elapsed) == ("breached", True)
    assert used_percent(elapsed, 4 * 3600) == 125.0


def test_exactly_on_target_is_not_a_breach() -> None:
    on_time = clock(segments=((T0, T0 + 4 * H),), mode=Mode.stopped)
    assert schedule(on_time, warned=True, breach_notified=False).breach_at is None
    on_target = live_elapsed_us(ALWAYS, 0, T0, T0 + 4 * H)
    assert state_of(Mode.running, 4 * 3600, on_target) == ("running", False)
    past = live_elapsed_us(ALWAYS, 0, T0, T0 + 4 * H + timedelta(microseconds=1))
    assert state_of(Mode.running, 4 * 3600, past) == ("breached", True)


def test_retargeting_measures_the_same_segments_on_the_new_calendar() -> None:
    # Opened Friday 16:00; priority raised Monday 10:00 to a 24x7 target of 8 h.
    friday = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    segments = ((friday, None),)
    office = clock(OFFICE, segments=segments, target_hours=8)
    assert schedule(office, warned=False, breach_notified=False).due_at == datetime(
        2026, 3, 9, 16, 0, tzinfo=UTC
    )
    on_call = clock(ALWAYS, segments=segments, target_hours=8)
    # As if 24x7 had held from opened_at: due Saturday 00:00, already breached on Monday.
    plan = schedule(on_call, warned=False, breach_notified=False)
    assert plan.due_at == datetime(2026, 3, 7, 0, 0, tzinfo=UTC)
    now = datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
    assert live_elapsed_us(ALWAYS, 0, friday, now) == 66 * 3600 * 10**6


def test_advance_opens_and_closes_segments() -> None:
    segments = advance(((T0, None),), Mode.running, Mode.paused, T0 + H)
    assert segments == ((T0, T0 + H),)
    segments = advance(segments, Mode.paused, Mode.running, T0 + 2 * H)
    assert segments == ((T0, T0 + H), (T0 + 2 * H, None))
    assert advance(segments, Mode.running, Mode.running, T0 + 3 * H) == segments
    segments = advance(segments, Mode.running, Mode.stopped, T0 + 3 * H)
    assert segments == ((T0, T0 + H), (T0 + 2 * H, T0 + 3 * H))
    assert advance(((T0, None),), Mode.running, Mode.stopped, T0) == ()


# --- live updates and replay agree -----------------------------------------------------------

STATES = ["new", "in_progress", "on_hold", "resolved", "closed", "cancelled"]
HOLDS = [None, "awaiting_customer", "awaiting_vendor", "awaiting_change"]

steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 24 * 60),  # minutes after the previous step
        st.sampled_from(STATES),
        st.sampled_from(HOLDS),
        st.booleans(),  # a public staff comment in this step
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_live_updates_and_replay_give_the_same_clocks(
    history: list[tuple[int, str, str | None, bool]],
) -> None:
    """Clocks kept in step write by write equal clocks rebuilt from the same history."""
    at = T0
    state, hold, responded = "new", None, False
    live: dict[Kind, tuple[tuple[tuple[datetime, datetime | None], ...], Mode]] = {
        kind: (((T0, None),), Mode.running) for kind in Kind
    }
    moments = []
    for minutes, new_state, new_hold, comment in history:
        at += timedelta(minutes=minutes)
        state = new_state
        hold = new_hold if state == "on_hold" else None
        responded = (
            responded or comment or state in ("in_progress", "resolved", "closed", "cancelled")
        )
        for kind in Kind:
            segments, before = live[kind]
            after = mode_of(kind, state=state, hold_reason=hold, responded=responded)
            live[kind] = (advance(segments, before, after, at), after)
        moments.append(Moment(at, state, hold, responded))
    rebuilt = replay(T0, moments)
    for kind in Kind:
        assert rebuilt[kind].segments == live[kind][0]
        assert rebuilt[kind].mode is live[kind][1]
        # Elapsed time is the working time spent running, whatever the calendar.
        running = sum(((end or at) - start for start, end in rebuilt[kind].segments), timedelta())
        segments = rebuilt[kind].segments
        assert live_elapsed_us(
            ALWAYS,
            elapsed_closed_us(clock(segments=segments, mode=rebuilt[kind].mode)),
            segments[-1][0] if segments and segments[-1][1] is None else None,
            at,
        ) == running // timedelta(microseconds=1)


def test_a_clock_not_due_before_the_year_3000_has_no_due_time() -> None:
    """Agreements cannot ask for such a target (app/slm/service.py), but a clock that got one
    is still scheduled: it is never due, and nothing fails."""
    minute_a_week = WorkingCalendar(timezone="UTC", week=parse_week({"mon": [["09:00", "09:01"]]}))
    ten_years_in_hours = 10 * 366 * 24
    running = schedule(
        clock(minute_a_week, target_hours=ten_years_in_hours), warned=False, breach_notified=False
    )
    assert (running.due_at, running.warn_at, running.breach_at) == (None, None, None)
    assert running.next_check_at is None
    reachable = schedule(clock(minute_a_week, target_hours=1), warned=False, breach_notified=False)
    assert reachable.due_at == datetime(2027, 4, 19, 9, 1, tzinfo=UTC)  # T0 and 59 Mondays on
