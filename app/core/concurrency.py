"""Optimistic concurrency: `version` on every record, `ETag: "<version>"`, `If-Match` -> 412."""

from __future__ import annotations

from app.core.errors import PreconditionFailed


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> list[str] | None:
    """The entity tags of an If-Match header; None when absent or `*` (anything matches)."""
    if header is None:
        return None
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    if not tags or "*" in tags:
        return None
    return [tag.removeprefix("W/") for tag in tags]


def check_if_match(header: str | None, version: int) -> None:
    """Refuse a write prepared against another version of the record."""
    tags = parse_if_match(header)
    if tags is not None and etag(version) not in tags:
        raise PreconditionFailed(
            f"The record changed: its current version is {version} (ETag {etag(version)}), "
            f"the request was made against If-Match {header}. Fetch it again and retry."
        )
