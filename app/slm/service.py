"""Service-level use cases: calendars, agreements, and the SLA clocks that follow incidents.

Clocks are kept in step with the incident inside the incident's own write transaction
(`start_clocks`, `follow_incident`), and can be rebuilt from the journal (`rebuild_clocks`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.auth import STAFF, Principal
from app.core.context import Context
from app.core.errors import Conflict, Unprocessable
from app.core.records import RecordStore
from app.core.sql import Batch, Query
from app.identity.models import organizations, services
from app.identity.service import ensure_exists, organization_scope
from app.incidents.lifecycle import RESPONDING
from app.itil.journal import EntryKind, journal_entries
from app.slm import clocks
from app.slm import config as slm_config
from app.slm.calendar import (
    WorkingCalendar,
    add_seconds,
    elapsed_seconds,
    format_week,
    parse_week,
)
from app.slm.clocks import Clock, Kind, Mode, Moment
from app.slm.config import SlmConfig, Target, snapshot
from app.slm.models import agreements, calendars, sla_clocks
from app.slm.priority import PriorityMatrixRead, save_matrix
from app.slm.schemas import AgreementBody, AgreementRead, CalendarBody, CalendarRead

_UUID_ARRAY = postgresql.ARRAY(sla_clocks.c.incident_id.type)

# --- calendars ------------------------------------------------------------------------------


def calendar_view(row: Any) -> CalendarRead:
    return CalendarRead.model_validate(row)


calendar_store = RecordStore(calendars, entity="calendar", view=calendar_view)


def _calendar_values(body: CalendarBody) -> dict[str, Any]:
    """Stored normalised: intervals merged and sorted, holidays sorted and unique."""
    working = body.working_calendar()
    return {
        "name": body.name,
        "timezone": body.timezone,
        "always_on": body.always_on,
        "hours": format_week(working.week),
        "holidays": sorted({d.isoformat() for d in body.holidays}),
    }


async def create_calendar(conn: AsyncConnection, *, ctx: Context, body: CalendarBody) -> Row[Any]:
    row = await calendar_store.create(conn, ctx, _calendar_values(body))
    await slm_config.changed(conn)
    return row


async def replace_calendar(
    conn: AsyncConnection,
    *,
    ctx: Context,
    calendar_id: uuid.UUID,
    body: CalendarBody,
    if_match: str | None,
) -> Row[Any]:
    current = await calendar_store.get(conn, calendar_id, lock=True)
    row = await calendar_store.update(conn, ctx, current, _calendar_values(body), if_match=if_match)
    await slm_config.changed(conn)
    return row


# A calendar's id and version name its content for good, so parsed calendars can be shared.
_parsed: dict[tuple[str, int], WorkingCalendar] = {}
_PARSED_MAX = 1024


def working_calendar(snap: Mapping[str, Any]) -> WorkingCalendar:
    key = (snap["id"], snap["version"])
    calendar = _parsed.get(key)
    if calendar is None:
        if len(_parsed) >= _PARSED_MAX:
            del _parsed[next(iter(_parsed))]  # the oldest parsed
        calendar = _parsed[key] = WorkingCalendar(
            timezone=snap["timezone"],
            always_on=snap["always_on"],
            week=parse_week(snap["hours"]),
            holidays=frozenset(date.fromisoformat(d) for d in snap["holidays"]),
        )
    return calendar


async def load_calendar(conn: AsyncConnection, calendar_id: uuid.UUID) -> WorkingCalendar:
    row = await calendar_store.get(conn, calendar_id)
    return working_calendar(snapshot(row))


async def calendar_add(
    conn: AsyncConnection, *, calendar_id: uuid.UUID, start: datetime, seconds: int
) -> datetime:
    return add_seconds(await load_calendar(conn, calendar_id), start, seconds)


async def calendar_elapsed(
    conn: AsyncConnection, *, calendar_id: uuid.UUID, start: datetime, end: datetime
) -> int:
    return elapsed_seconds(await load_calendar(conn, calendar_id), start, end)


# --- agreements -----------------------------------------------------------------------------


def agreement_view(row: Any) -> AgreementRead:
    return AgreementRead.model_validate(row)


agreement_store = RecordStore(agreements, entity="agreement", view=agreement_view)


def agreement_scope(principal: Principal) -> list[ColumnElement[bool]]:
    """Customers read the agreements that can apply to them: their own and the defaults."""
    if not principal.is_customer:
        return []
    return [
        or_(
            agreements.c.organization_id.is_(None),
            *organization_scope(principal, agreements.c.organization_id),
        )
    ]


async def _check_agreement(
    conn: AsyncConnection, body: AgreementBody, exclude: uuid.UUID | None = None
) -> dict[str, Any]:
    await ensure_exists(conn, organizations, body.organization_id, "organization_id")
    await ensure_exists(conn, services, body.service_id, "service_id")
    calendar_ids = {body.calendar_id, *(t.calendar_id for t in body.targets if t.calendar_id)}
    found = set(
        (
            await conn.execute(select(calendars.c.id).where(calendars.c.id.in_(calendar_ids)))
        ).scalars()
    )
    if calendar_ids - found:
        missing = ", ".join(sorted(str(c) for c in calendar_ids - found))
        raise Unprocessable.field(("body", "calendar_id"), f"unknown calendars: {missing}")
    same_scope = select(agreements.c.id).where(
        agreements.c.organization_id.is_(None)
        if body.organization_id is None
        else agreements.c.organization_id == body.organization_id,
        agreements.c.service_id.is_(None)
        if body.service_id is None
        else agreements.c.service_id == body.service_id,
    )
    if exclude is not None:
        same_scope = same_scope.where(agreements.c.id != exclude)
    if (await conn.execute(same_scope.limit(1))).first() is not None:
        raise Conflict(
            "An agreement for this organization and service already exists; change it instead.",
            slug="duplicate",
        )
    values = body.model_dump(mode="json")
    values["organization_id"] = body.organization_id
    values["service_id"] = body.service_id
    values["calendar_id"] = body.calendar_id
    values["targets"] = sorted(values["targets"], key=lambda t: t["priority"])
    return values


async def create_agreement(conn: AsyncConnection, *, ctx: Context, body: AgreementBody) -> Row[Any]:
    row = await agreement_store.create(conn, ctx, await _check_agreement(conn, body))
    await slm_config.changed(conn)
    return row


async def replace_agreement(
    conn: AsyncConnection,
    *,
    ctx: Context,
    agreement_id: uuid.UUID,
    body: AgreementBody,
    if_match: str | None,
) -> Row[Any]:
    current = await agreement_store.get(conn, agreement_id, lock=True)
    values = await _check_agreement(conn, body, exclude=agreement_id)
    row = await agreement_store.update(conn, ctx, current, values, if_match=if_match)
    await slm_config.changed(conn)
    return row


async def set_priority_matrix(
    conn: AsyncConnection, *, ctx: Context, matrix: Mapping[int, Mapping[int, int]]
) -> PriorityMatrixRead:
    view = await save_matrix(conn, ctx=ctx, matrix=matrix)
    await slm_config.changed(conn)
    return view


# Clock writes (hot-path queries, app/core/sql.py).
_DELETE_CLOCKS = Query(
    delete(sla_clocks).where(sla_clocks.c.incident_id == bindparam("incident_id"))
)
_INSERT_CLOCKS = Query(insert(sla_clocks), json=("calendar", "segments"))
_UPDATE_CLOCK = Query(
    update(sla_clocks)
    .where(
        sla_clocks.c.incident_id == bindparam("_incident_id"),
        sla_clocks.c.kind == bindparam("_kind"),
    )
    .values({c.name: bindparam(f"_set_{c.name}") for c in sla_clocks.columns}),
    json=("_set_calendar", "_set_segments"),
)


def _dump_segments(segments: Iterable[clocks.Segment]) -> list[list[str | None]]:
    return [[s.isoformat(), e.isoformat() if e else None] for s, e in segments]


def _load_segments(stored: Sequence[Sequence[str | None]]) -> tuple[clocks.Segment, ...]:
    return tuple(
        (datetime.fromisoformat(str(s)), datetime.fromisoformat(e) if e else None)
        for s, e in stored
    )


def _clock_values(
    target: Target,
    segments: tuple[clocks.Segment, ...],
    mode: Mode,
    stopped_at: datetime | None,
    *,
    warned: bool,
    breach_notified: bool,
    now: datetime,
) -> dict[str, Any]:
    clock = Clock(
        kind=target.kind,
        calendar=working_calendar(target.calendar),
        target_seconds=target.target_seconds,
        warn_at_percent=target.warn_at_percent,
        segments=segments,
        mode=mode,
        stopped_at=stopped_at,
    )
    plan = clocks.schedule(clock, warned=warned, breach_notified=breach_notified)
    return {
        "kind": target.kind.value,
        "agreement_id": target.agreement_id,
        "calendar_id": target.calendar_id,
        "calendar": target.calendar,
        "calendar_version": target.calendar["version"],
        "target_seconds": target.target_seconds,
        "warn_at_percent": target.warn_at_percent,
        "segments": _dump_segments(segments),
        "mode": mode.value,
        "elapsed_closed_us": plan.elapsed_closed_us,
        "running_since": clock.running_since,
        "stopped_at": stopped_at,
        "due_at": plan.due_at,
        "warn_at": plan.warn_at,
        "breach_at": plan.breach_at,
        "warned": warned,
        "breach_notified": breach_notified,
        "next_check_at": plan.next_check_at,
        "updated_at": now,
    }


def _target_of(row: Any) -> Target:
    return Target(
        Kind(row.kind), row.agreement_id, row.calendar, row.target_seconds, row.warn_at_percent
    )


def start_clocks(batch: Batch, incident: Any, now: datetime, config: SlmConfig) -> list[ClockView]:
    """Start both clocks of a new incident at its `opened_at`, if an agreement applies (the
    rows join the write batch); answers the incident's `sla`."""
    targets = config.targets_for(
        organization_id=incident.organization_id,
        service_id=incident.service_id,
        priority=incident.priority,
    )
    if not targets:
        return []
    segments: tuple[clocks.Segment, ...] = ((incident.opened_at, None),)
    rows = [
        {
            "incident_id": incident.id,
            **_clock_values(
                target,
                segments,
                Mode.running,
                None,
                warned=False,
                breach_notified=False,
                now=now,
            ),
        }
        for target in targets.values()
    ]
    batch.insert(_INSERT_CLOCKS, rows)
    return _views(rows, now)


