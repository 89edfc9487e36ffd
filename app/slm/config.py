"""The service-level configuration that every incident write reads — the priority matrix, the
agreements and their calendars — kept per process and validated by a version counter
(app/core/versions.py): changing any of it bumps the `slm` counter in the same transaction.
Opening an incident reads the counter together with its number and reloads when it moved; on
PostgreSQL it writes with the cached configuration, guarded by its version, and is done again
with the configuration reloaded when the guard finds the counter moved.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import versions
from app.slm.clocks import Kind
from app.slm.models import agreements, calendars
from app.slm.priority import derive_priority, load_matrix

TOPIC = "slm"


def snapshot(row: Any) -> dict[str, Any]:
    """What a clock keeps of its calendar: enough to count without looking it up again."""
    return {
        "id": str(row.id),
        "version": row.version,
        "timezone": row.timezone,
        "always_on": row.always_on,
        "hours": row.hours,
        "holidays": row.holidays,
    }


@dataclass(frozen=True, slots=True)
class Target:
    """What a clock of an incident is measured against."""

    kind: Kind
    agreement_id: uuid.UUID
    calendar: dict[str, Any]
    target_seconds: int
    warn_at_percent: int
    calendar_id: uuid.UUID  # the snapshot's id


# Distinct (organization, service, priority) whose targets a configuration remembers.
_TARGETS_KEPT = 10_000


def _specificity(agreement: Any) -> int:
    return (2 if agreement.organization_id is not None else 0) + (
        1 if agreement.service_id is not None else 0
    )


@dataclass(frozen=True, slots=True)
class SlmConfig:
    version: int
    matrix: Mapping[int, Mapping[int, int]]
    agreements: Sequence[Any]
    calendars: Mapping[uuid.UUID, dict[str, Any]]
    # targets_for's answers: the configuration never changes (a new version is a new one)
    _targets: dict[tuple[Any, ...], dict[Kind, Target]] = field(default_factory=dict)

    def priority(self, impact: int, urgency: int) -> int:
        return derive_priority(self.matrix, impact, urgency)

    def agreement_for(self, organization_id: uuid.UUID, service_id: uuid.UUID | None) -> Any:
        """The most specific agreement: organization + service, organization, service,
        default (neither); None without any."""
        candidates = [
            a
            for a in self.agreements
            if a.organization_id in (None, organization_id)
            and (a.service_id is None or (service_id is not None and a.service_id == service_id))
        ]
        return max(candidates, key=_specificity, default=None)

    def targets_for(
        self, *, organization_id: uuid.UUID, service_id: uuid.UUID | None, priority: int
    ) -> dict[Kind, Target]:
        """The clocks' targets of an incident with these values; none without an agreement or
        without a target for its priority."""
        key = (organization_id, service_id, priority)
        found = self._targets.get(key)
        if found is None:
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            found = self._targets[key] = self._find_targets(organization_id, service_id, priority)
        return found

    def _find_targets(
        self, organization_id: uuid.UUID, service_id: uuid.UUID | None, priority: int
    ) -> dict[Kind, Target]:
        agreement = self.agreement_for(organization_id, service_id)
        if agreement is None:
            return {}
        target = next((t for t in agreement.targets if t["priority"] == priority), None)
        if target is None:
            return {}
        calendar_id = uuid.UUID(target.get("calendar_id") or str(agreement.calendar_id))
        snap = self.calendars[calendar_id]
        return {
            kind: Target(
                kind,
                agreement.id,
                snap,
                target[f"{kind}_seconds"],
                agreement.warn_at_percent,
                calendar_id,
            )
            for kind in Kind
        }


# One cached configuration per database (a process normally has one; tests have many).
_current: dict[Any, SlmConfig] = {}


async def current(conn: AsyncConnection, version: int | None = None) -> SlmConfig:
    """The configuration at `version` (read now if not given), from the cache when it has it."""
    if version is None:
        version = await versions.read(conn, TOPIC)
    database = conn.engine.url
    cached = _current.get(database)
    if cached is not None and cached.version == version:
        return cached
    matrix, _ = await load_matrix(conn)
    agreement_rows = (await conn.execute(select(agreements))).all()
    calendar_rows = (await conn.execute(select(calendars))).all()
    loaded = SlmConfig(
        version=version,
        matrix=matrix,
        agreements=agreement_rows,
        calendars={row.id: snapshot(row) for row in calendar_rows},
    )
    _current[database] = loaded
    return loaded


def cached(conn: AsyncConnection) -> SlmConfig | None:
    """The configuration last loaded, at whatever version: for a write guarded by its version
    (app/core/versions.py `unchanged`)."""
    return _current.get(conn.engine.url)


def forget(conn: AsyncConnection) -> None:
    """Drop the cached configuration: a guarded write found it stale."""
    _current.pop(conn.engine.url, None)


async def changed(conn: AsyncConnection) -> None:
    """Call inside every transaction that changes the matrix, a calendar or an agreement."""
    await versions.bump(conn, TOPIC)
