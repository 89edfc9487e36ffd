"""Business-calendar arithmetic for SLA clocks.

Pure module (stdlib only, no I/O besides what ``zoneinfo`` does to load a zone, no clock reads).

Model
-----
A :class:`WorkingCalendar` has weekly working intervals in the calendar's *local* time, a set of
local holiday dates and an IANA time zone.  Each local boundary ``(date, minute)`` is converted to
UTC on its own with ``zoneinfo`` and ``fold=0`` (PEP 495): a boundary inside a skipped hour moves
forward by the gap, a boundary inside a repeated hour means its first occurrence.  ``"24:00"`` of
date ``D`` is ``00:00`` of ``D + 1``.  An interval whose converted end is not after its converted
start contributes nothing.  Working time is the measure of the *union* of all converted intervals
of all non-holiday dates (touching or overlapping intervals count once).  ``always_on`` calendars
count every instant and ignore hours and holidays.

Implementation
--------------
Instants are handled as integer microseconds since the Unix epoch (UTC).  The timeline is cut at
the converted local midnights ``mid(D)``; the working time of local day ``D`` is the union of
the converted intervals of ``D - 1``, ``D`` and ``D + 1`` clipped to ``[mid(D), mid(D + 1))``
(neighbours only matter around offset changes, where a converted interval can spill over
midnight).  Per-day
results are cached (bounded).  Whole weeks (Monday..Sunday) that contain no holiday and around
which the UTC offset does not change are skipped in O(1) using the precomputed weekly total, and
runs of such weeks are skipped at once, so the cost grows with the number of holidays and offset
changes crossed plus at most a dozen individually processed days, never with minutes or seconds.
"""

from __future__ import annotations

import itertools
import operator
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "HORIZON",
    "WEEKDAYS",
    "BeyondRange",
    "Week",
    "WorkingCalendar",
    "add_seconds",
    "elapsed_seconds",
    "format_week",
    "parse_week",
    "working_time",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Interval = tuple[int, int]


class BeyondRange(ValueError):
    """The working time sought does not elapse before the limit given (`add_time`)."""


Week = tuple[tuple[Interval, ...], ...]

_EMPTY_WEEK: Week = ((),) * 7
_MINUTES_PER_DAY = 1440

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)
_US_PER_S = 1_000_000
_US_PER_MIN = 60 * _US_PER_S
_US_PER_DAY = 86_400 * _US_PER_S
_MAX_ORD = date.max.toordinal()
# How far the arithmetic goes: no instant sought lies at or after 3000-01-01T00:00:00Z (the
# service takes no instant from 3000 on either: app/core/schemas.py LATEST). Past it lie the end
# of Python's dates and, for a calendar of a minute a week, centuries of weeks to walk.
HORIZON = datetime(3000, 1, 1, tzinfo=UTC)

# Bounded caches: per-calendar engines, per-(calendar, local date) conversions, per-(zone, year)
# offset-change days.
_MAX_ENGINES = 32
_MAX_CACHED_DAYS = 1024
_MAX_CACHED_YEARS = 1100  # every year SDMS takes instants from (1970 .. 2999), and more
# Whole days' working time kept cumulated per calendar (`_Engine.whole_days_us`): a span of
# days it covers costs two lookups. It grows in chunks to cover what is asked, up to this many
# days (about ten years); longer spans are walked week by week.
_CUMULATED_DAYS_MAX = 3660
_CUMULATE_CHUNK = 32

_HHMM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")


# --------------------------------------------------------------------------------------------
# Calendar definition
# --------------------------------------------------------------------------------------------


def _load_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be a non-empty IANA time zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _validate_week(week: object) -> Week:
    if not isinstance(week, Sequence) or isinstance(week, str) or len(week) != 7:
        raise ValueError("week must have exactly 7 entries (Monday..Sunday)")
    days: list[tuple[Interval, ...]] = []
    for index, day in enumerate(week):
        name = WEEKDAYS[index]
        if not isinstance(day, Sequence) or isinstance(day, str):
            raise ValueError(f"{name}: expected a sequence of (start_minute, end_minute) pairs")
        intervals: list[Interval] = []
        previous_end = -1
        for pair in day:
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise ValueError(f"{name}: each interval must be a (start_minute, end_minute) pair")
            start, end = pair
            if (
                not isinstance(start, int)
                or not isinstance(end, int)
                or isinstance(start, bool)
                or isinstance(end, bool)
            ):
                raise ValueError(f"{name}: interval minutes must be integers, got {pair!r}")
            if not 0 <= start < end <= _MINUTES_PER_DAY:
                raise ValueError(f"{name}: interval {pair!r} must satisfy 0 <= start < end <= 1440")
            if start < previous_end:
                raise ValueError(f"{name}: intervals must be sorted and must not overlap")
            previous_end = end
            intervals.append((start, end))
        days.append(tuple(intervals))
    return tuple(days)


