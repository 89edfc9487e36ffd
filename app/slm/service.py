"""Service-level use cases: calendars, agreements, and the SLA clocks that follow incidents.

Clocks are kept in step with the incident inside the incident's own write transaction
(`start_clocks`, `follow_incident`), and can be rebuilt from the journal (`rebuild_clocks`).
Each of these also answers the incident row's copy of its clocks (`shown`), which the incident
service writes with the incident; an incident's `sla` is read from that copy (`sla_of`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.auth import STAFF, Principal
from app.core.context import Context
from app.core.errors import Conflict, ErrorItem, Unprocessable
from app.core.records import RecordStore
from app.core.sql import Batch, Query
from app.identity.models import organizations, services
from app.identity.service import ensure_exists, organization_scope
from app.incidents.lifecycle import RESPONDING
from app.itil.journal import EntryKind, journal_entries
from app.slm import clocks
from app.slm import config as slm_config
from app.slm.calendar import (
    HORIZON,
    BeyondRange,
    WorkingCalendar,
    add_seconds,
    elapsed_seconds,
    format_week,
    parse_week,
    working_us_until,
)
from app.slm.clocks import Clock, Kind, Mode, Moment
from app.slm.config import SlmConfig, Target, snapshot
from app.slm.models import (
    CLOCK_KINDS,
    SHOWN_CLOCK_FIELDS,
    agreements,
    calendars,
    shown_clock_column,
    sla_clocks,
)
from app.slm.priority import PriorityMatrixRead, save_matrix
from app.slm.schemas import (
    MAX_SPAN,
    MAX_SPAN_TEXT,
    AgreementBody,
    AgreementRead,
    CalendarBody,
    CalendarRead,
)

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
    # The agreements that count on it must still reach their targets on its new hours. Checked
    # on the body's own calendar: the cache of parsed calendars holds committed versions only.
    replaced = body.working_calendar()
    for agreement in (await conn.execute(select(agreements))).all():
        for target in agreement.targets:
            if (target.get("calendar_id") or str(agreement.calendar_id)) != str(calendar_id):
                continue
            late = _too_late(replaced, target, ctx.now)
            if late is not None:
                raise Unprocessable.field(
                    ("body", "hours"),
                    f"agreement {agreement.name!r} (id {agreement.id}): {late} on these hours",
                )
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


_ONE_US = timedelta(microseconds=1)


def _added_within_span(calendar: WorkingCalendar, start: datetime, seconds: int) -> datetime | None:
    """`add_seconds`, if its end lies at most MAX_SPAN after `start` (that end included, as
    `/elapsed` counts up to it); None if it lies further (or past the horizon)."""
    try:
        return add_seconds(calendar, start, seconds, before=start + MAX_SPAN + _ONE_US)
    except BeyondRange:
        return None


async def calendar_add(
    conn: AsyncConnection, *, calendar_id: uuid.UUID, start: datetime, seconds: int
) -> datetime:
    end = _added_within_span(await load_calendar(conn, calendar_id), start, seconds)
    if end is None:
        within = (
            f"within {MAX_SPAN_TEXT} of start"
            if start + MAX_SPAN < HORIZON
            else f"before {HORIZON.isoformat().replace('+00:00', 'Z')}"
        )
        raise Unprocessable.field(
            ("body", "seconds"),
            f"this much working time does not pass {within} on this calendar",
        )
    return end


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


def _too_late(calendar: WorkingCalendar, target: Mapping[str, Any], now: datetime) -> str | None:
    """What is wrong with a target that its calendar would take more than a hundred years to
    reach (a calendar of a minute a week and a target of years): its clocks would never be
    due, and counting that far costs every write of theirs time. None: nothing."""
    seconds = max(target["response_seconds"], target["resolution_seconds"])
    if _added_within_span(calendar, now, seconds) is None:
        return (
            f"the priority {target['priority']} target of {seconds} s would take more than "
            f"{MAX_SPAN_TEXT} to reach"
        )
    return None


# The transaction-level advisory lock that agreement writes take for their scope check (any
# constant: SDMS takes no other advisory lock).
_AGREEMENT_SCOPES_LOCK = 0x5D_45_A6_01


async def _check_agreement(
    conn: AsyncConnection, body: AgreementBody, now: datetime, exclude: uuid.UUID | None = None
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
    # Locked: a calendar replaced meanwhile would not see this agreement, nor it the new hours.
    loaded = {
        c: working_calendar(snapshot(await calendar_store.get(conn, c, lock=True)))
        for c in sorted(calendar_ids)
    }
    errors = []
    for i, target in enumerate(body.targets):
        late = _too_late(loaded[target.calendar_id or body.calendar_id], target.model_dump(), now)
        if late is not None:
            errors.append(ErrorItem(loc=["body", "targets", i], msg=f"{late} on its calendar"))
    if errors:
        raise Unprocessable("; ".join(e.msg for e in errors), errors=errors)
    if conn.dialect.name == "postgresql":
        # One scope check at a time (SQLite writes one at a time anyway): two agreements for
        # one scope, checked side by side, would each find none and both be saved.
        await conn.execute(select(func.pg_advisory_xact_lock(_AGREEMENT_SCOPES_LOCK)))
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
    row = await agreement_store.create(conn, ctx, await _check_agreement(conn, body, ctx.now))
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
    values = await _check_agreement(conn, body, ctx.now, exclude=agreement_id)
    row = await agreement_store.update(conn, ctx, current, values, if_match=if_match)
    await slm_config.changed(conn)
    return row


async def set_priority_matrix(
    conn: AsyncConnection,
    *,
    ctx: Context,
    matrix: Mapping[int, Mapping[int, int]],
    if_match: str | None = None,
) -> PriorityMatrixRead:
    view = await save_matrix(conn, ctx=ctx, matrix=matrix, if_match=if_match)
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
        Kind(row.kind),
        row.agreement_id,
        row.calendar,
        row.target_seconds,
        row.warn_at_percent,
        row.calendar_id,
    )


def start_clocks(incident: Any, now: datetime, config: SlmConfig) -> list[dict[str, Any]]:
    """The clocks of a new incident, started at its `opened_at`, if an agreement applies: rows
    of `sla_clocks`, written after the incident (`insert_clocks`), and copied onto its row
    (`shown`)."""
    targets = config.targets_for(
        organization_id=incident.organization_id,
        service_id=incident.service_id,
        priority=incident.priority,
    )
    segments: tuple[clocks.Segment, ...] = ((incident.opened_at, None),)
    return [
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


def insert_clocks(batch: Batch, rows: Sequence[Mapping[str, Any]]) -> None:
    batch.insert(_INSERT_CLOCKS, rows)


# The incident row's copy of its clocks (app/slm/models.py): per kind, (column, clock field).
_SHOWN = {
    kind: tuple((shown_clock_column(kind, field), field) for field in SHOWN_CLOCK_FIELDS)
    for kind in CLOCK_KINDS
}
_NONE_SHOWN = {column: None for kind in CLOCK_KINDS for column, _ in _SHOWN[kind]}


def shown(clock_rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every clock column of an incident row, for these clocks (null for a kind with none)."""
    values = dict(_NONE_SHOWN)
    for clock in clock_rows:
        for column, field in _SHOWN[clock["kind"]]:
            values[column] = clock[field]
    return values


