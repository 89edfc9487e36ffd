"""A write's context: its time once it holds its record's lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.core.auth import SYSTEM
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.context import Context

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_write_that_waited_for_a_lock_is_timed_when_it_got_it() -> None:
    clock = ManualClock(T)
    ctx = Context(SYSTEM, clock.now(), Settings(), clock)
    clock.advance(seconds=2)  # the writes it waited for took two seconds
    assert ctx.after_lock(last_changed=T + timedelta(seconds=1)).now == T + timedelta(seconds=2)
    # After the record's last change (another host's clock ran ahead): by a microsecond, so
    # that the order of the two does not rest on their ids.
    later = T + timedelta(seconds=5)
    assert ctx.after_lock(last_changed=later).now == later + timedelta(microseconds=1)
    # Without a clock (jobs time their own runs): only the second rule.
    assert Context(SYSTEM, T, Settings()).after_lock(T - timedelta(days=1)).now == T
    assert Context(SYSTEM, T, Settings()).after_lock(T).now == T  # at once (a test's clock)
