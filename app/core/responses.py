"""JSON answers built once, straight to bytes: pydantic models by pydantic-core, plain data (the
hot paths build dicts from rows, skipping model validation) by orjson in the same format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from app.core.concurrency import etag

JSON = "application/json"


def _default(value: Any) -> Any:
    # Ids first: the driver's UUID subclass, which orjson does not take, is by far the most
    # frequent (several per incident of a page); pydantic's isinstance check is Python code.
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)  # decimals


def dump_json(value: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    """JSON as the API writes it: UTC instants with `Z`, like pydantic's output."""
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z)


@dataclass(frozen=True, slots=True)
class Reply:
    """What a write produced: the body, its status, and the record version for the ETag."""

    body: BaseModel | dict[str, Any]
    status: int = 200
    version: int | None = None
    location: str | None = None
    # Fields shown once (API keys): never kept for an Idempotency-Key replay, which answers null.
    secret_fields: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.version is not None:
            headers["ETag"] = etag(self.version)
        if self.location is not None:
            headers["Location"] = self.location
        return headers

    def replay_body(self, body: bytes) -> bytes:
        """What the idempotency store may keep of `body`: everything but the secrets."""
        if not self.secret_fields:
            return body
        data = orjson.loads(body)
        for name in self.secret_fields:
            if name in data:
                data[name] = None
        return orjson.dumps(data)


def json_response(
    body: BaseModel | dict[str, Any], *, status: int = 200, version: int | None = None
) -> Response:
    headers = {"ETag": etag(version)} if version is not None else None
    return Response(dump_json(body), status, headers=headers, media_type=JSON)