def _mode(kind: Kind, incident: Any) -> Mode:
    return clocks.mode_of(
        kind,
        state=incident.state,
        hold_reason=incident.hold_reason,
        responded=incident.responded_at is not None,
    )


RETARGETING_FIELDS = ("priority", "organization_id", "service_id")


async def follow_incident(
    conn: AsyncConnection, batch: Batch, before: Any, after: Any, now: datetime
) -> list[ClockView]:
    """Keep the clocks in step with an incident write: pause, resume or stop them, and re-target
    them when the priority (or the organization or service, hence the agreement) changed. The
    changes join the write batch. Answers the incident's `sla` after the write."""
    retarget = any(getattr(before, f) != getattr(after, f) for f in RETARGETING_FIELDS)
    rows = {Kind(r.kind): r for r in await _CLOCKS_TO_CHANGE.all(conn, {"incident_id": after.id})}
    if retarget:
        config = await slm_config.current(conn)
        targets = config.targets_for(
            organization_id=after.organization_id,
            service_id=after.service_id,
            priority=after.priority,
        )
        if not targets:
            batch.execute(_DELETE_CLOCKS, {"incident_id": after.id})
            return []
        if not rows:
            # Newly under an agreement: the clocks are what they would have been from the
            # start, replayed from the journal, so this write's entries go in first.
            await batch.run(conn)
            return await _replace_clocks(conn, after, targets, {}, now)
    else:
        targets = {kind: _target_of(row) for kind, row in rows.items()}
    current: list[Mapping[Any, Any]] = []
    for kind, row in rows.items():
        mode_before, mode_after = _mode(kind, before), _mode(kind, after)
        if mode_before is mode_after and not retarget:
            current.append(row._mapping)
            continue
        segments = clocks.advance(_load_segments(row.segments), mode_before, mode_after, now)
        stopped_at = row.stopped_at
        if mode_after is not mode_before:
            stopped_at = now if mode_after is Mode.stopped else None
        values = _clock_values(
            targets[kind],
            segments,
            mode_after,
            stopped_at,
            warned=row.warned,
            breach_notified=row.breach_notified,
            now=now,
        )
        params = {f"_set_{name}": value for name, value in values.items()}
        params.update(_set_incident_id=after.id, _incident_id=after.id, _kind=kind.value)
        batch.execute(_UPDATE_CLOCK, params)
        current.append({"incident_id": after.id, **values})
    return _views(current, now)


