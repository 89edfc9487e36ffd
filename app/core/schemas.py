"""Base shapes for request and response bodies, and the constrained types they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)


def check_text(value: str) -> str:
    """Reject what no database column can hold: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid UTF-8 text") from exc
    return value


# The instants SDMS takes from clients: from 1970 up to (not including) 3000, UTC. Nothing a
# service desk records lies outside; near the ends of Python's date range (years 1 and 9999)
# an offset cannot be converted to UTC, PostgreSQL's driver writes datetime.min and max as
# -infinity and infinity, and calendar arithmetic would run off the end; and an SLA clock's
# working time is counted day by day around each change of its zone's offset: the shorter the
# span of years, the less one request can cost.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive
INSTANT_RANGE = "must lie from 1970-01-01T00:00:00Z up to (not including) 3000-01-01T00:00:00Z"


def utc_instant(value: datetime) -> datetime:
    """An aware instant from a client, in UTC; ValueError outside EARLIEST .. LATEST."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        raise ValueError(INSTANT_RANGE) from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError(INSTANT_RANGE)
    return utc


def bound_instant(value: datetime) -> datetime:
    """An aware instant bounding a query, in UTC; outside EARLIEST .. LATEST it is the nearer
    end, which selects the same stored instants (all lie within): `created_before=9999-12-31Z`
    means no upper bound."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        return EARLIEST if value.year < 5000 else LATEST
    return min(max(utc, EARLIEST), LATEST)


# Instants: input must carry an offset (RFC 3339), within EARLIEST .. LATEST; stored in UTC,
# answered with a `Z` (pydantic writes UTC as `Z`, and every instant read from the database is
# UTC).
Instant = Annotated[AwareDatetime, AfterValidator(utc_instant)]
# A query's bounds (`created_after`, `from`, ...): any aware instant, clamped to the range.
InstantBound = Annotated[AwareDatetime, AfterValidator(bound_instant)]

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=r"^\S+$")
]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]


def _accepts_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_accepts_bool(arg) for arg in get_args(annotation))


class InputModel(BaseModel):
    """Every request body: unknown fields are a 422, every string is storable text, and
    `true`/`false` is no number (pydantic's lax mode would read `true` as 1)."""

    model_config = ConfigDict(extra="forbid", str_max_length=20_000)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and not _accepts_bool(field.annotation):
                raise ValueError("must not be a boolean")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_text(value)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    check_text(item)
        return value


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Opaque cursor of the next page; null on the last page."
    )
