"""The hot-path executor (app/core/sql.py): same rows, same transaction, same errors on both
routes (SQLAlchemy on SQLite, the driver beneath it on PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import String, bindparam, cast, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from app.core.db import Database, create_engine, release
from app.core.errors import Conflict
from app.core.ids import new_id
from app.core.sql import Batch, Query
from app.identity.models import groups
from app.itil.journal import journal_entries

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
INSERT_GROUP = Query(insert(groups).returning(groups))
GROUP_BY_NAME = Query(select(groups).where(groups.c.name == bindparam("name")))
COUNT = select(func.count()).select_from(groups)


def group(name: str) -> dict[str, object]:
    return {
        "id": new_id(),
        "name": name,
        "description": None,
        "created_at": NOW,
        "updated_at": NOW,
        "version": 1,
    }


async def test_rows_read_like_sqlalchemy_rows(database: Database) -> None:
    async with database.read() as conn:
        async with database.transaction_on(conn):
            created = await INSERT_GROUP.insert(conn, group("2nd line"))
        found = await GROUP_BY_NAME.first(conn, {"name": "2nd line"})
        assert (created.name, created.version) == ("2nd line", 1)
        assert found.id == created.id
        assert found._mapping["created_at"] == NOW
        assert await GROUP_BY_NAME.first(conn, {"name": "nobody"}) is None
        assert [r.name for r in await GROUP_BY_NAME.all(conn, {"name": "2nd line"})] == ["2nd line"]


async def test_statements_run_inside_the_transaction(database: Database) -> None:
    """The driver route starts SQLAlchemy's transaction first: a rollback takes its writes."""
    async with database.read() as conn:
        with pytest.raises(RuntimeError):
            async with database.transaction_on(conn):
                await INSERT_GROUP.insert(conn, group("rolled back"))  # the first statement
                raise RuntimeError
        assert await GROUP_BY_NAME.first(conn, {"name": "rolled back"}) is None
        async with database.transaction_on(conn):
            await INSERT_GROUP.insert(conn, group("kept"))
            assert (await conn.execute(COUNT)).scalar_one() == 1  # same transaction
    async with database.read() as other:
        assert (await GROUP_BY_NAME.first(other, {"name": "kept"})) is not None


async def test_sqlalchemy_statements_share_the_transaction(database: Database) -> None:
    """Statements run through SQLAlchemy and through the driver are one transaction: both
    are rolled back together, and committed together."""
    async with database.read() as conn:
        with pytest.raises(RuntimeError):
            async with database.transaction_on(conn):
                await conn.execute(insert(groups).values(**group("by SQLAlchemy")))
                await INSERT_GROUP.insert(conn, group("by the driver"))
                raise RuntimeError
        assert (await conn.execute(COUNT)).scalar_one() == 0
        async with database.transaction_on(conn):
            await conn.execute(insert(groups).values(**group("by SQLAlchemy")))
            await INSERT_GROUP.insert(conn, group("by the driver"))
    async with database.read() as other:
        assert (await other.execute(COUNT)).scalar_one() == 2


async def test_a_connection_left_in_a_transaction_is_not_pooled(database: Database) -> None:
    """A request cancelled inside its write must not hand its open transaction to the next
    request: `release` discards such a connection."""
    conn = await database.reader.connect()
    context = database.transaction_on(conn)
    await context.__aenter__()  # begun, never ended: as a cancelled request leaves it
    await INSERT_GROUP.insert(conn, group("never committed"))
    await release(conn)
    for _ in range(3):  # whichever pooled connection comes next is clean
        async with database.read() as other:
            assert (await other.execute(COUNT)).scalar_one() == 0
            async with database.transaction_on(other):
                assert (await other.execute(COUNT)).scalar_one() == 0