async def _replace_clocks(
    conn: AsyncConnection,
    incident: Any,
    targets: Mapping[Kind, Target],
    previous: Mapping[Kind, Any],
    now: datetime,
) -> list[ClockView]:
    """Write clocks rebuilt from the journal; events already emitted are not emitted again."""
    replayed = clocks.replay(incident.opened_at, await _history(conn, incident))
    await conn.execute(delete(sla_clocks).where(sla_clocks.c.incident_id == incident.id))
    rows = []
    for kind, target in targets.items():
        state = replayed[kind]
        old = previous.get(kind)
        rows.append(
            {
                "incident_id": incident.id,
                **_clock_values(
                    target,
                    state.segments,
                    state.mode,
                    state.stopped_at,
                    warned=bool(old and old.warned),
                    breach_notified=bool(old and old.breach_notified),
                    now=now,
                ),
            }
        )
    if rows:
        await _INSERT_CLOCKS.insert_many(conn, rows)
    return _views(rows, now)


async def _history(conn: AsyncConnection, incident: Any) -> list[Moment]:
    """The incident's clock-relevant history from its journal: state and hold-reason changes
    and the first public comment by staff, each with its time."""
    entries = (
        await conn.execute(
            select(journal_entries)
            .where(
                journal_entries.c.record_id == incident.id,
                or_(
                    journal_entries.c.field.in_(("state", "hold_reason")),
                    (journal_entries.c.kind == EntryKind.comment)
                    & journal_entries.c.public.is_(True),
                ),
            )
            .order_by(journal_entries.c.created_at, journal_entries.c.id)
        )
    ).all()
    state, hold_reason, responded = "new", None, False
    moments: list[Moment] = []
    # The entries of one write share its instant: the incident is what all of them made it.
    for at, group in itertools.groupby(entries, key=lambda e: e.created_at):
        for entry in group:
            if entry.kind == EntryKind.comment:
                responded = responded or entry.author_role in STAFF
            elif entry.field == "state":
                state = entry.new
                responded = responded or state in RESPONDING
                if state != "on_hold":
                    hold_reason = None
            elif entry.field == "hold_reason":
                hold_reason = entry.new
        moments.append(Moment(at, state, hold_reason, responded))
    return moments


