"""The alembic history builds exactly the schema the code declares, on both backends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.migrate import alembic_config, head_revision, upgrade
from app.models import metadata
from tests.pg import PostgresServer

_databases = itertools.count(1)


async def _differences(url: str) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def _inspected(url: str, read: Callable[[Any], Any]) -> Any:
    """What `read` finds with an inspector of the database at `url`."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda c: read(inspect(c)))
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    return set(await _inspected(url, lambda inspector: inspector.get_table_names()))


async def test_upgrade_on_empty_postgresql_yields_the_models_schema(
    pg_server: PostgresServer | None,
) -> None:
    if pg_server is None:
        pytest.skip("PostgreSQL server binaries not installed")
    url = pg_server.create_database(f"migrations_{next(_databases)}")
    await asyncio.to_thread(upgrade, url)
    assert await _differences(url) == []


async def test_upgrade_on_empty_sqlite_yields_the_models_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    await asyncio.to_thread(upgrade, url)
    assert await _differences(url) == []


async def test_the_history_goes_down_and_up_again(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    from alembic import command

    urls = [f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"]
    if pg_server is not None:
        urls.append(pg_server.create_database(f"migrations_{next(_databases)}"))
    for url in urls:
        await asyncio.to_thread(upgrade, url)
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        assert await _tables(url) == {"alembic_version"}
        await asyncio.to_thread(upgrade, url)
        assert await _differences(url) == []
    assert head_revision() is not None


async def _incident_under_an_agreement(conn: Any, now: Any) -> dict[str, Any]:
    """An organization, a 24x7 calendar (version 3), an agreement and an incident, written
    with the tables of the code (an INSERT names only the columns it is given, so they can
    write an older schema); answers the ids and the calendar snapshot."""
    from sqlalchemy import insert

    from app.core.ids import new_id
    from app.identity.models import organizations
    from app.incidents.models import incidents
    from app.slm.models import agreements, calendars

    org, cal, agreement, incident = new_id(), new_id(), new_id(), new_id()
    stamps = {"created_at": now, "updated_at": now, "version": 1}
    await conn.execute(insert(organizations).values(id=org, code="A", name="A", **stamps))
    await conn.execute(
        insert(calendars).values(
            id=cal, name="24x7", timezone="UTC", always_on=True, hours={}, holidays=[], **stamps
        )
    )
    await conn.execute(
        insert(agreements).values(
            id=agreement, name="A", calendar_id=cal, warn_at_percent=75, targets=[], **stamps
        )
    )
    await conn.execute(
        insert(incidents).values(
            id=incident,
            number="INC-MSK-0000001",
            region="msk",
            title="t",
            description="",
            organization_id=org,
            channel="api",
            impact=3,
            urgency=3,
            priority=5,
            state="new",
            major=False,
            request_type="incident",
            escalation_level=0,
            reopen_count=0,
            opened_at=now,
            **stamps,
        )
    )
    snapshot = {
        "id": str(cal),
        "version": 3,
        "timezone": "UTC",
        "always_on": True,
        "hours": {},
        "holidays": [],
    }
    made = {"incident": incident, "agreement": agreement, "calendar": cal, "snapshot": snapshot}
    return {**made, "organization": org}


def _urls(pg_server: PostgresServer | None, tmp_path: Path, name: str) -> list[str]:
    """A fresh SQLite file, and a fresh PostgreSQL database when the server is here."""
    urls = [f"sqlite+aiosqlite:///{tmp_path / name}.db"]
    if pg_server is not None:
        urls.append(pg_server.create_database(f"migrations_{next(_databases)}"))
    return urls


async def _written_before(url: str, revision: str, write: Callable[[Any], Awaitable[None]]) -> None:
    """Upgrade `url` to `revision`, run `write(conn)` there in one transaction, then upgrade
    to head: what a migration finds in a database written by older code."""
    await asyncio.to_thread(upgrade, url, revision)
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await write(conn)
    await engine.dispose()
    await asyncio.to_thread(upgrade, url)


async def _read(url: str, statement: Any) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(statement))
    finally:
        await engine.dispose()


def _clock(made: dict[str, Any], now: Any, **fields: Any) -> dict[str, Any]:
    """A row of `sla_clocks` of the incident `made`, on its agreement and calendar."""
    return {
        "incident_id": made["incident"],
        "agreement_id": made["agreement"],
        "calendar_id": made["calendar"],
        "calendar": made["snapshot"],
        "target_seconds": 60,
        "warn_at_percent": 75,
        "segments": [],
        "mode": "running",
        "elapsed_closed_us": 0,
        "warned": False,
        "breach_notified": False,
        "updated_at": now,
        **fields,
    }


async def test_0003_fills_in_the_read_columns_of_existing_clocks(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    """Clocks written before 0003 get `calendar_version` and `running_since` from their JSON."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from app.slm.models import sla_clocks

    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    async def write(conn: Any) -> None:
        made = await _incident_under_an_agreement(conn, now)
        for kind, segments in (
            ("response", [["2026-03-02T09:00:00+00:00", "2026-03-02T09:05:00+00:00"]]),
            ("resolution", [["2026-03-02T09:00:00+00:00", None]]),
        ):
            await conn.execute(
                insert(sla_clocks).values(_clock(made, now, kind=kind, segments=segments))
            )

    for url in _urls(pg_server, tmp_path, "backfill"):
        await _written_before(url, "0002", write)
        rows = {
            r.kind: (r.calendar_version, r.running_since)
            for r in await _read(url, select(sla_clocks))
        }
        assert rows == {"response": (3, None), "resolution": (3, now)}


async def test_0006_copies_the_clocks_onto_their_incidents(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    """Incidents written before 0006 get the clock columns of their rows from their clocks."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select

    from app.incidents.models import incidents
    from app.slm.models import sla_clocks
    from app.slm.service import shown

    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    clocks: list[dict[str, Any]] = []

    async def write(conn: Any) -> None:
        made = await _incident_under_an_agreement(conn, now)
        clocks[:] = [
            _clock(
                made,
                now,
                kind="response",
                mode="stopped",
                elapsed_closed_us=300_000_000,
                running_since=None,
                due_at=now + timedelta(minutes=15),
                stopped_at=now + timedelta(minutes=5),
                target_seconds=900,
                calendar_version=3,
            ),
            _clock(
                made,
                now,
                kind="resolution",
                running_since=now,
                due_at=now + timedelta(hours=4),
                stopped_at=None,
                target_seconds=4 * 3600,
                calendar_version=3,
            ),
        ]
        for clock in clocks:
            await conn.execute(insert(sla_clocks).values(clock))

    for url in _urls(pg_server, tmp_path, "copy"):
        await _written_before(url, "0005", write)
        [row] = [r._mapping for r in await _read(url, select(incidents))]
        expected = shown(clocks)
        assert {name: row[name] for name in expected} == expected
        assert expected["sla_resolution_running_since"] == now


async def _foreign_keys(url: str, table: str) -> list[tuple[Any, ...]]:
    keys = await _inspected(url, lambda inspector: inspector.get_foreign_keys(table))
    return sorted(
        (
            k["name"],
            tuple(k["constrained_columns"]),
            k["referred_table"],
            tuple(k["referred_columns"]),
        )
        for k in keys
    )


async def test_0007_keeps_the_clocks_and_gives_back_their_foreign_keys(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    """Clocks written before 0007 survive it (SQLite rebuilds the table); after it a clock
    names its agreement and calendar without foreign keys, and going back to 0006 restores
    exactly the foreign keys 0006 had."""
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import insert, select

    from app.core.ids import new_id
    from app.slm.models import sla_clocks

    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    made: dict[str, Any] = {}

    async def write(conn: Any) -> None:
        made.update(await _incident_under_an_agreement(conn, now))
        await conn.execute(
            insert(sla_clocks).values(_clock(made, now, kind="response", calendar_version=3))
        )

    for n, url in enumerate(_urls(pg_server, tmp_path, "labels")):
        before = _urls(None, tmp_path, f"at_0006_{n}")[0]  # a fresh database at 0006
        await asyncio.to_thread(upgrade, before, "0006")
        at_0006 = await _foreign_keys(before, "sla_clocks")
        assert {key[1] for key in at_0006} == {
            ("incident_id",),
            ("agreement_id",),
            ("calendar_id",),
        }

        await _written_before(url, "0006", write)
        [clock] = await _read(url, select(sla_clocks.c.kind, sla_clocks.c.agreement_id))
        assert tuple(clock) == ("response", made["agreement"])
        assert [key[1] for key in await _foreign_keys(url, "sla_clocks")] == [("incident_id",)]
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.begin() as conn:  # a label may name a row that is not there
            await conn.execute(
                insert(sla_clocks).values(
                    _clock(made, now, kind="resolution", agreement_id=new_id(), calendar_version=3)
                )
            )
            await conn.execute(sla_clocks.delete().where(sla_clocks.c.kind == "resolution"))
        await engine.dispose()

        await asyncio.to_thread(command.downgrade, alembic_config(url), "0006")
        assert await _foreign_keys(url, "sla_clocks") == at_0006
        assert len(await _read(url, select(sla_clocks))) == 1


async def test_0008_gives_existing_api_keys_their_versions(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    """Keys issued before 0008 get version 1, or 2 when already revoked; they still work."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from app.core.ids import new_id
    from app.identity.models import api_keys, users

    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    user, live, revoked = new_id(), new_id(), new_id()

    async def write(conn: Any) -> None:
        await conn.execute(
            insert(users).values(
                id=user, name="Anna", role="agent", active=True, created_at=now, updated_at=now
            )
        )
        for key, gone in ((live, None), (revoked, now)):
            await conn.execute(
                insert(api_keys).values(  # the columns a key had before 0008
                    id=key,
                    user_id=user,
                    key_hash=key.hex,
                    prefix="sdms_abcdefg",
                    created_at=now,
                    revoked_at=gone,
                )
            )

    for url in _urls(pg_server, tmp_path, "key_versions"):
        await _written_before(url, "0007", write)
        found = dict(await _read(url, select(api_keys.c.id, api_keys.c.version)))
        assert found == {live: 1, revoked: 2}


async def test_0009_gives_existing_escalations_their_authors_roles(
    pg_server: PostgresServer | None, tmp_path: Path
) -> None:
    """Escalations made before 0009 get their author's role (none for SDMS itself)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from app.core.ids import new_id
    from app.identity.models import users
    from app.incidents.models import escalations

    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    customer, by_customer, by_sdms = new_id(), new_id(), new_id()

    async def write(conn: Any) -> None:
        made = await _incident_under_an_agreement(conn, now)
        await conn.execute(
            insert(users).values(
                id=customer, name="Olga", role="customer", organization_id=made["organization"],
                active=True, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        for escalation, author, level in ((by_customer, customer, 1), (by_sdms, None, 2)):
            await conn.execute(
                insert(escalations).values(  # the columns an escalation had before 0009
                    id=escalation,
                    incident_id=made["incident"],
                    escalation_level=level,
                    reason="poor_experience",
                    note="n",
                    created_by_id=author,
                    created_at=now,
                )
            )

    for url in _urls(pg_server, tmp_path, "escalation_roles"):
        await _written_before(url, "0008", write)
        found = dict(await _read(url, select(escalations.c.id, escalations.c.created_by_role)))
        assert found == {by_customer: "customer", by_sdms: None}
