"""What every service call needs to know besides its input: who, when, and where."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import changelog
from app.core.auth import Principal
from app.core.clock import Clock
from app.core.config import Settings
from app.core.sql import Batch


@dataclass(frozen=True, slots=True)
class Context:
    principal: Principal
    now: datetime
    settings: Settings
    clock: Clock | None = None  # a request's: `after_lock` reads it again

    def after_lock(self, last_changed: datetime) -> Context:
        """The context of a write that holds its record's lock now: its time read again (the
        writes it may have waited for were made after this request began) and never before
        the record's last change (the clocks of several hosts), so that a record's journal and
        SLA clocks follow the order in which its writes were made."""
        now = self.now if self.clock is None else self.clock.now()
        return replace(self, now=max(now, last_changed))

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
