"""Tests for app.slm.calendar: property tests against a brute-force reference plus examples
whose expected values were worked out by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.slm.calendar import (
    HORIZON,
    WEEKDAYS,
    BeyondRange,
    WorkingCalendar,
    add_seconds,
    elapsed_seconds,
    format_week,
    parse_week,
    working_time,
    working_us,
    working_us_until,
)
from tests.slm.calendar_reference import ReferenceCalendar

US = timedelta(microseconds=1)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

ZONES = ("Europe/Berlin", "America/New_York", "Europe/Moscow", "Asia/Kolkata", "UTC")
# Dates with UTC-offset changes, per zone: US spring/fall 2026, EU spring/fall 2026, Moscow's last
# fall-back to +03 (2010-10-31), its spring-forward to permanent +04 (2011-03-27) and its 2 h
# fall-back to +03 (2014-10-26).  Any zone may also get any of the dates, or plain ones.
ZONE_ANCHORS = {
    "Europe/Berlin": (date(2026, 3, 29), date(2026, 10, 25)),
    "America/New_York": (date(2026, 3, 8), date(2026, 11, 1)),
    "Europe/Moscow": (date(2010, 10, 31), date(2011, 3, 27), date(2014, 10, 26)),
    "Asia/Kolkata": (),
    "UTC": (),
}
ANCHORS = (
    *(day for days in ZONE_ANCHORS.values() for day in days),
    date(2011, 10, 30),
    date(2026, 7, 15),
)

MAIN = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALLER = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def local(
    zone: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=zone)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def eight_by_five(
    tz: str = "Europe/Berlin", holidays: frozenset[date] = frozenset()
) -> WorkingCalendar:
    hours = {day: [["09:00", "18:00"]] for day in WEEKDAYS[:5]}
    return WorkingCalendar(tz, week=parse_week(hours), holidays=holidays)


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    tz: str
    anchor: date
    hours: dict[str, list[list[str]]]
    holidays: frozenset[date]
    always_on: bool

    def calendar(self) -> WorkingCalendar:
        return WorkingCalendar(
            self.tz,
            always_on=self.always_on,
            week=parse_week(self.hours),
            holidays=self.holidays,
        )

    def reference(self) -> ReferenceCalendar:
        return ReferenceCalendar(self.tz, self.hours, set(self.holidays), self.always_on)


@st.composite
def day_intervals(draw: st.DrawFn, grid: int, dst_day: bool) -> list[tuple[int, int]]:
    modes = ["none", "random", "random", "night", "full", "from_midnight", "to_midnight"]
    mode = draw(st.sampled_from(modes + ["night", "night", "straddle"] * (3 if dst_day else 0)))
    if mode == "none":
        return []
    if mode == "straddle":
        # One interval ending inside 02:00-03:00 (the skipped hour of all spring-forward days
        # used here), one starting just after it: their converted forms overlap.
        a = draw(st.sampled_from([60, 90, 105, 120]))
        b = draw(st.sampled_from([135, 150, 165]))
        c = draw(st.sampled_from([180, 195, 210]))
        d = draw(st.sampled_from([225, 240, 300]))
        return [(a, b), (c, d)]
    if mode == "full":
        return [(0, 1440)]
    count = draw(st.integers(1, 3))
    # "night" keeps the boundaries between 01:00 and 04:00, where the DST changes happen (and
    # where converted intervals of one day can overlap, e.g. 02:00-02:30 and 03:00-04:00 on a
    # spring-forward day).
    slots = (
        st.integers(60 // grid, 240 // grid) if mode == "night" else st.integers(0, 1440 // grid)
    )
    points = sorted(grid * p for p in draw(st.lists(slots, min_size=2 * count, max_size=2 * count)))
    if mode == "from_midnight":
        points[0] = 0
    if mode == "to_midnight":
        points[-1] = 1440
    # Consecutive pairs of sorted points never overlap, but they may touch; touching intervals
    # stay apart (each boundary is converted on its own, as in the reference).
    return [
        (points[2 * i], points[2 * i + 1])
        for i in range(count)
        if points[2 * i] != points[2 * i + 1]
    ]


@st.composite
def cases(draw: st.DrawFn, holiday_spread: tuple[int, int] = (-4, 4)) -> Case:
    tz = draw(st.sampled_from(ZONES))
    own = ZONE_ANCHORS[tz]
    use_own = bool(own) and draw(st.booleans())
    anchor = draw(st.sampled_from(own if use_own else ANCHORS))
    grid = draw(st.sampled_from([15, 30]))
    week = [draw(day_intervals(grid, i == anchor.weekday())) for i in range(7)]
    if not any(week):
        week[draw(st.integers(0, 6))] = [(9 * 60, 17 * 60)]
    hours = {WEEKDAYS[i]: [[hhmm(s), hhmm(e)] for s, e in day] for i, day in enumerate(week) if day}
    holidays = draw(
        st.frozensets(
            st.integers(*holiday_spread).map(lambda k: anchor + timedelta(days=k)), max_size=4
        )
    )
    always_on = draw(st.integers(0, 9)) == 0
    return Case(tz, anchor, hours, holidays, always_on)


def local_boundary_to_utc(zone: ZoneInfo, day: date, value: str) -> datetime:
    if value == "24:00":
        day, value = day + timedelta(days=1), "00:00"
    hour, minute = map(int, value.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


@st.composite
def instants(draw: st.DrawFn, case: Case) -> datetime:
    """Minute-aligned UTC instants around the anchor date, or on/next to interval edges."""
    if draw(st.booleans()):
        base = datetime.combine(case.anchor, time(), tzinfo=UTC)
        return base + timedelta(minutes=draw(st.integers(-2 * 1440, 3 * 1440)))
    day = case.anchor + timedelta(days=draw(st.integers(-2, 2)))
    intervals = case.hours.get(WEEKDAYS[day.weekday()], [])
    value = draw(st.sampled_from([v for pair in intervals for v in pair])) if intervals else "00:00"
    edge = local_boundary_to_utc(ZoneInfo(case.tz), day, value)
    return edge + timedelta(minutes=draw(st.sampled_from([-1, 0, 1])))


micro_jitter = st.one_of(st.just(0), st.integers(0, 59_999_999))


# ----------------------------------------------------------------------------------------------
# Property tests against the reference
# ----------------------------------------------------------------------------------------------


@MAIN
@given(data=st.data())
def test_elapsed_matches_reference(data: st.DataObject) -> None:
    case = data.draw(cases())
    a, b = sorted([data.draw(instants(case)), data.draw(instants(case))])
    cal, ref = case.calendar(), case.reference()
    expected = ref.elapsed(a, b)
    assert elapsed_seconds(cal, a, b) == expected
    assert working_time(cal, a, b) == timedelta(seconds=expected)
    if b > a:
        assert elapsed_seconds(cal, b, a) == 0
        assert working_time(cal, b, a) == timedelta(0)


@SMALLER
@given(data=st.data())
def test_working_time_until_one_end_matches_each_span(data: st.DataObject) -> None:
    """A page of clocks counts their running segments up to one `now` (`working_us_until`):
    the same working time as each span on its own, zero for a start at or after the end."""
    case = data.draw(cases())
    cal = case.calendar()
    end = data.draw(instants(case))
    until_end = working_us_until(cal, end)
    for _ in range(5):
        start = data.draw(instants(case)) + timedelta(microseconds=data.draw(micro_jitter))
        assert until_end(start) == working_us(cal, start, end)


@MAIN
@given(data=st.data())
def test_add_matches_reference(data: st.DataObject) -> None:
    case = data.draw(cases())
    start = data.draw(instants(case))
    horizon = data.draw(st.one_of(st.integers(0, 3 * 1440), st.integers(2 * 1440, 4 * 1440)))
    cal, ref = case.calendar(), case.reference()
    available = ref.elapsed(start, start + timedelta(minutes=horizon))
    # (seconds == 0 is covered by the other tests; here mostly > 0 when anything is reachable)
    seconds = 60 * data.draw(st.integers(min(1, available // 60), available // 60))
    expected = ref.add(start, seconds)
    result = add_seconds(cal, start, seconds)
    assert result == expected
    assert result.utcoffset() == timedelta(0)
    assert elapsed_seconds(cal, start, result) == seconds


@MAIN
@given(data=st.data())
def test_add_is_exact_and_earliest(data: st.DataObject) -> None:
    case = data.draw(cases())
    cal = case.calendar()
    start = data.draw(instants(case)) + timedelta(microseconds=data.draw(micro_jitter))
    seconds = data.draw(
        st.one_of(st.integers(0, 3 * 86_400), st.integers(0, 40 * 86_400), st.integers(0, 5))
    )
    end = add_seconds(cal, start, seconds)
    assert end >= start
    assert working_time(cal, start, end) == timedelta(seconds=seconds)
    assert elapsed_seconds(cal, start, end) == seconds
    if seconds > 0:
        # Earliest: one microsecond earlier the working time has not been reached yet.
        assert working_time(cal, start, end - US) < timedelta(seconds=seconds)
        assert elapsed_seconds(cal, start, end - US) == seconds - 1
    else:
        assert end == start


@MAIN
@given(data=st.data())
def test_additive_and_monotonic(data: st.DataObject) -> None:
    case = data.draw(cases())
    cal = case.calendar()
    a, b, c = sorted(
        data.draw(instants(case)) + timedelta(microseconds=data.draw(micro_jitter))
        for _ in range(3)
    )
    ab, bc, ac = working_time(cal, a, b), working_time(cal, b, c), working_time(cal, a, c)
    assert ac == ab + bc
    assert timedelta(0) <= ab <= ac
    assert bc <= ac
    assert elapsed_seconds(cal, a, b) <= elapsed_seconds(cal, a, c)
    assert elapsed_seconds(cal, a, b) + elapsed_seconds(cal, b, c) <= elapsed_seconds(cal, a, c)
    s1 = data.draw(st.integers(0, 2 * 86_400))
    s2 = data.draw(st.integers(0, 2 * 86_400))
    e1 = add_seconds(cal, a, s1)
    e12 = add_seconds(cal, a, s1 + s2)
    assert e1 <= e12
    if s2 > 0:
        assert add_seconds(cal, e1, s2) == e12


@SMALLER
@given(data=st.data())
def test_long_spans_agree_with_small_steps(data: st.DataObject) -> None:
    """Week skipping must give what small, non-skipping steps give, across DST changes and
    holidays spread over more than a year."""
    case = data.draw(cases(holiday_spread=(-10, 420)))
    cal = case.calendar()
    start = data.draw(instants(case)) + timedelta(microseconds=data.draw(micro_jitter))
    span = timedelta(days=data.draw(st.integers(0, 420)), minutes=data.draw(st.integers(0, 1440)))
    end = start + span
    chunk = timedelta(hours=23)
    pieces, t = timedelta(0), start
    while t < end:
        nxt = min(t + chunk, end)
        pieces += working_time(cal, t, nxt)
        t = nxt
    assert working_time(cal, start, end) == pieces

    weekly_minutes = sum(e - s for day in parse_week(case.hours) for s, e in day)
    step = max(60, weekly_minutes * 60 // 3)
    total = data.draw(st.integers(0, 60)) * step + data.draw(st.integers(0, step))
    t, left = start, total
    while left > 0:
        amount = min(step, left)
        t = add_seconds(cal, t, amount)
        left -= amount
    assert add_seconds(cal, start, total) == t


# ----------------------------------------------------------------------------------------------
# Hand-computed examples
# ----------------------------------------------------------------------------------------------


def test_eight_by_five_friday_afternoon_rolls_to_monday() -> None:
    cal = eight_by_five()
    # Friday 2026-03-06 17:00 CET: one hour left on Friday, one more on Monday from 09:00.
    result = add_seconds(cal, local(BERLIN, 2026, 3, 6, 17, 0), 2 * 3600)
    assert result == local(BERLIN, 2026, 3, 9, 10, 0)
    assert result.tzinfo == UTC
    assert result == utc(2026, 3, 9, 9, 0)


def test_eight_by_five_monday_holiday_pushes_to_tuesday() -> None:
    cal = eight_by_five(holidays=frozenset({date(2026, 3, 9)}))
    result = add_seconds(cal, local(BERLIN, 2026, 3, 6, 17, 0), 2 * 3600)
    assert result == local(BERLIN, 2026, 3, 10, 10, 0)


def test_eight_by_five_across_spring_forward_weekend() -> None:
    cal = eight_by_five()
    # Friday 17:00 CET (16:00Z) -> Monday 10:00 CEST (08:00Z).
    assert add_seconds(cal, local(BERLIN, 2026, 3, 27, 17, 0), 7200) == utc(2026, 3, 30, 8, 0)


def test_eight_by_five_weekend_has_no_working_time() -> None:
    cal = eight_by_five()
    assert (
        elapsed_seconds(cal, local(BERLIN, 2026, 3, 6, 18, 0), local(BERLIN, 2026, 3, 9, 9, 0)) == 0
    )
    # Saturday noon to Monday 09:30 -> 30 minutes.
    assert (
        elapsed_seconds(cal, local(BERLIN, 2026, 3, 7, 12), local(BERLIN, 2026, 3, 9, 9, 30))
        == 1800
    )
    # A whole week: 5 x 9 h.
    assert elapsed_seconds(cal, local(BERLIN, 2026, 3, 2), local(BERLIN, 2026, 3, 9)) == 45 * 3600


def test_eight_by_five_ends_exactly_at_closing_time() -> None:
    cal = eight_by_five()
    # Monday 09:00 + 9 h ends Monday 18:00, not Tuesday 09:00.
    assert add_seconds(cal, local(BERLIN, 2026, 3, 9, 9), 9 * 3600) == local(BERLIN, 2026, 3, 9, 18)
    # Starting outside hours: Saturday + 1 s -> Monday 09:00:01.
    assert add_seconds(cal, local(BERLIN, 2026, 3, 7, 12), 1) == local(BERLIN, 2026, 3, 9, 9, 0, 1)


def test_add_zero_returns_start_even_outside_hours() -> None:
    cal = eight_by_five()
    start = local(BERLIN, 2026, 3, 7, 12, 34, 56, 789)
    result = add_seconds(cal, start, 0)
    assert result == start
    assert result.tzinfo == UTC


def _all_day(day: str, tz: str) -> WorkingCalendar:
    return WorkingCalendar(tz, week=parse_week({day: [["00:00", "24:00"]]}))


@pytest.mark.parametrize(
    ("tz", "sunday", "hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Europe/Berlin", date(2026, 7, 12), 24),
    ],
)
def test_full_day_across_dst_change(tz: str, sunday: date, hours: int) -> None:
    cal = _all_day("sun", tz)
    zone = ZoneInfo(tz)
    saturday = datetime.combine(sunday - timedelta(days=1), time(12), tzinfo=zone)
    monday = datetime.combine(sunday + timedelta(days=1), time(12), tzinfo=zone)
    assert working_time(cal, saturday, monday) == timedelta(hours=hours)
    midnight = datetime.combine(sunday, time(), tzinfo=zone)
    assert add_seconds(cal, saturday, hours * 3600) == datetime.combine(
        sunday + timedelta(days=1), time(), tzinfo=zone
    )
    assert add_seconds(cal, saturday, 1) == midnight + timedelta(seconds=1)


def test_boundary_in_skipped_hour_moves_forward() -> None:
    # Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist -> 03:30 CEST.
    cal = WorkingCalendar("Europe/Berlin", week=parse_week({"sun": [["02:30", "05:00"]]}))
    day_start = local(BERLIN, 2026, 3, 29)
    assert add_seconds(cal, day_start, 60) == utc(2026, 3, 29, 1, 31)  # 03:31 CEST
    assert working_time(cal, day_start, local(BERLIN, 2026, 3, 30)) == timedelta(
        hours=1, minutes=30
    )
    assert elapsed_seconds(cal, utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)) == 0


def test_boundary_in_repeated_hour_is_first_occurrence() -> None:
    # Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 means 02:30 CEST = 00:30Z.
    cal = WorkingCalendar("Europe/Berlin", week=parse_week({"sun": [["02:30", "04:00"]]}))
    day_start = local(BERLIN, 2026, 10, 25)
    assert add_seconds(cal, day_start, 60) == utc(2026, 10, 25, 0, 31)
    # 00:30Z .. 04:00 CET (03:00Z) = 2.5 h.
    assert working_time(cal, day_start, local(BERLIN, 2026, 10, 26)) == timedelta(
        hours=2, minutes=30
    )


def test_interval_inside_skipped_hour_contributes_nothing() -> None:
    # 02:15-02:45 on the spring-forward Sunday converts to 01:15Z-01:45Z: still 30 minutes;
    # 02:30-03:00 converts to 01:30Z-01:00Z: nothing.  Other Sundays have the full 30 minutes.
    cal = WorkingCalendar("Europe/Berlin", week=parse_week({"sun": [["02:30", "03:00"]]}))
    assert elapsed_seconds(cal, local(BERLIN, 2026, 3, 28), local(BERLIN, 2026, 3, 30)) == 0
    assert elapsed_seconds(cal, local(BERLIN, 2026, 3, 21), local(BERLIN, 2026, 3, 23)) == 1800
    # The next working minute after the skipped Sunday is on 2026-04-05 02:30 CEST.
    assert add_seconds(cal, local(BERLIN, 2026, 3, 28), 60) == local(BERLIN, 2026, 4, 5, 2, 31)


def test_overlapping_converted_intervals_count_once() -> None:
    # Berlin spring-forward Sunday: 02:00-02:30 -> 01:00Z-01:30Z and 03:00-04:00 -> 01:00Z-02:00Z.
    hours = {"sun": [["02:00", "02:30"], ["03:00", "04:00"]]}
    cal = WorkingCalendar("Europe/Berlin", week=parse_week(hours))
    day, next_day = local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30)
    assert working_time(cal, day, next_day) == timedelta(hours=1)
    assert add_seconds(cal, day, 3600) == utc(2026, 3, 29, 2, 0)
    # A normal Sunday has 1.5 h.
    assert working_time(cal, local(BERLIN, 2026, 3, 22), local(BERLIN, 2026, 3, 23)) == timedelta(
        hours=1, minutes=30
    )


def test_touching_intervals_convert_each_boundary_on_its_own() -> None:
    # 00:00-02:15 + 02:15-03:00 on the Berlin spring-forward Sunday: 02:15 is skipped and moves
    # forward by the gap to 03:15 CEST (01:15Z), so the first interval is 23:00Z-01:15Z and the
    # second (01:15Z-01:00Z) is empty: 2 h 15 min. The single interval 00:00-03:00 is 2 h.
    hours = {"sun": [["00:00", "02:15"], ["02:15", "03:00"]]}
    week = parse_week(hours)
    assert week[6] == ((0, 135), (135, 180))
    cal = WorkingCalendar("Europe/Berlin", week=week)
    day, next_day = local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30)
    assert working_time(cal, day, next_day) == timedelta(hours=2, minutes=15)
    assert ReferenceCalendar("Europe/Berlin", hours).elapsed(day, next_day) == 8100
    whole = WorkingCalendar("Europe/Berlin", week=parse_week({"sun": [["00:00", "03:00"]]}))
    assert working_time(whole, day, next_day) == timedelta(hours=2)


def test_skipped_local_day_lands_on_the_next_day() -> None:
    # Pacific/Apia skipped Friday 2011-12-30: Thursday 23:59:59 -10 was followed by Saturday
    # 00:00 +14.  Friday 09:00-18:00 converts (fold=0, offset -10) to 19:00Z-04:00Z, which is
    # Saturday 09:00-18:00 local; Saturday's own 09:00-18:00 is the same stretch (counted once).
    apia = ZoneInfo("Pacific/Apia")
    thursday_noon = datetime(2011, 12, 29, 12, tzinfo=apia)  # 22:00Z
    new_year = datetime(2012, 1, 1, tzinfo=apia)  # 2011-12-31 10:00Z
    friday_only = {"fri": [["09:00", "18:00"]]}
    friday_saturday = {"fri": [["09:00", "18:00"]], "sat": [["09:00", "18:00"]]}
    for hours in (friday_only, friday_saturday):
        cal = WorkingCalendar("Pacific/Apia", week=parse_week(hours))
        assert working_time(cal, thursday_noon, new_year) == timedelta(hours=9)
        assert elapsed_seconds(cal, utc(2011, 12, 30, 20), utc(2011, 12, 31, 2)) == 6 * 3600
        assert add_seconds(cal, thursday_noon, 3600) == utc(2011, 12, 30, 20)
        assert add_seconds(cal, utc(2011, 12, 31, 1), 3 * 3600) == utc(2011, 12, 31, 4)
        ref = ReferenceCalendar("Pacific/Apia", hours)
        points = [utc(2011, 12, 29, 18) + timedelta(minutes=90 * k) for k in range(14)]
        for a in points:
            for b in points[::3]:
                assert elapsed_seconds(cal, a, b) == ref.elapsed(a, b)


def test_holiday_removes_interval_ending_at_midnight() -> None:
    hours = {"mon": [["20:00", "24:00"]], "tue": [["00:00", "02:00"]]}
    cal = WorkingCalendar("Europe/Berlin", week=parse_week(hours))
    cal_holiday = WorkingCalendar(
        "Europe/Berlin", week=parse_week(hours), holidays=frozenset({date(2026, 3, 9)})
    )
    start, end = local(BERLIN, 2026, 3, 9, 12), local(BERLIN, 2026, 3, 10, 12)
    assert elapsed_seconds(cal, start, end) == 6 * 3600
    assert elapsed_seconds(cal_holiday, start, end) == 2 * 3600
    # Touching intervals of adjacent days form one stretch: 20:00 + 5 h = Tue 01:00.
    assert add_seconds(cal, start, 5 * 3600) == local(BERLIN, 2026, 3, 10, 1)


def test_adjacent_full_days_touch_without_double_counting() -> None:
    hours = {"mon": [["00:00", "24:00"]], "tue": [["00:00", "24:00"]]}
    cal = WorkingCalendar("America/New_York", week=parse_week(hours))
    monday = datetime(2026, 3, 9, tzinfo=NEW_YORK)
    assert working_time(cal, monday - timedelta(days=3), monday + timedelta(days=4)) == timedelta(
        hours=48
    )
    assert add_seconds(cal, monday + timedelta(hours=23), 2 * 3600) == monday + timedelta(hours=25)


def test_always_on_ignores_hours_and_holidays() -> None:
    cal = WorkingCalendar(
        "Europe/Berlin",
        always_on=True,
        week=parse_week({"mon": [["09:00", "10:00"]]}),
        holidays=frozenset({date(2026, 3, 29)}),
    )
    # Spring-forward Sunday (a holiday, no hours): 23 real hours.
    assert elapsed_seconds(cal, local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30)) == 23 * 3600
    start = local(BERLIN, 2026, 3, 29, 1, 30)
    assert add_seconds(cal, start, 4 * 3600) == utc(2026, 3, 29, 4, 30)
    assert WorkingCalendar("UTC", always_on=True).always_on  # no hours needed


def test_microsecond_instants() -> None:
    cal = eight_by_five()
    start = local(BERLIN, 2026, 3, 9, 9, 0, 0, 500_000)
    assert elapsed_seconds(cal, start, local(BERLIN, 2026, 3, 9, 9, 0, 2, 200_000)) == 1
    assert working_time(cal, start, local(BERLIN, 2026, 3, 9, 9, 0, 2, 200_000)) == timedelta(
        seconds=1, microseconds=700_000
    )
    assert elapsed_seconds(cal, start, local(BERLIN, 2026, 3, 9, 9, 0, 1, 499_999)) == 0
    assert add_seconds(cal, start, 1) == local(BERLIN, 2026, 3, 9, 9, 0, 1, 500_000)
    late = local(BERLIN, 2026, 3, 9, 17, 59, 59, 250_000)
    assert add_seconds(cal, late, 1) == local(BERLIN, 2026, 3, 10, 9, 0, 0, 250_000)
    # Instants in any offset are absolute instants.
    other = start.astimezone(timezone(timedelta(hours=-7, minutes=-30)))
    assert add_seconds(cal, other, 1) == local(BERLIN, 2026, 3, 9, 9, 0, 1, 500_000)


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"monday": [["09:00", "18:00"]]}, "unknown weekday"),
        ({"mon": [["09:00", "25:00"]]}, "invalid time"),
        ({"mon": [["9:00", "18:00"]]}, "invalid time"),
        ({"mon": [["09:60", "18:00"]]}, "invalid time"),
        ({"mon": [["24:00", "24:00"]]}, "24:00"),
        ({"mon": [["10:00", "10:00"]]}, "before"),
        ({"mon": [["18:00", "09:00"]]}, "before"),
        ({"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}, "overlap"),
        ({"mon": [["09:00"]]}, "pair"),
        ({"mon": "09:00-18:00"}, "list"),
    ],
)
def test_parse_week_rejects_bad_input(hours: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_week(hours)  # type: ignore[arg-type]


def test_parse_week_sorts_and_round_trips() -> None:
    week = parse_week(
        {
            "tue": [["12:00", "13:00"], ["09:00", "12:00"], ["14:00", "24:00"]],
            "sun": [["00:00", "01:30"]],
        }
    )
    assert week == ((), ((540, 720), (720, 780), (840, 1440)), (), (), (), (), ((0, 90),))
    assert format_week(week) == {
        "mon": [],
        "tue": [["09:00", "12:00"], ["12:00", "13:00"], ["14:00", "24:00"]],
        "wed": [],
        "thu": [],
        "fri": [],
        "sat": [],
        "sun": [["00:00", "01:30"]],
    }
    assert parse_week(format_week(week)) == week


def test_calendar_validation() -> None:
    with pytest.raises(ValueError, match="no working hours"):
        WorkingCalendar("Europe/Berlin", week=parse_week({}))
    with pytest.raises(ValueError, match="no working hours"):
        WorkingCalendar("Europe/Berlin")
    with pytest.raises(ValueError, match="time zone"):
        WorkingCalendar("Mars/Olympus_Mons", always_on=True)
    with pytest.raises(ValueError):
        WorkingCalendar("Europe/Berlin", week=(((600, 540),),) + ((),) * 6)
    with pytest.raises(ValueError):
        WorkingCalendar("Europe/Berlin", week=(((0, 600), (500, 700)),) + ((),) * 6)
    with pytest.raises(ValueError):
        WorkingCalendar("Europe/Berlin", week=(((0, 600),),) * 6)
    cal = eight_by_five()
    assert hash(cal) == hash(eight_by_five())
    assert cal == eight_by_five()
    with pytest.raises(ValueError):
        add_seconds(cal, local(BERLIN, 2026, 3, 9), -1)
    with pytest.raises(ValueError):
        elapsed_seconds(cal, datetime(2026, 3, 9), datetime(2026, 3, 10))


# ----------------------------------------------------------------------------------------------
# Large additions versus a plain day-by-day walk (proves the week skip)
# ----------------------------------------------------------------------------------------------


def _holidays_2026_2050() -> frozenset[date]:
    days = set()
    for year in range(2026, 2050):
        days |= {date(year, 1, 1), date(year, 5, 1), date(year, 12, 25), date(year, 12, 26)}
    days |= {date(2026, 4, 3), date(2026, 4, 6), date(2027, 3, 26), date(2027, 3, 29)}
    return frozenset(days)


def _day_by_day_add(tz: str, holidays: frozenset[date], start: datetime, seconds: int) -> datetime:
    """8x5 09:00-18:00, walking one local date at a time."""
    zone = ZoneInfo(tz)
    remaining = timedelta(seconds=seconds)
    day = start.astimezone(zone).date()
    while True:
        if day.weekday() < 5 and day not in holidays:
            open_ = datetime.combine(day, time(9), tzinfo=zone).astimezone(UTC)
            close = datetime.combine(day, time(18), tzinfo=zone).astimezone(UTC)
            low = max(open_, start)
            if close > low:
                if close - low >= remaining:
                    return low + remaining
                remaining -= close - low
        day += timedelta(days=1)


@pytest.mark.parametrize(
    "seconds",
    [
        30 * 86_400,  # 30 days of 24 h working time
        5 * 365 * 86_400,  # 5 years of 24 h working time (~19 calendar years on 8x5)
        45 * 3600 * 52,  # one year of 8x5 working weeks
        45 * 3600 * 7 + 1,
    ],
)
@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_large_add_matches_day_by_day_walk(seconds: int, tz: str) -> None:
    holidays = _holidays_2026_2050()
    cal = eight_by_five(tz, holidays)
    zone = ZoneInfo(tz)
    for start in (
        datetime(2026, 1, 2, 10, 15, 30, 123_456, tzinfo=zone),
        datetime(2026, 3, 7, 23, 0, tzinfo=zone),
        datetime(2026, 3, 9, 9, 0, tzinfo=zone),
    ):
        expected = _day_by_day_add(tz, holidays, start, seconds)
        result = add_seconds(cal, start, seconds)
        assert result == expected
        assert working_time(cal, start, result) == timedelta(seconds=seconds)
        assert working_time(cal, start, result - US) < timedelta(seconds=seconds)


def test_spans_far_apart_on_one_calendar_agree_with_small_steps() -> None:
    """A calendar keeps whole days' working time cumulated over a bounded window (about ten
    years): spans far apart, asked in turn (an old imported incident, then this week's), move
    that window and still count what small steps count."""
    from app.slm.calendar import _engine

    cal = eight_by_five("Europe/Berlin", _holidays_2026_2050())
    zone = ZoneInfo("Europe/Berlin")
    spans = [
        (datetime(2026, 3, 2, 10, 0, tzinfo=zone), timedelta(days=40)),
        (datetime(2041, 6, 5, 16, 30, tzinfo=zone), timedelta(days=75)),
        (datetime(2026, 12, 20, 8, 0, tzinfo=zone), timedelta(days=30)),
    ]
    for start, span in spans:
        end = start + span
        pieces, t = timedelta(0), start
        while t < end:  # spans of less than a day: no whole day in between
            step = min(t + timedelta(hours=23), end)
            pieces += working_time(cal, t, step)
            t = step
        assert working_time(cal, start, end) == pieces
        first = _engine(cal)._cum_first
        assert first <= start.date().toordinal() < first + len(_engine(cal)._cum)


def test_add_stops_at_its_limit_and_at_the_horizon() -> None:
    office = WorkingCalendar("Europe/Berlin", week=parse_week({"mon": [["09:00", "17:00"]]}))
    start = datetime(2026, 3, 2, 7, tzinfo=UTC)  # Monday 08:00 Berlin
    end = add_seconds(office, start, 3600)
    assert end == datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert add_seconds(office, start, 3600, before=end + timedelta(microseconds=1)) == end
    with pytest.raises(BeyondRange):  # the limit itself is too late
        add_seconds(office, start, 3600, before=end)
    with pytest.raises(BeyondRange):  # a week later still: no day past the limit is walked
        add_seconds(office, start, 9 * 3600, before=datetime(2026, 3, 5, tzinfo=UTC))
    assert add_seconds(office, start, 9 * 3600) == datetime(2026, 3, 9, 9, tzinfo=UTC)
    # Nothing at or after the year 3000, whatever the limit given.
    late = datetime(2999, 12, 30, tzinfo=UTC)  # a Monday
    with pytest.raises(BeyondRange):
        add_seconds(office, late, 9 * 3600, before=datetime(3100, 1, 1, tzinfo=UTC))
    with pytest.raises(BeyondRange):
        add_seconds(WorkingCalendar("UTC", always_on=True), late, 3 * 86_400)
    with pytest.raises(BeyondRange):
        add_seconds(WorkingCalendar("UTC", always_on=True), HORIZON, 0)
    minute_a_week = WorkingCalendar(
        "America/New_York", week=parse_week({"mon": [["09:00", "09:01"]]})
    )
    with pytest.raises(BeyondRange):  # a hundred thousand years of Mondays: refused, not walked
        add_seconds(minute_a_week, start, 10 * 366 * 86_400)
