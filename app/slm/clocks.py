"""SLA clock rules: pure functions over plain data (no I/O; time is passed in).

A clock is the list of working *segments* it ran — `(start, end)` pairs, `end` None while it
runs — counted on a business calendar against a target. Everything else (elapsed time, due
instant, warning and breach instants, state) is derived from the segments, so that:

- pausing keeps the time already counted (a segment closes, a later one opens);
- a priority change re-targets the clock "as if the new priority had held from opened_at":
  the same segments are measured against the new target on the new target's calendar;
- a rebuild from the journal (`replay`) yields exactly the segments the live updates built.

Rules (contract section 7): both clocks start at `opened_at`. `response` stops for good at the
first of: `in_progress`, the first public comment by staff, resolution (and, so that it never
runs forever, at closing or cancelling). `resolution` pauses while on hold awaiting the customer
or a vendor, stops at `resolved`, resumes on reopen, and stops at `closed`/`cancelled`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from app.slm.calendar import BeyondRange, WorkingCalendar, add_time, working_us

Segment = tuple[datetime, datetime | None]
ClockState = Literal["running", "paused", "met", "breached"]


class Kind(StrEnum):
    response = "response"
    resolution = "resolution"


class Mode(StrEnum):
    running = "running"
    paused = "paused"
    stopped = "stopped"


PAUSING_HOLDS = frozenset({"awaiting_customer", "awaiting_vendor"})
STOPPED_STATES = frozenset({"resolved", "closed", "cancelled"})
US = 1_000_000


def resolution_mode(state: str, hold_reason: str | None) -> Mode:
    if state in STOPPED_STATES:
        return Mode.stopped
    if state == "on_hold" and hold_reason in PAUSING_HOLDS:
        return Mode.paused
    return Mode.running


def response_mode(responded: bool) -> Mode:
    return Mode.stopped if responded else Mode.running


def mode_of(kind: Kind, *, state: str, hold_reason: str | None, responded: bool) -> Mode:
    if kind is Kind.response:
        return response_mode(responded)
    return resolution_mode(state, hold_reason)


def advance(
    segments: Sequence[Segment], before: Mode, after: Mode, at: datetime
) -> tuple[Segment, ...]:
    """The segments after the clock's mode changes from `before` to `after` at `at`."""
    result = list(segments)
    if before is Mode.running and after is not Mode.running and result:
        start, _ = result[-1]
        if at > start:
            result[-1] = (start, at)
        else:
            result.pop()  # ran for no time at all
    elif before is not Mode.running and after is Mode.running:
        result.append((at, None))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class Clock:
    kind: Kind
    calendar: WorkingCalendar
    target_seconds: int
    warn_at_percent: int
    segments: tuple[Segment, ...]
    mode: Mode
    stopped_at: datetime | None = None

    @property
    def target_us(self) -> int:
        return self.target_seconds * US

    @property
    def warn_us(self) -> int:
        return math.ceil(self.target_seconds * self.warn_at_percent * US / 100)

    @property
    def running_since(self) -> datetime | None:
        if self.segments and self.segments[-1][1] is None:
            return self.segments[-1][0]
        return None


def elapsed_closed_us(clock: Clock) -> int:
    """Working time of the finished segments."""
    return sum(
        working_us(clock.calendar, start, end) for start, end in clock.segments if end is not None
    )


def live_elapsed_us(
    calendar: WorkingCalendar, closed_us: int, running_since: datetime | None, now: datetime
) -> int:
    """Working time counted as of `now`: the finished segments plus the running one."""
    if running_since is None or now <= running_since:
        return closed_us
    return closed_us + working_us(calendar, running_since, now)


def reach(clock: Clock, amount_us: int, *, extend_last: bool = False) -> datetime | None:
    """The earliest instant at which the clock's working time reaches `amount_us`, or None if
    its segments never get there, or not before the calendar arithmetic's horizon (year 3000:
    a calendar of a minute a week and a target of years). `extend_last` treats the last
    segment as still running (the instant the clock *would* have reached it)."""
    counted = 0
    segments = list(clock.segments)
    if extend_last and segments:
        segments[-1] = (segments[-1][0], None)
    for start, end in segments:
        remaining = amount_us - counted
        if end is None:
            return _added(clock.calendar, start, remaining)
        worked = working_us(clock.calendar, start, end)
        if worked >= remaining:
            return _added(clock.calendar, start, remaining)
        counted += worked
    return None