def _validate_holidays(holidays: object) -> frozenset[date]:
    if not isinstance(holidays, Iterable) or isinstance(holidays, str | bytes):
        raise ValueError("holidays must be a collection of dates")
    result = frozenset(holidays)
    for day in result:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValueError(f"holidays must be dates (not datetimes), got {day!r}")
    return result


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """A business calendar.  Hashable; validated on construction (``ValueError``).

    ``week`` has 7 entries (Monday..Sunday) of sorted, non-overlapping ``(start, end)`` minute
    pairs with ``0 <= start < end <= 1440`` (touching intervals are allowed).  ``holidays`` may be
    given as any collection of dates; it is stored as a ``frozenset``.
    """

    timezone: str
    always_on: bool = False
    week: Week = _EMPTY_WEEK
    holidays: frozenset[date] = frozenset()
    # Computed once: the engine of a calendar is looked up by it on every call (a create
    # starts clocks with four), and hashing the week's tuples again each time cost ~3k
    # instructions.
    _hash: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        _load_zone(self.timezone)
        if not isinstance(self.always_on, bool):
            raise ValueError("always_on must be a bool")
        week = _validate_week(self.week)
        holidays = _validate_holidays(self.holidays)
        if week != self.week:
            object.__setattr__(self, "week", week)
        if holidays is not self.holidays:
            object.__setattr__(self, "holidays", holidays)
        if not self.always_on and not any(week):
            raise ValueError("calendar has no working hours (and is not always_on)")
        fields = (self.timezone, self.always_on, self.week, self.holidays)
        object.__setattr__(self, "_hash", hash(fields))


def _parse_hhmm(value: object, day: str) -> int:
    if not isinstance(value, str) or _HHMM.fullmatch(value) is None:
        raise ValueError(f"{day}: invalid time {value!r}, expected 'HH:MM' (00:00..24:00)")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def parse_week(hours: Mapping[str, Sequence[Sequence[str]]]) -> Week:
    """Parse the API's ``{"mon": [["09:00", "18:00"]], ...}`` into a :data:`Week`.

    Missing days have no hours.  Raises ``ValueError`` for an unknown day key, a malformed time,
    ``"24:00"`` as a start, ``start >= end`` or overlapping intervals within a day.  Intervals are
    sorted.  Touching intervals are kept apart: the contract converts every boundary on its own,
    and ``09:00-12:00`` + ``12:00-13:00`` differs from ``09:00-13:00`` when the shared boundary
    falls in a skipped DST hour.
    """
    if not isinstance(hours, Mapping):
        raise ValueError("hours must be an object mapping weekday names to interval lists")
    unknown = [key for key in hours if key not in WEEKDAYS]
    if unknown:
        raise ValueError(
            f"unknown weekday key(s) {', '.join(map(repr, unknown))}; "
            f"expected one of {', '.join(WEEKDAYS)}"
        )
    week: list[tuple[Interval, ...]] = []
    for day in WEEKDAYS:
        raw = hours.get(day, ())
        if raw is None:
            raw = ()
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise ValueError(f"{day}: expected a list of [start, end] pairs")
        parsed: list[Interval] = []
        for pair in raw:
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise ValueError(f"{day}: each interval must be a [start, end] pair, got {pair!r}")
            start = _parse_hhmm(pair[0], day)
            end = _parse_hhmm(pair[1], day)
            if start == _MINUTES_PER_DAY:
                raise ValueError(f"{day}: '24:00' can only end an interval, not start one")
            if start >= end:
                raise ValueError(f"{day}: interval start {pair[0]} must be before end {pair[1]}")
            parsed.append((start, end))
        parsed.sort()
        for previous, (start, end) in itertools.pairwise(parsed):
            if start < previous[1]:
                raise ValueError(
                    f"{day}: intervals {_fmt(previous[0])}-{_fmt(previous[1])} and "
                    f"{_fmt(start)}-{_fmt(end)} overlap"
                )
        week.append(tuple(parsed))
    return tuple(week)