async def _cancelled(write: Callable[[], Coroutine[Any, Any, None]], steps: int) -> None:
    """Start `write` and cancel it after `steps` turns of the event loop: during its BEGIN, a
    statement or its COMMIT, as a client that goes away leaves a request."""
    task = asyncio.create_task(write())
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("steps", range(6))
async def test_a_write_cancelled_anywhere_leaves_the_next_one_durable(
    database: Database, steps: int
) -> None:
    """A request cancelled at any point of its write (during BEGIN, a statement, COMMIT)
    must not hand a half-open transaction to the next request on the same connection: that
    one's 2xx must mean committed."""
    one = Database(create_engine(str(database.engine.url), pool_size=1, max_overflow=0))
    try:
        conn = await one.reader.connect()
        await conn.execute(COUNT)

        async def cancelled_write() -> None:
            async with one.transaction_on(conn):
                await INSERT_GROUP.insert(conn, group("cancelled"))
                await conn.execute(COUNT)

        await _cancelled(cancelled_write, steps)
        await release(conn)
        # The pool's only connection, or a fresh one if that was discarded.
        async with one.read() as again, one.transaction_on(again):
            await INSERT_GROUP.insert(again, group("acknowledged"))
    finally:
        await one.dispose()
    async with database.read() as other:
        assert await GROUP_BY_NAME.first(other, {"name": "acknowledged"}) is not None


@pytest.mark.parametrize("steps", range(6))
async def test_a_request_cancelled_in_its_write_hands_no_transaction_on(
    database: Database, steps: int
) -> None:
    """Requests hand their connection on to the next request (`end_request`, PostgreSQL);
    one cancelled at any point of its write is not handed on half-open: the next request's
    2xx still means committed."""
    two = Database(create_engine(str(database.engine.url), pool_size=2, max_overflow=0))
    try:
        conn = await two.request_connection()
        await GROUP_BY_NAME.first(conn, {"name": "none"})

        async def cancelled_write() -> None:
            async with two.transaction_on(conn):
                await INSERT_GROUP.insert(conn, group("cancelled"))
                await GROUP_BY_NAME.first(conn, {"name": "cancelled"})

        await _cancelled(cancelled_write, steps)
        await two.end_request(conn)
        again = await two.request_connection()
        async with two.transaction_on(again):
            await INSERT_GROUP.insert(again, group("acknowledged"))
        await two.end_request(again)
    finally:
        await two.dispose()
    async with database.read() as other:
        assert await GROUP_BY_NAME.first(other, {"name": "acknowledged"}) is not None


async def test_constraint_violations_are_database_errors(database: Database) -> None:
    async with database.read() as conn:
        async with database.transaction_on(conn):
            await INSERT_GROUP.insert(conn, group("twice"))
        with pytest.raises(DBAPIError) as raised:
            async with database.transaction_on(conn):
                await INSERT_GROUP.insert(conn, group("twice"))
        code = getattr(raised.value.orig, "sqlstate", None)
        assert code is None or code.startswith("23")


@pytest.mark.parametrize("copies", [1, 10])  # 3 rows: one multi-row VALUES; 30: a batch
async def test_insert_many_with_json(database: Database, copies: int) -> None:
    query = Query(insert(journal_entries), json=("old", "new"))
    values = [(3, 1), (None, "x"), ({"a": [1]}, True)] * copies
    rows = [
        {
            "id": new_id(),
            "record_type": "incident",
            "record_id": new_id(),
            "kind": "field_change",
            "public": False,
            "author_id": None,
            "author_role": None,
            "body": None,
            "field": "impact",
            "old": old,
            "new": new,
            "created_at": NOW,
        }
        for old, new in values
    ]
    async with database.read() as conn:
        async with database.transaction_on(conn):
            await query.insert_many(conn, rows)
        stored = (
            await conn.execute(
                select(journal_entries.c.old, journal_entries.c.new).order_by(journal_entries.c.id)
            )
        ).all()
    assert sorted(map(tuple, stored), key=repr) == sorted(values, key=repr)


RENAME_GROUP = Query(
    update(groups)
    .where(groups.c.id == bindparam("_id"), groups.c.version == bindparam("_version"))
    .values(name=bindparam("_name"), version=groups.c.version + 1)
)