def _shown_of(kinds: Iterable[Kind], clock_rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The clock columns of these kinds only (all nine of each: few shapes of UPDATE)."""
    values = shown(clock_rows)
    return {column: values[column] for kind in kinds for column, _ in _SHOWN[kind]}


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
) -> dict[str, Any]:
    """Keep the clocks in step with an incident write: pause, resume or stop them, and re-target
    them when the priority (or the organization or service, hence the agreement) changed. The
    clocks' changes join the write batch. Answers the incident row's clock columns (`shown`)
    of the clocks it changed, for the caller to write with the incident."""
    retarget = any(getattr(before, f) != getattr(after, f) for f in RETARGETING_FIELDS)
    if not retarget and all(_mode(kind, before) is _mode(kind, after) for kind in Kind):
        return {}  # no clock moves: nothing to read or write
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
            return shown(())
        if not rows:
            # Newly under an agreement: the clocks are what they would have been from the
            # start, replayed from the journal, so this write's entries go in first.
            await batch.run(conn)
            return shown(await _replace_clocks(conn, after, targets, {}, now))
    else:
        targets = {kind: _target_of(row) for kind, row in rows.items()}
    changed: list[dict[str, Any]] = []
    for kind, row in rows.items():
        mode_before, mode_after = _mode(kind, before), _mode(kind, after)
        if mode_before is mode_after and not retarget:
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
        changed.append(values)
    return _shown_of((Kind(c["kind"]) for c in changed), changed)


async def _replace_clocks(
    conn: AsyncConnection,
    incident: Any,
    targets: Mapping[Kind, Target],
    previous: Mapping[Kind, Any],
    now: datetime,
) -> list[dict[str, Any]]:
    """Write clocks rebuilt from the journal (events already emitted are not emitted again);
    answers their rows."""
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
    return rows


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


async def rebuild_clocks(conn: AsyncConnection, incident: Any, now: datetime) -> dict[str, Any]:
    """Recompute the clocks from the journal and the agreement that applies now; answers the
    incident row's clock columns (`shown`), for the caller to write."""
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
    return shown(await _replace_clocks(conn, incident, targets, previous, now))


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


def clock_percent(clock: Mapping[str, Any], now: datetime) -> float:
    """How much of its target a clock (a row of `sla_clocks`) has used as of `now`, in %."""
    elapsed = clocks.live_elapsed_us(
        working_calendar(clock["calendar"]), clock["elapsed_closed_us"], clock["running_since"], now
    )
    return clocks.used_percent(elapsed, clock["target_seconds"])


# A clock as the API shows it: the fields of `SlaClockRead`, as plain data (reads of many
# incidents build many of them; tests/slm check them against the model).
ClockView = dict[str, Any]

# The incident row's clock columns in order: per kind (response first), SHOWN_CLOCK_FIELDS.
SHOWN_COLUMNS = tuple(column for kind in CLOCK_KINDS for column, _ in _SHOWN[kind])
_KINDS_AT = tuple((kind, n * len(SHOWN_CLOCK_FIELDS)) for n, kind in enumerate(CLOCK_KINDS))
_VIEWED = (
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
assert tuple(SHOWN_CLOCK_FIELDS) == _VIEWED, "_views_of unpacks the fields in this order"
_RUNNING_SINCE, _CALENDAR_ID, _CALENDAR_VERSION = (
    _VIEWED.index(name) for name in ("running_since", "calendar_id", "calendar_version")
)


def shown_values(incident: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of SHOWN_COLUMNS in a row of `incidents` (its mapping)."""
    return tuple(incident[column] for column in SHOWN_COLUMNS)


class ClocksMoved(Exception):
    """The incidents read showed a clock on a calendar version that no clock has any more: a
    rebuild or a re-target moved them since (reads are not in one transaction). Read again."""


async def sla_of(
    conn: AsyncConnection, incidents: Sequence[Sequence[Any]], now: datetime
) -> list[list[ClockView]]:
    """The `sla` field of each of these incidents (the values of their SHOWN_COLUMNS), as of
    `now`. Only a running clock needs its calendar, parsed once per process (a calendar
    version this process has not seen is read from a clock that has it: `ClocksMoved` when
    none has), and its working time until `now` (one `working_us_until` per calendar and
    page)."""
    needed = {  # the driver's ids as they come (hashing one costs less than its str)
        (values[start + _CALENDAR_ID], values[start + _CALENDAR_VERSION])
        for values in incidents
        for _, start in _KINDS_AT
        if values[start + _RUNNING_SINCE] is not None
    }
    until_now = {}
    for key in needed:
        calendar_id, version = key
        calendar = _parsed.get((str(calendar_id), version))
        if calendar is None:
            found = await _SNAPSHOT.first(
                conn, {"calendar_id": uuid.UUID(str(calendar_id)), "calendar_version": version}
            )
            if found is None:
                raise ClocksMoved(f"no clock has version {version} of calendar {calendar_id}")
            calendar = working_calendar(found.calendar)
        until_now[key] = working_us_until(calendar, now)
    return [_views_of(values, until_now) for values in incidents]


def _views_of(
    values: Sequence[Any], until_now: Mapping[tuple[Any, int], Callable[[datetime], int]]
) -> list[ClockView]:
    views = []
    for kind, start in _KINDS_AT:
        (
            agreement_id,
            calendar_id,
            calendar_version,
            target_seconds,
            mode,
            closed_us,
            running_since,
            due_at,
            stopped_at,
        ) = values[start : start + len(_VIEWED)]
        if agreement_id is None:
            continue
        elapsed = closed_us
        if running_since is not None:  # the running segment, as clocks.live_elapsed_us counts it
            elapsed += until_now[calendar_id, calendar_version](running_since)
        state, breached = clocks.state_of(mode, target_seconds, elapsed)
        views.append(
            {
                "kind": kind,
                "agreement_id": agreement_id,
                "target_seconds": target_seconds,
                "elapsed_seconds": elapsed // clocks.US,
                "due_at": due_at,
                "state": state,
                "breached": breached,
                "percent": clocks.used_percent(elapsed, target_seconds),
                "stopped_at": stopped_at,
            }
        )
    return views
