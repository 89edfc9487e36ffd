"""Deliberately simple brute-force reference for business-calendar arithmetic.

Shares no code with ``app.slm.calendar``: it works on the API's own representation
(``{"mon": [["09:00", "18:00"]], ...}`` strings) and steps through time one UTC minute at a time.

A UTC minute ``[m, m + 1 min)`` is working if it lies inside some working interval of the local
dates ``D - 1``, ``D`` and ``D + 1`` (``D`` = local date of ``m``), skipping holidays, where every
interval boundary is converted from local time to UTC on its own with ``fold=0`` and ``"24:00"``
means ``00:00`` of the next date.  Only meant for minute-aligned instants and calendars whose
boundaries fall on whole UTC minutes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTE = timedelta(minutes=1)
ONE_DAY = timedelta(days=1)


class ReferenceCalendar:
    def __init__(
        self,
        tz: str,
        hours: Mapping[str, Sequence[Sequence[str]]],
        holidays: set[date] | frozenset[date] = frozenset(),
        always_on: bool = False,
    ) -> None:
        self.zone = ZoneInfo(tz)
        self.hours = {day: [(pair[0], pair[1]) for pair in hours.get(day, [])] for day in DAY_NAMES}
        self.holidays = set(holidays)
        self.always_on = always_on
        self._memo: dict[date, list[tuple[datetime, datetime]]] = {}

    def local_to_utc(self, day: date, hhmm: str) -> datetime:
        if hhmm == "24:00":
            day, hhmm = day + ONE_DAY, "00:00"
        hour, minute = (int(part) for part in hhmm.split(":"))
        local = datetime.combine(day, time(hour, minute), tzinfo=self.zone)  # fold=0
        return local.astimezone(UTC)

    def intervals_of(self, day: date) -> list[tuple[datetime, datetime]]:
        """UTC intervals belonging to a local date (memoised, it is pure)."""
        if day not in self._memo:
            result = []
            if day not in self.holidays:
                for start, end in self.hours[DAY_NAMES[day.weekday()]]:
                    start_utc = self.local_to_utc(day, start)
                    end_utc = self.local_to_utc(day, end)
                    if end_utc > start_utc:
                        result.append((start_utc, end_utc))
            self._memo[day] = result
        return self._memo[day]

    def is_working_minute(self, minute_start: datetime) -> bool:
        if self.always_on:
            return True
        local_date = minute_start.astimezone(self.zone).date()
        for day in (local_date - ONE_DAY, local_date, local_date + ONE_DAY):
            for start_utc, end_utc in self.intervals_of(day):
                if start_utc <= minute_start and minute_start + MINUTE <= end_utc:
                    return True
        return False

    def elapsed(self, start: datetime, end: datetime) -> int:
        """Working seconds in [start, end): 60 x the number of working minutes."""
        count = 0
        t = start.astimezone(UTC)
        end = end.astimezone(UTC)
        while t < end:
            if self.is_working_minute(t):
                count += 1
            t += MINUTE
        return count * 60

    def add(self, start: datetime, seconds: int, max_minutes: int = 400 * 24 * 60) -> datetime:
        """Step minute by minute until ``seconds`` of working time have passed."""
        assert seconds >= 0 and seconds % 60 == 0
        t = start.astimezone(UTC)
        if seconds == 0:
            return t
        needed = seconds // 60
        count = 0
        for _ in range(max_minutes):
            if self.is_working_minute(t):
                count += 1
                if count == needed:
                    return t + MINUTE
            t += MINUTE
        raise RuntimeError("reference add did not finish")
