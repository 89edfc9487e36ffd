"""Keyset pagination: an opaque cursor holding the last row's sort key and id.

Paging by (sort key, id) instead of offsets keeps pages correct while rows are inserted: a new
row sorts before or after the cursor but never shifts rows across a page boundary.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from operator import itemgetter
from typing import Annotated, Any

import orjson
from fastapi import Depends
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, ColumnElement, Select, SmallInteger, bindparam, tuple_
from starlette.requests import Request

from app.core.db import Bound
from app.core.errors import Unprocessable
from app.core.queryparams import QueryModel, query_names
from app.core.schemas import InstantBound, utc_instant

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


@dataclass(frozen=True, slots=True)
class SortKey:
    """A sortable column and how its values travel inside a cursor."""

    name: str
    column: ColumnElement[Any]
    parse: Callable[[Any], Any]


def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("naive timestamp")
    return utc_instant(parsed)


def _int_parser(bits: int) -> Callable[[Any], int]:
    """Integers that a column of `bits` can hold (beyond them PostgreSQL refuses to bind, and
    SQLite cannot bind past 64 bits)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1)

    def parse(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError("not an integer")
        if not low <= value < high:
            raise ValueError("out of range")
        return value

    return parse


def timestamp_key(name: str, column: ColumnElement[Any]) -> SortKey:
    return SortKey(name, column, _parse_datetime)


def integer_key(name: str, column: ColumnElement[Any]) -> SortKey:
    kind = column.type
    bits = 16 if isinstance(kind, SmallInteger) else 64 if isinstance(kind, BigInteger) else 32
    return SortKey(name, column, _int_parser(bits))


def _parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError("not an id")
    return uuid.UUID(value)


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def uuid_key(name: str, column: ColumnElement[Any]) -> SortKey:
    return SortKey(name, column, _parse_uuid)


def string_key(name: str, column: ColumnElement[Any]) -> SortKey:
    return SortKey(name, column, _parse_str)


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    cursor: str | None
    sort: str | None
    # `created_after` (inclusive) and `created_before` (exclusive): record lists
    # (`RecordPageDep`); the incidents' own filters carry theirs
    created_after: datetime | None = None
    created_before: datetime | None = None
    # the request's filters (its known query parameters but the paging ones), as a digest: a
    # cursor continues the list it came from only (`_PageDependency`)
    filters: str = ""


class PageQuery(BaseModel):
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Page size, 1-200.")] = (
        DEFAULT_LIMIT
    )
    cursor: Annotated[
        str | None, Field(max_length=512, description="`next_cursor` of the previous page.")
    ] = None
    sort: Annotated[
        str | None, Field(max_length=32, description="Sort key, `-` prefix for descending.")
    ] = None

    def page_params(self) -> PageParams:
        # `cursor=` with nothing is the first page: what a client sends when it passes on a
        # null `next_cursor` (httpx, for one, writes a None parameter that way).
        return PageParams(limit=self.limit, cursor=self.cursor or None, sort=self.sort)


_PAGING = frozenset({"limit", "cursor", "sort"})


def _filters_digest(request: Request) -> str:
    """The request's filters: the query parameters its route knows (all of them if it knows
    none: a route FastAPI did not record), but the paging ones, by name. The values of a name
    keep their order: for a single-valued filter the last one counts."""
    known = query_names(request.scope.get("route"))
    items = sorted(
        (
            (name, value)
            for name, value in request.query_params.multi_items()
            if name not in _PAGING and (name in known or not known)
        ),
        key=itemgetter(0),
    )
    return hashlib.blake2b(orjson.dumps(items), digest_size=6).hexdigest() if items else ""


class _PageDependency(QueryModel[Any, PageParams]):
    """The page's parameters, with the digest of the request's filters that its cursors carry."""

    async def __call__(self, request: Request) -> PageParams:
        params = await super().__call__(request)
        return replace(params, filters=_filters_digest(request))


page_params = _PageDependency(PageQuery, PageQuery.page_params)
PageDep = Annotated[PageParams, Depends(page_params)]


class RecordPageQuery(PageQuery):
    """A page of a list of records (`RecordStore.page`), with the filters every record has."""

    created_after: Annotated[InstantBound | None, Field(description="inclusive")] = None
    created_before: Annotated[InstantBound | None, Field(description="exclusive")] = None

    def page_params(self) -> PageParams:
        page = super().page_params()
        return replace(page, created_after=self.created_after, created_before=self.created_before)


record_page_params = _PageDependency(RecordPageQuery, RecordPageQuery.page_params)
RecordPageDep = Annotated[PageParams, Depends(record_page_params)]