async def rebuild_clocks(conn: AsyncConnection, incident: Any, now: datetime) -> list[ClockView]:
    """Recompute the clocks from the journal and the agreement that applies now."""
    previous = {
        Kind(r.kind): r
        for r in await conn.execute(
            select(sla_clocks).where(sla_clocks.c.incident_id == incident.id)
        )
    }
    config = await slm_config.current(conn)
    targets = config.targets_for(
        organization_id=incident.organization_id,
        service_id=incident.service_id,
        priority=incident.priority,
    )
    return await _replace_clocks(conn, incident, targets, previous, now)


# What reading a clock needs: no JSON to decode (see app/slm/models.py).
VIEW_COLUMNS = [
    sla_clocks.c[name]
    for name in (
        "incident_id",
        "kind",
        "agreement_id",
        "calendar_id",
        "calendar_version",
        "target_seconds",
        "mode",
        "elapsed_closed_us",
        "running_since",
        "due_at",
        "stopped_at",
    )
]

# Every incident read runs one of these (hot-path queries, app/core/sql.py); response first.
_CLOCKS_OF_ONE = Query(
    select(*VIEW_COLUMNS)
    .where(sla_clocks.c.incident_id == bindparam("incident_id"))
    .order_by(sla_clocks.c.kind.desc())
)
_CLOCKS_OF_MANY = {
    # PostgreSQL: one array parameter, so every page size is the same prepared statement. It
    # travels as the array's text (`{id,id,...}`), which PostgreSQL parses in C: the driver's
    # binary array encoding checks every element's type in Python.
    "postgresql": Query(
        select(*VIEW_COLUMNS)
        .where(
            sla_clocks.c.incident_id
            == any_(cast(bindparam("incident_ids", type_=Text), _UUID_ARRAY))
        )
        .order_by(sla_clocks.c.incident_id, sla_clocks.c.kind.desc())
    ),
    "sqlite": Query(
        select(*VIEW_COLUMNS)
        .where(sla_clocks.c.incident_id.in_(bindparam("incident_ids", expanding=True)))
        .order_by(sla_clocks.c.incident_id, sla_clocks.c.kind.desc())
    ),
}
# Writes that move a clock need all of it (segments, calendar snapshot).
_CLOCKS_TO_CHANGE = Query(
    select(sla_clocks).where(sla_clocks.c.incident_id == bindparam("incident_id"))
)
_SNAPSHOT = Query(
    select(sla_clocks.c.calendar)
    .where(
        sla_clocks.c.calendar_id == bindparam("calendar_id"),
        sla_clocks.c.calendar_version == bindparam("calendar_version"),
    )
    .limit(1)
)


