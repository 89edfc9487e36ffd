"""Record ids are UUIDv7: time-ordered, so indexes stay compact and ids sort by creation."""

from __future__ import annotations

import uuid

import uuid_utils.compat as _uuid


def new_id() -> uuid.UUID:
    return _uuid.uuid7()