def _added(calendar: WorkingCalendar, start: datetime, amount_us: int) -> datetime | None:
    try:
        return add_time(calendar, start, amount_us)
    except BeyondRange:
        return None


@dataclass(frozen=True, slots=True)
class Schedule:
    """The derived, stored instants of a clock."""

    elapsed_closed_us: int
    due_at: datetime | None
    warn_at: datetime | None
    breach_at: datetime | None
    next_check_at: datetime | None


def schedule(clock: Clock, *, warned: bool, breach_notified: bool) -> Schedule:
    """Derive the clock's instants.

    - `due_at`: when elapsed reaches the target if the clock keeps running; null while paused;
      for a stopped clock, when it would have been due had it kept running.
    - `breach_at`: when the clock passes its target (a running clock at `due_at`; a paused or
      stopped one only if its counted time already exceeds the target).
    - `warn_at`: likewise for `warn_at_percent` of the target.
    - `next_check_at`: the earliest event still to emit (warning, breach), for the worker.
    """
    closed = elapsed_closed_us(clock)
    if clock.mode is Mode.running:
        due_at = reach(clock, clock.target_us)
        warn_at = reach(clock, clock.warn_us)
        breach_at = due_at
    else:
        due_at = (
            None if clock.mode is Mode.paused else reach(clock, clock.target_us, extend_last=True)
        )
        warn_at = reach(clock, clock.warn_us) if closed >= clock.warn_us else None
        breach_at = reach(clock, clock.target_us) if closed > clock.target_us else None
    pending = [
        instant
        for instant, done in ((warn_at, warned), (breach_at, breach_notified))
        if instant is not None and not done
    ]
    return Schedule(closed, due_at, warn_at, breach_at, min(pending) if pending else None)


def used_percent(elapsed_us: int, target_seconds: int) -> float:
    """How much of its target a clock has used, in % (two decimals): hundredths of a percent
    rounded to the nearest, half to even (`round(x, 2)` formats the float in decimal: twice
    the cost, and a page of incidents shows a hundred clocks)."""
    return round(elapsed_us / (target_seconds * (US // 10_000))) / 100


def state_of(mode: str, target_seconds: int, elapsed_us: int) -> tuple[ClockState, bool]:
    """The clock's state as shown, and whether it is breached, given its `Mode` (or the mode's
    stored value) and the working time it has counted (`live_elapsed_us`)."""
    if elapsed_us > target_seconds * US:
        return "breached", True
    if mode == Mode.stopped:
        return "met", False
    if mode == Mode.paused:
        return "paused", False
    return "running", False


@dataclass(frozen=True, slots=True)
class Moment:
    """The incident as it was from `at` on: what the journal says about the clocks."""

    at: datetime
    state: str
    hold_reason: str | None
    responded: bool


@dataclass(frozen=True, slots=True)
class Replayed:
    segments: tuple[Segment, ...]
    mode: Mode
    stopped_at: datetime | None


def replay(opened_at: datetime, moments: Iterable[Moment]) -> dict[Kind, Replayed]:
    """Rebuild both clocks' segments from the incident's history (oldest first)."""
    history = list(moments)
    result: dict[Kind, Replayed] = {}
    for kind in Kind:
        mode = Mode.running
        segments: tuple[Segment, ...] = ((opened_at, None),)
        stopped_at: datetime | None = None
        for moment in history:
            at = max(moment.at, opened_at)
            after = mode_of(
                kind,
                state=moment.state,
                hold_reason=moment.hold_reason,
                responded=moment.responded,
            )
            if after is mode:
                continue
            segments = advance(segments, mode, after, at)
            stopped_at = at if after is Mode.stopped else None
            mode = after
        result[kind] = Replayed(segments, mode, stopped_at)
    return result