async def test_a_batch_writes_everything_in_one_go(database: Database) -> None:
    entries = Query(insert(journal_entries), json=("old", "new"))
    first, second = group("first"), group("second")
    async with database.read() as conn:
        async with database.transaction_on(conn):
            await INSERT_GROUP.insert(conn, first)
        batch = Batch()
        batch.insert(INSERT_GROUP, [second])
        batch.execute(
            RENAME_GROUP, {"_id": first["id"], "_version": 1, "_name": "renamed"}, expect_one=True
        )
        batch.insert(
            entries,
            [
                {
                    "id": new_id(),
                    "record_type": "group",
                    "record_id": first["id"],
                    "kind": "comment",
                    "public": True,
                    "author_id": None,
                    "author_role": None,
                    "body": "x",
                    "field": None,
                    "old": None,
                    "new": {"k": 1},
                    "created_at": NOW,
                }
            ],
        )
        async with database.transaction_on(conn):
            await batch.run(conn)
        names = {r.name for r in await conn.execute(select(groups))}
        assert names == {"renamed", "second"}
        assert (await conn.execute(select(journal_entries.c.new))).scalar_one() == {"k": 1}


async def test_a_batch_shares_and_answers_what_its_statement_computes(
    database: Database,
) -> None:
    """On PostgreSQL: an expression that two parts use is computed once (a CTE: the number
    drawn for a new incident, app/itil/numbers.py), its parameters are the batch's, a wrapped
    column puts SQL around each row's value, and the statement answers what it is asked to,
    checked parts first. Elsewhere there is no one statement to answer."""
    shared = select(func.upper(bindparam("shared_name")).label("name")).cte("shared")
    name = select(shared.c.name).scalar_subquery()
    named = Query(insert(groups), row_values={"name": name})
    described = Query(
        insert(groups), wrapped={"description": lambda value: cast(value, String) + name}
    )
    existing = group("existing")
    async with database.read() as conn:
        async with database.transaction_on(conn):
            await INSERT_GROUP.insert(conn, existing)
        batch = Batch({"shared_name": "shared"})
        batch.insert(named, [{k: v for k, v in group("x").items() if k != "name"}])
        batch.insert(described, [{**group("described"), "description": "said by "}])
        batch.execute(
            RENAME_GROUP,
            {"_id": existing["id"], "_version": 1, "_name": "renamed"},
            expect_one=True,
        )
        batch.answer(name=name)
        if database.dialect != "postgresql":
            with pytest.raises(RuntimeError):
                await batch.run(conn)
            return
        async with database.transaction_on(conn):
            answer = await batch.run(conn)
        assert answer.name == "SHARED"
        rows = {r.name: r.description for r in await conn.execute(select(groups))}
        assert rows == {"SHARED": None, "described": "said by SHARED", "renamed": None}


async def test_a_batch_that_loses_a_race_writes_nothing(database: Database) -> None:
    """An expected row that is not there (its version moved on) fails the whole batch."""
    existing = group("existing")
    async with database.read() as conn:
        async with database.transaction_on(conn):
            await INSERT_GROUP.insert(conn, existing)
        batch = Batch()
        batch.insert(INSERT_GROUP, [group("not kept")])
        batch.execute(
            RENAME_GROUP, {"_id": existing["id"], "_version": 7, "_name": "x"}, expect_one=True
        )
        with pytest.raises(Conflict):
            async with database.transaction_on(conn):
                await batch.run(conn)
        assert {r.name for r in await conn.execute(select(groups))} == {"existing"}


async def test_outside_a_transaction_a_batch_must_be_one_unchecked_statement(
    database: Database,
) -> None:
    """A one-statement write (no transaction) is refused a batch whose outcome is only known
    after it committed (a row check) or that would take several statements; a plain batch of
    several parts is one statement, atomic by itself."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite writes always run in a transaction")
    existing = group("existing")
    async with database.read() as conn:
        checked = Batch()
        checked.insert(INSERT_GROUP, [group("not kept")])
        checked.execute(
            RENAME_GROUP, {"_id": existing["id"], "_version": 1, "_name": "x"}, expect_one=True
        )
        with pytest.raises(RuntimeError):
            await checked.run(conn)
        many = Batch()
        many.insert(INSERT_GROUP, [group(f"many {n}") for n in range(30)])
        with pytest.raises(RuntimeError):
            await many.run(conn)
        plain = Batch()
        plain.insert(INSERT_GROUP, [group("one")])
        plain.insert(INSERT_GROUP, [group("two")])
        await plain.run(conn)
        assert {r.name for r in await conn.execute(select(groups))} == {"one", "two"}