def _fmt(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def format_week(week: Week) -> dict[str, list[list[str]]]:
    """Inverse of :func:`parse_week` for API output (every weekday present, 1440 -> "24:00")."""
    return {
        WEEKDAYS[index]: [[_fmt(start), _fmt(end)] for start, end in day]
        for index, day in enumerate(week)
    }


# --------------------------------------------------------------------------------------------
# Instants <-> integer microseconds
# --------------------------------------------------------------------------------------------


def _to_us(value: datetime) -> int:
    try:
        return (value - _EPOCH) // _ONE_US  # two C operations (a hot path: a page's clocks)
    except TypeError:
        if not isinstance(value, datetime):
            raise TypeError(
                f"expected a timezone-aware datetime, got {type(value).__name__}"
            ) from None
        raise ValueError("datetime must be timezone-aware") from None


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


_HORIZON_US = _to_us(HORIZON)


# --------------------------------------------------------------------------------------------
# UTC-offset changes of a zone (to know which weeks are safe to skip)
# --------------------------------------------------------------------------------------------


class _OffsetChanges:
    """Per zone: UTC day ordinals ``u`` such that the offset at ``u 00:00Z`` differs from the
    offset at ``(u + 1) 00:00Z``, computed lazily per UTC year and cached."""

    __slots__ = ("_years", "_zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._years: dict[int, tuple[int, ...]] = {}

    def _offset_us(self, utc_ord: int) -> int:
        try:
            offset = datetime.fromtimestamp((utc_ord - _EPOCH_ORD) * 86_400, self._zone).utcoffset()
        except (OverflowError, OSError, ValueError):  # platform limits far from 1970
            instant = _EPOCH + timedelta(days=utc_ord - _EPOCH_ORD)
            offset = instant.astimezone(self._zone).utcoffset()
        assert offset is not None
        return offset // _ONE_US

    def year(self, year: int) -> tuple[int, ...]:
        found = self._years.get(year)
        if found is None:
            first = date(year, 1, 1).toordinal()
            stop = date(year + 1, 1, 1).toordinal() if year < date.max.year else _MAX_ORD
            offsets = [self._offset_us(u) for u in range(first, stop + 1)]
            found = tuple(first + i for i in range(stop - first) if offsets[i] != offsets[i + 1])
            if len(self._years) >= _MAX_CACHED_YEARS:
                self._years.clear()
            self._years[year] = found
        return found

    def first_in(self, low: int, high: int) -> int | None:
        """First change day ``u`` with ``low <= u <= high``, or ``None``."""
        low = max(low, 1)
        high = min(high, _MAX_ORD - 1)
        if low > high:
            return None
        year = date.fromordinal(low).year
        last_year = date.fromordinal(high).year
        while year <= last_year:
            days = self.year(year)
            index = bisect_left(days, low)
            if index < len(days):
                return days[index] if days[index] <= high else None
            year += 1
        return None


@lru_cache(maxsize=_MAX_ENGINES)
def _offset_changes(zone_name: str) -> _OffsetChanges:
    return _OffsetChanges(ZoneInfo(zone_name))


# --------------------------------------------------------------------------------------------
# Engine: per-calendar precomputation and caches
# --------------------------------------------------------------------------------------------

Segments = tuple[Interval, ...]


def _merge(intervals: list[Interval]) -> Segments:
    """Union of intervals (input sorted by start); touching intervals are merged."""
    merged: list[Interval] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


class _Engine:
    __slots__ = (
        "_changes",
        "_cum",
        "_cum_first",
        "_holiday_ords",
        "_holiday_set",
        "_horizon_day",
        "_last_end",
        "_mid",
        "_raw",
        "_segments",
        "_week",
        "_weekly_us",
        "_zone",
    )

    def __init__(self, calendar: WorkingCalendar) -> None:
        self._zone = ZoneInfo(calendar.timezone)
        self._changes = _offset_changes(calendar.timezone)
        self._week = calendar.week
        self._weekly_us = (
            sum(end - start for day in calendar.week for start, end in day) * _US_PER_MIN
        )
        self._holiday_ords = sorted(day.toordinal() for day in calendar.holidays)
        self._holiday_set = frozenset(self._holiday_ords)
        self._mid: dict[int, int] = {}
        self._raw: dict[int, tuple[Segments, bool]] = {}
        self._segments: dict[int, tuple[Segments, int]] = {}
        # _cum[i]: working time of the local days _cum_first .. _cum_first + i - 1
        self._cum_first = 0
        self._cum: list[int] = [0]
        self._last_end = (-1, 0)  # the last span's end and its day (a page's clocks share "now")
        self._horizon_day: int | None = None  # the local day of HORIZON

    # -- local date -> UTC conversions ------------------------------------------------------

    def _local_to_us(self, ordinal: int, minute: int) -> int:
        """UTC microseconds of local ``(date, minute)``, ``fold=0``; ``minute < 1440``."""
        day = date.fromordinal(ordinal)
        hour, minute_of_hour = divmod(minute, 60)
        offset = datetime(
            day.year, day.month, day.day, hour, minute_of_hour, tzinfo=self._zone
        ).utcoffset()
        assert offset is not None
        return (ordinal - _EPOCH_ORD) * _US_PER_DAY + minute * _US_PER_MIN - offset // _ONE_US

    def mid(self, ordinal: int) -> int:
        """UTC microseconds of local midnight starting ``ordinal`` (fold=0)."""
        value = self._mid.get(ordinal)
        if value is None:
            value = self._local_to_us(ordinal, 0)
            self._mid[ordinal] = value
        return value

    def _boundary(self, ordinal: int, minute: int) -> int:
        if minute == 0:
            return self.mid(ordinal)
        if minute == _MINUTES_PER_DAY:
            return self.mid(ordinal + 1)
        return self._local_to_us(ordinal, minute)

    def _raw_day(self, ordinal: int) -> tuple[Segments, bool]:
        """Converted intervals belonging to a local date (their union) and whether they all lie
        within that date's own ``[mid(D), mid(D + 1)]``."""
        found = self._raw.get(ordinal)
        if found is None:
            if ordinal in self._holiday_set:
                found = ((), True)
            else:
                converted: list[Interval] = []
                for start, end in self._week[(ordinal - 1) % 7]:
                    start_us = self._boundary(ordinal, start)
                    end_us = self._boundary(ordinal, end)
                    if end_us > start_us:
                        converted.append((start_us, end_us))
                converted.sort()
                union = _merge(converted)
                inside = not union or (
                    union[0][0] >= self.mid(ordinal) and union[-1][1] <= self.mid(ordinal + 1)
                )
                found = (union, inside)
            self._raw[ordinal] = found
        return found

    def segments(self, ordinal: int) -> tuple[Segments, int]:
        """Working time inside ``[mid(D), mid(D + 1))`` as sorted disjoint UTC intervals, and
        its total in microseconds."""
        found = self._segments.get(ordinal)
        if found is not None:
            return found
        if len(self._segments) >= _MAX_CACHED_DAYS:
            self._segments.clear()
            self._raw.clear()
            self._mid.clear()
        own, own_inside = self._raw_day(ordinal)
        before, before_inside = self._raw_day(ordinal - 1)
        after, after_inside = self._raw_day(ordinal + 1)
        if own_inside and before_inside and after_inside:
            segments = own
        else:
            low, high = self.mid(ordinal), self.mid(ordinal + 1)
            union = _merge(sorted(before + own + after))
            segments = tuple(
                (max(start, low), min(end, high))
                for start, end in union
                if min(end, high) > max(start, low)
            )
        found = (segments, sum(end - start for start, end in segments))
        self._segments[ordinal] = found
        return found

    def day_of(self, instant: int) -> int:
        """Local day ``D`` with ``mid(D) <= instant < mid(D + 1)``."""
        # The UTC day, at most one day off (offsets are below 24 h); ``mid`` is remembered.
        guess = instant // _US_PER_DAY + _EPOCH_ORD
        while instant < self.mid(guess):
            guess -= 1
        while instant >= self.mid(guess + 1):
            guess += 1
        return guess

    # -- whole days, cumulated --------------------------------------------------------------

    def whole_days_us(self, first: int, end: int) -> int:
        """Working microseconds of the whole local days ``first .. end - 1``."""
        cum, base = self._cum, self._cum_first
        if first < base or end >= base + len(cum):
            low, high = first, end
            if len(cum) > 1:
                low, high = min(first, base), max(end, base + len(cum) - 1)
            low -= low % _CUMULATE_CHUNK
            high += -high % _CUMULATE_CHUNK
            fresh = high - low > _CUMULATED_DAYS_MAX
            if fresh:  # too far from what is cumulated: around this span alone, if it fits
                low, high = first - first % _CUMULATE_CHUNK, end + -end % _CUMULATE_CHUNK
            if high - low > _CUMULATED_DAYS_MAX or low < 2 or high > _MAX_ORD - 2:
                return self._walk_days(first, end)
            if fresh:
                self._cum = [0]
            self._cumulate(low, high)
            cum, base = self._cum, self._cum_first
        return cum[end - base] - cum[first - base]

    def _cumulate(self, low: int, high: int) -> None:
        """Extend the cumulated days to cover ``low .. high - 1`` (keeping what they cover)."""
        cum, base = self._cum, self._cum_first
        if len(cum) == 1:
            base = low
        top = base + len(cum) - 1
        before = [0]
        for day in range(low, base):
            before.append(before[-1] + self.segments(day)[1])
        shift = before[-1]
        cum = before + [shift + total for total in cum[1:]]
        for day in range(top, high):
            cum.append(cum[-1] + self.segments(day)[1])
        self._cum, self._cum_first = cum, low

    def _walk_days(self, day: int, end: int) -> int:
        """`whole_days_us` by walking the days, whole weeks at a time where possible."""
        total = 0
        weekly = self._weekly_us
        while day < end:
            if (day - 1) % 7 == 0 and end - day >= 7:
                weeks = self.skippable_weeks(day, (end - day) // 7)
                if weeks:
                    total += weeks * weekly
                    day += 7 * weeks
                    continue
            total += self.segments(day)[1]
            day += 1
        return total

    # -- week skipping ----------------------------------------------------------------------

    def skippable_weeks(self, monday: int, limit: int) -> int:
        """How many consecutive whole weeks starting at local Monday ``monday`` (at most
        ``limit``) have no holiday and no UTC-offset change near them.  Each such week holds
        exactly ``_weekly_us`` of working time."""
        if limit <= 0:
            return 0
        count = limit
        holidays = self._holiday_ords
        index = bisect_left(holidays, monday)
        if index < len(holidays):
            # Weeks [monday, monday + 7n - 1] must avoid the holiday.
            count = min(count, (holidays[index] - monday) // 7)
            if count <= 0:
                return 0
        # Local days monday-1 .. monday+7n lie strictly inside UTC days monday-2 .. monday+7n+1
        # (offsets are below 24 h), so no offset change may occur in UTC days
        # monday-2 .. monday+7n+1 (change day u = change within (u 00:00Z, u+1 00:00Z]).
        change = self._changes.first_in(monday - 2, monday + 7 * count + 1)
        if change is not None:
            count = min(count, (change - monday - 2) // 7)
        return max(count, 0)

    # -- the two operations -----------------------------------------------------------------

    def working_us(self, start: int, end: int) -> int:
        """Working microseconds in ``[start, end)``; requires ``start < end``."""
        first = self.day_of(start)
        known_end, last = self._last_end
        if end != known_end:
            last = self.day_of(end)
            self._last_end = (end, last)
        if first == last:
            return _clipped(self.segments(first)[0], start, end)
        total = _clipped(self.segments(first)[0], start, end)
        total += _clipped(self.segments(last)[0], start, end)
        if last > first + 1:
            total += self.whole_days_us(first + 1, last)
        return total

    def add_us(self, start: int, amount: int, limit: int) -> int:
        """Earliest ``e`` with ``working_us(start, e) == amount``; requires ``amount > 0``.
        ``BeyondRange`` if the days up to ``limit``'s own do not hold it (no day after is
        walked); an ``e`` later on ``limit``'s day is answered, for the caller to compare."""
        if limit == _HORIZON_US:  # SLA clocks: the horizon's day, found once
            last_day = self._horizon_day
            if last_day is None:
                last_day = self._horizon_day = self.day_of(limit)
        else:
            last_day = self.day_of(limit)
        day = self.day_of(start)
        remaining = amount
        for seg_start, seg_end in self.segments(day)[0]:
            if seg_end <= start:
                continue
            seg_start = max(seg_start, start)
            length = seg_end - seg_start
            if length >= remaining:
                return seg_start + remaining
            remaining -= length
        day += 1
        weekly = self._weekly_us
        while True:
            if day > last_day:  # every day up to the limit's own is counted, and more is needed
                raise BeyondRange("the working time does not elapse before the limit")
            if (day - 1) % 7 == 0 and remaining > weekly:
                # Skip only weeks that cannot contain the target (remaining stays > 0), and none
                # wholly past the limit's day.
                most = min((remaining - 1) // weekly, (last_day - day) // 7 + 1)
                weeks = self.skippable_weeks(day, most)
                if weeks:
                    remaining -= weeks * weekly
                    day += 7 * weeks
                    continue
            segments, total = self.segments(day)
            if total >= remaining:
                for seg_start, seg_end in segments:
                    length = seg_end - seg_start
                    if length >= remaining:
                        return seg_start + remaining
                    remaining -= length
            remaining -= total
            day += 1


def _clipped(segments: Segments, start: int, end: int) -> int:
    total = 0
    for seg_start, seg_end in segments:
        low = seg_start if seg_start > start else start
        high = seg_end if seg_end < end else end
        if high > low:
            total += high - low
    return total


@lru_cache(maxsize=_MAX_ENGINES)
def _engine(calendar: WorkingCalendar) -> _Engine:
    return _Engine(calendar)


# --------------------------------------------------------------------------------------------
# Public operations
# --------------------------------------------------------------------------------------------


def working_us(calendar: WorkingCalendar, start: datetime, end: datetime) -> int:
    """Exact working time in ``[start, end)`` in microseconds (0 if ``end <= start``)."""
    start_us = _to_us(start)
    end_us = _to_us(end)
    if end_us <= start_us:
        return 0
    if calendar.always_on:
        return end_us - start_us
    return _engine(calendar).working_us(start_us, end_us)


def working_us_until(calendar: WorkingCalendar, end: datetime) -> Callable[[datetime], int]:
    """`working_us(calendar, start, end)` as a function of `start`, for many starts and one
    end (a page of clocks as of now): the end and the calendar's engine are looked up once, and
    each local day's working time from its end to `end` is counted once (a start then costs
    the clip of its own day)."""
    end_us = _to_us(end)
    if calendar.always_on:

        def always(start: datetime) -> int:
            return max(end_us - _to_us(start), 0)

        return always
    engine = _engine(calendar)
    segments, day_of, last = engine.segments, engine.day_of, engine.day_of(end_us)
    after: dict[int, int] = {}  # local day -> working time from its end to `end`

    def worked(start: datetime) -> int:
        start_us = _to_us(start)
        if start_us >= end_us:
            return 0
        day = day_of(start_us)
        total = _clipped(segments(day)[0], start_us, end_us)
        if day != last:
            rest = after.get(day)
            if rest is None:
                rest = after[day] = engine.working_us(engine.mid(day + 1), end_us)
            total += rest
        return total

    return worked


def working_time(calendar: WorkingCalendar, start: datetime, end: datetime) -> timedelta:
    """Exact working time in ``[start, end)`` (``timedelta(0)`` if ``end <= start``)."""
    return timedelta(microseconds=working_us(calendar, start, end))


def elapsed_seconds(calendar: WorkingCalendar, start: datetime, end: datetime) -> int:
    """Working time in ``[start, end)`` in whole seconds, floored (0 if ``end <= start``)."""
    return working_us(calendar, start, end) // _US_PER_S


def add_seconds(
    calendar: WorkingCalendar, start: datetime, seconds: int, *, before: datetime = HORIZON
) -> datetime:
    """The earliest instant ``end`` with ``working_time(start, end) == seconds`` (UTC-aware).

    ``seconds == 0`` returns ``start`` (as UTC) even outside working hours; negative seconds
    raise ``ValueError``; an ``end`` not before ``before`` raises ``BeyondRange``.
    """
    amount = operator.index(seconds)
    if amount < 0:
        raise ValueError(f"seconds must be >= 0, got {amount}")
    return add_time(calendar, start, amount * _US_PER_S, before=before)


def add_time(
    calendar: WorkingCalendar, start: datetime, microseconds: int, *, before: datetime = HORIZON
) -> datetime:
    """`add_seconds` at microsecond precision: the earliest instant after `start` at which
    `microseconds` of working time have passed (SLA clocks measure remainders this finely);
    ``BeyondRange`` if that is not before `before` (at most the horizon, year 3000)."""
    amount = operator.index(microseconds)
    if amount < 0:
        raise ValueError(f"microseconds must be >= 0, got {amount}")
    start_us = _to_us(start)
    limit = _HORIZON_US if before is HORIZON else _to_us(min(before, HORIZON))
    if amount == 0:
        end = start_us
    elif calendar.always_on:
        end = start_us + amount
    else:
        end = _engine(calendar).add_us(start_us, amount, limit)
    if end >= limit:
        raise BeyondRange("the working time does not elapse before the limit")
    return _from_us(end)
