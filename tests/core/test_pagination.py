"""Pure checks of the keyset cursor and of If-Match parsing (no database, no HTTP)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Column, MetaData, Table, Uuid, select

from app.core.concurrency import check_if_match, etag, parse_if_match
from app.core.db import UTCDateTime
from app.core.errors import PreconditionFailed, Unprocessable
from app.core.pagination import Keyset, PageParams, PageQuery, integer_key, timestamp_key

records = Table(
    "records",
    MetaData(),
    Column("id", Uuid, primary_key=True),
    Column("created_at", UTCDateTime),
    Column("priority", BigInteger),  # 64 bits: the integers below (up to 2**53) fit
)
KEYS = {
    "created_at": timestamp_key("created_at", records.c.created_at),
    "priority": integer_key("priority", records.c.priority),
}


def keyset(sort: str | None) -> Keyset:
    return Keyset.choose(sort, KEYS, records.c.id, "-created_at")


def row(created_at: datetime, priority: int = 3, id_: uuid.UUID | None = None) -> Any:
    return SimpleNamespace(id=id_ or uuid.uuid4(), created_at=created_at, priority=priority)


def cursor_after(sort: str | None, last: Any) -> str:
    """The cursor a page ending with `last` hands out (the extra row says there is more)."""
    rows = [last, row(datetime(2000, 1, 1, tzinfo=UTC))]
    page, cursor = keyset(sort).page(rows, PageParams(limit=1, cursor=None, sort=sort))
    assert list(page) == [last]
    assert cursor is not None
    return cursor


def bound_values(sort: str | None, cursor: str) -> list[Any]:
    stmt = keyset(sort).apply(select(records), PageParams(limit=10, cursor=cursor, sort=sort))
    values = list(stmt.compile().params.values())
    assert values[-1] == 11  # limit + 1: one row more says whether another page exists
    return values[:-1]


instants = st.datetimes(  # every instant SDMS stores (app/core/schemas.py EARLIEST .. LATEST)
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2999, 12, 31, 23, 59, 59, 999_999),
    timezones=st.just(UTC),
)


@given(created_at=instants, record_id=st.uuids())
def test_a_timestamp_cursor_carries_the_last_row_exactly(
    created_at: datetime, record_id: uuid.UUID
) -> None:
    for sort in (None, "created_at", "-created_at"):
        cursor = cursor_after(sort, row(created_at, id_=record_id))
        assert bound_values(sort, cursor) == [created_at, record_id]


@given(priority=st.integers(min_value=-(2**53), max_value=2**53), record_id=st.uuids())
def test_an_integer_cursor_carries_the_last_row_exactly(
    priority: int, record_id: uuid.UUID
) -> None:
    for sort in ("priority", "-priority"):
        cursor = cursor_after(sort, row(datetime(2026, 1, 1, tzinfo=UTC), priority, record_id))
        assert bound_values(sort, cursor) == [priority, record_id]


def test_a_full_last_page_has_no_cursor() -> None:
    rows = [row(datetime(2026, 1, 1, tzinfo=UTC)) for _ in range(3)]
    page, cursor = keyset(None).page(rows, PageParams(limit=3, cursor=None, sort=None))
    assert (len(page), cursor) == (3, None)


def test_the_query_orders_by_the_key_then_the_id_in_one_direction() -> None:
    ascending = str(keyset("priority").apply(select(records), PageParams(5, None, "priority")))
    assert "ORDER BY records.priority ASC, records.id ASC" in ascending
    assert "LIMIT" in ascending
    descending = str(keyset(None).apply(select(records), PageParams(5, None, None)))
    assert "ORDER BY records.created_at DESC, records.id DESC" in descending


def _payload(cursor: str) -> bytes:
    body = cursor.split(".", 1)[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _body(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def test_tampered_cursors_are_refused() -> None:
    last = row(datetime(2026, 3, 2, 9, tzinfo=UTC))
    cursor = cursor_after(None, last)
    body, check = cursor.split(".", 1)
    # Moving the position (another timestamp) without the server's check value.
    moved = _payload(cursor).replace(b"2026", b"2025")
    assert moved != _payload(cursor)
    for bad in (
        f"{_body(moved)}.{check}",
        f"{body}.{check[:-1]}",
        f"{body}.",
        body,
        f".{check}",
        "%%%.abc",
        "😀.😀",
        f"{body}.{check}.{check}",
    ):
        with pytest.raises(Unprocessable) as caught:
            bound_values(None, bad)
        assert caught.value.errors is not None
        assert caught.value.errors[0].loc == ["query", "cursor"]


def test_a_cursor_is_only_good_for_its_own_sort_order() -> None:
    created = cursor_after("created_at", row(datetime(2026, 3, 2, tzinfo=UTC), 2))
    for other in ("-created_at", None, "priority", "-priority"):
        with pytest.raises(Unprocessable):
            bound_values(other, created)
    by_priority = cursor_after("priority", row(datetime(2026, 3, 2, tzinfo=UTC), 2))
    with pytest.raises(Unprocessable):
        bound_values("-priority", by_priority)


def test_unknown_sort_keys_are_refused() -> None:
    for sort in ("title", "-title", "--created_at", "created_at;", ""):
        with pytest.raises(Unprocessable):
            Keyset.choose(sort or "x", KEYS, records.c.id, "-created_at")


def test_an_empty_cursor_parameter_is_the_first_page() -> None:
    assert PageQuery(limit=10, cursor="").page_params().cursor is None
    assert PageQuery(limit=10, cursor="abc").page_params().cursor == "abc"


# --- If-Match -------------------------------------------------------------------------------


def test_if_match_parsing() -> None:
    assert etag(3) == '"3"'
    assert parse_if_match(None) is None
    assert parse_if_match("*") is None
    assert parse_if_match('"3"') == ['"3"']
    assert parse_if_match(' "1" , "2",') == ['"1"', '"2"']
    assert parse_if_match('W/"4"') == ['"4"']


@pytest.mark.parametrize(
    ("header", "version"),
    [(None, 1), ("*", 9), ('"2"', 2), ('"1", "2"', 2), ('"7", *', 1)],
)
def test_if_match_that_matches(header: str | None, version: int) -> None:
    check_if_match(header, version)


@pytest.mark.parametrize(
    ("header", "version"), [('"1"', 2), ('"1", "3"', 2), ('"22"', 2), ('"2"', 22)]
)
def test_if_match_that_is_stale(header: str, version: int) -> None:
    with pytest.raises(PreconditionFailed) as caught:
        check_if_match(header, version)
    assert etag(version) in caught.value.detail
