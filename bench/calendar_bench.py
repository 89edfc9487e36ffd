"""Micro-benchmark of app.slm.calendar (business-calendar arithmetic for SLA clocks).

    python bench/calendar_bench.py        (or: python -m bench.calendar_bench)

Prints microseconds per call, best of several timeit repeats (warm caches, as on a hot path),
plus the same operations with every cache of the module cleared before each call (cold).
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.slm import calendar as calendar_module
from app.slm.calendar import (
    WEEKDAYS,
    WorkingCalendar,
    add_seconds,
    elapsed_seconds,
    parse_week,
)

BERLIN = ZoneInfo("Europe/Berlin")
REPEATS = 7

HOLIDAYS = frozenset(
    {
        date(2026, 1, 1),
        date(2026, 4, 3),
        date(2026, 4, 6),
        date(2026, 5, 1),
        date(2026, 5, 14),
        date(2026, 5, 25),
        date(2026, 6, 4),
        date(2026, 10, 3),
        date(2026, 12, 25),
        date(2026, 12, 26),
    }
)

EIGHT_BY_FIVE = WorkingCalendar(
    "Europe/Berlin",
    week=parse_week({day: [["09:00", "18:00"]] for day in WEEKDAYS[:5]}),
    holidays=HOLIDAYS,
)
ALWAYS_ON = WorkingCalendar("Europe/Berlin", always_on=True)
MIDNIGHT_ENDS = WorkingCalendar(
    "Europe/Berlin",
    week=parse_week({day: [["00:00", "24:00"]] for day in WEEKDAYS}),
    holidays=HOLIDAYS,
)
EVENINGS = WorkingCalendar(
    "Europe/Berlin",
    week=parse_week({day: [["06:00", "12:00"], ["18:00", "24:00"]] for day in WEEKDAYS}),
)

START = datetime(2026, 3, 20, 16, 45, 12, 345_678, tzinfo=BERLIN)  # a Friday, DST change ahead
THIRTY_DAYS = 30 * 86_400
FOUR_HOURS = 4 * 3600

CASES: list[tuple[str, Callable[[], object]]] = [
    (
        "add 2,592,000 s, 8x5 Berlin, 10 holidays",
        lambda: add_seconds(EIGHT_BY_FIVE, START, THIRTY_DAYS),
    ),
    (
        "elapsed over 30 days, 8x5 Berlin, 10 holidays",
        lambda: elapsed_seconds(EIGHT_BY_FIVE, START, START + timedelta(days=30)),
    ),
    (
        "elapsed over 365 days, 8x5 Berlin, 10 holidays",
        lambda: elapsed_seconds(EIGHT_BY_FIVE, START, START + timedelta(days=365)),
    ),
    ("add 4 h, 24x7 (always_on)", lambda: add_seconds(ALWAYS_ON, START, FOUR_HOURS)),
    ("add 4 h, 00:00-24:00 every day", lambda: add_seconds(MIDNIGHT_ENDS, START, FOUR_HOURS)),
    (
        "add 4 h, 06-12 + 18-24:00 every day",
        lambda: add_seconds(EVENINGS, START, FOUR_HOURS),
    ),
    (
        "add 2,592,000 s, 00:00-24:00 every day",
        lambda: add_seconds(MIDNIGHT_ENDS, START, THIRTY_DAYS),
    ),
]


def clear_caches() -> None:
    """Forget every cached engine, per-day conversion and per-year offset scan."""
    calendar_module._engine.cache_clear()
    calendar_module._offset_changes.cache_clear()


def best_us(call: Callable[[], object], number: int, cold: bool = False) -> float:
    if cold:

        def timed() -> object:
            clear_caches()
            return call()

        runner = timed
    else:
        runner = call
        call()  # warm up
    times = timeit.repeat(runner, number=number, repeat=REPEATS)
    return min(times) / number * 1e6


def main() -> None:
    width = max(len(name) for name, _ in CASES)
    print(f"{'operation':<{width}}  {'warm us/call':>12}  {'cold us/call':>12}")
    print("-" * (width + 28))
    for name, call in CASES:
        warm = best_us(call, number=2000)
        cold = best_us(call, number=20, cold=True)
        print(f"{name:<{width}}  {warm:>12.2f}  {cold:>12.1f}")
    print(f"\nbest of {REPEATS} repeats; cold = all module caches cleared before each call")


if __name__ == "__main__":
    main()
