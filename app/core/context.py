"""What every service call needs to know besides its input: who, when, and where."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import changelog
from app.core.auth import Principal
from app.core.clock import Clock
from app.core.config import Settings
from app.core.sql import Batch

_TICK = timedelta(microseconds=1)  # what the database's timestamps resolve


@dataclass(frozen=True, slots=True)
class Context:
    principal: Principal
    now: datetime
    settings: Settings
    clock: Clock | None = None  # a request's: `after_lock` reads it again

    def after_lock(self, last_changed: datetime) -> Context:
        """The context of a write that holds its record's lock now: its time read again (the
        writes it may have waited for were made after this request began), and if that is
        before the record's last change (the clocks of several hosts), a microsecond after
        that change (not at it: entries at one instant are ordered by their ids, which would
        come from the lagging clock). So a record's journal and SLA clocks follow the order in
        which its writes were made."""
        now = self.now if self.clock is None else self.clock.now()
        if now < last_changed:
            now = last_changed + _TICK
        return replace(self, now=now)

    @property
    def region(self) -> str:
        return self.settings.region

    async def log_changes(self, conn: AsyncConnection, *changes: changelog.Change) -> None:
        await changelog.append(conn, region=self.region, occurred_at=self.now, changes=changes)

    def log_into(
        self,
        batch: Batch,
        dialect: str,
        changes: Sequence[changelog.Change],
        fill: tuple[str, ColumnElement[str]] | None = None,
    ) -> None:
        changelog.append_to(
            batch,
            dialect=dialect,
            region=self.region,
            occurred_at=self.now,
            changes=changes,
            fill=fill,
        )