@dataclass(frozen=True, slots=True)
class Keyset:
    """The order of one list request: the sort key, then tie-breakers ending with a unique id,
    all in one direction. The cursor holds the last row's values of all of them."""

    token: str
    columns: tuple[SortKey, ...]
    descending: bool

    @classmethod
    def choose(
        cls,
        sort: str | None,
        keys: Mapping[str, SortKey],
        id_column: ColumnElement[Any],
        default: str,
        *,
        within: object = None,
    ) -> Keyset:
        """`within`: the parent of a nested list (an incident's journal): its cursors page
        that parent's list only."""
        token = sort or default
        name = token.removeprefix("-")
        if name not in keys:
            allowed = ", ".join(sorted({*keys, *(f"-{k}" for k in keys)}))
            raise Unprocessable.field(("query", "sort"), f"sort must be one of: {allowed}")
        # The cursor names its list (the table, and the parent of a nested list) as well as its
        # order: another list's cursor of the same order is refused, not taken as a position
        # in this one.
        table = getattr(getattr(id_column, "table", None), "name", "")
        scoped = f"{table}:{token}" if within is None else f"{table}/{within}:{token}"
        return cls(scoped, (keys[name], uuid_key("id", id_column)), token.startswith("-"))

    def apply(self, stmt: Select[Any], params: PageParams) -> Select[Any]:
        columns = [key.column for key in self.columns]
        if params.cursor is not None:
            position = tuple_(*columns)
            bound = tuple_(*self._decode(params.cursor, params.filters))
            stmt = stmt.where(position < bound if self.descending else position > bound)
        order = [c.desc() if self.descending else c.asc() for c in columns]
        return stmt.order_by(*order).limit(params.limit + 1)

    def bind(self, params: PageParams, bound: Bound) -> None:
        """`apply` with named parameters: add the cursor condition, the limit and their shape
        to `bound`, for statements compiled once per shape (app/core/sql.py); `ordered` then
        writes the statement."""
        if params.cursor is not None:
            names = [f"k_{key.name}" for key in self.columns]
            bound.add(
                self._after,
                "cursor",
                **dict(zip(names, self._decode(params.cursor, params.filters), strict=True)),
            )
        bound.shape.append(self.token)
        bound.params["k_limit"] = params.limit + 1

    def _after(self) -> ColumnElement[bool]:
        """Past the cursor's row, in the order of the page."""
        columns = [key.column for key in self.columns]
        position = tuple_(*columns)
        after = tuple_(*(bindparam(f"k_{k.name}", type_=k.column.type) for k in self.columns))
        condition: ColumnElement[bool] = position < after if self.descending else position > after
        return condition

    def ordered(self, stmt: Select[Any], bound: Bound) -> Select[Any]:
        columns = [key.column for key in self.columns]
        order = [c.desc() if self.descending else c.asc() for c in columns]
        return stmt.where(*bound.conditions).order_by(*order).limit(bindparam("k_limit"))

    def page(self, rows: Sequence[Any], params: PageParams) -> tuple[Sequence[Any], str | None]:
        """Cut the limit+1 rows to a page; the extra row only says that another page exists.
        Rows carry the key columns as attributes of the same names."""
        if len(rows) <= params.limit:
            return rows, None
        rows = rows[: params.limit]
        values = [getattr(rows[-1], key.name) for key in self.columns]
        return rows, self._encode(values, params.filters)

    def _encode(self, values: list[Any], filters: str) -> str:
        # default=str: asyncpg hands back its own UUID subclass, which orjson does not know.
        payload = orjson.dumps([self.token, filters, *values], default=str)
        body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        return f"{body}.{_check(payload)}"

    def _decode(self, cursor: str, filters: str) -> list[Any]:
        try:
            body, check = cursor.split(".", 1)
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if check != _check(payload):
                raise ValueError("checksum")
            token, its_filters, *values = orjson.loads(payload)
            if token != self.token or len(values) != len(self.columns):
                raise ValueError("cursor of another list or sort order")
            parsed = [key.parse(value) for key, value in zip(self.columns, values, strict=True)]
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise Unprocessable.field(
                ("query", "cursor"), "cursor is not a cursor of this list and sort order"
            ) from exc
        if its_filters != filters:
            raise Unprocessable.field(
                ("query", "cursor"),
                "the cursor continues a list with other filters: send the filters and sort "
                "of its first page with it",
            )
        return parsed


def _check(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=6, key=b"sdms-cursor").hexdigest()