async def clock_views(
    conn: AsyncConnection, incident_ids: Sequence[uuid.UUID], now: datetime
) -> dict[uuid.UUID, list[ClockView]]:
    """The `sla` field of these incidents, as of `now` (one query for all of them)."""
    views: dict[uuid.UUID, list[ClockView]] = {}
    if not incident_ids:
        return views
    if len(incident_ids) == 1:
        rows = await _CLOCKS_OF_ONE.all(conn, {"incident_id": incident_ids[0]})
    else:
        if conn.dialect.name == "postgresql":
            ids: Any = "{" + ",".join(map(str, incident_ids)) + "}"
        else:
            ids = list(incident_ids)
        rows = await _CLOCKS_OF_MANY[conn.dialect.name].all(conn, {"incident_ids": ids})
    clocks = [row._mapping for row in rows]
    await _parse_calendars(conn, clocks)
    for clock in clocks:
        views.setdefault(clock["incident_id"], []).append(clock_view(clock, now))
    return views


async def views_of(
    conn: AsyncConnection, clocks: Sequence[Mapping[str, Any]], now: datetime
) -> list[ClockView]:
    """The `sla` field of one incident from its clocks' `VIEW_COLUMNS`, read by the caller
    (with the incident, in one statement), response first."""
    await _parse_calendars(conn, clocks)
    return _views(clocks, now)


async def _parse_calendars(conn: AsyncConnection, clocks: Iterable[Mapping[str, Any]]) -> None:
    for key in {_calendar_key(clock) for clock in clocks} - _parsed.keys():
        # A calendar version this process has not parsed yet: once, from any clock that has it.
        found = await _SNAPSHOT.first(conn, {"calendar_id": key[0], "calendar_version": key[1]})
        working_calendar(found.calendar)


def _views(clock_rows: Iterable[Mapping[Any, Any]], now: datetime) -> list[ClockView]:
    """Views of one incident's clocks, response first (the order `clock_views` answers)."""
    return sorted((clock_view(r, now) for r in clock_rows), key=lambda v: v["kind"] != "response")


# A clock as the API shows it: the fields of `SlaClockRead`, as plain data (reads of many
# incidents build many of them; tests/slm check them against the model).
ClockView = dict[str, Any]


def _calendar_key(clock: Mapping[Any, Any]) -> tuple[str, int]:
    return str(clock["calendar_id"]), clock["calendar_version"]


def clock_view(clock: Mapping[Any, Any], now: datetime) -> ClockView:
    """A clock as the API shows it, as of `now` (from a stored row or the values written).
    Its calendar is parsed already (`clock_views` sees to it) or in the mapping."""
    calendar = _parsed.get(_calendar_key(clock))
    if calendar is None:
        calendar = working_calendar(clock["calendar"])
    reading = clocks.read(
        calendar,
        mode=Mode(clock["mode"]),
        target_seconds=clock["target_seconds"],
        closed_us=clock["elapsed_closed_us"],
        running_since=clock["running_since"],
        now=now,
    )
    return {
        "kind": clock["kind"],
        "agreement_id": clock["agreement_id"],
        "target_seconds": clock["target_seconds"],
        "elapsed_seconds": reading.elapsed_seconds,
        "due_at": clock["due_at"],
        "state": reading.state,
        "breached": reading.breached,
        "percent": reading.percent,
        "stopped_at": clock["stopped_at"],
    }
