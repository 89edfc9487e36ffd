"""JSON answers built once: a model is serialised by pydantic-core straight to bytes."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from app.core.concurrency import etag

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a write produced: the body, its status, and the record version for the ETag."""

    body: BaseModel
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


def json_response(body: BaseModel, *, status: int = 200, version: int | None = None) -> Response:
    headers = {"ETag": etag(version)} if version is not None else None
    return Response(body.model_dump_json().encode(), status, headers=headers, media_type=JSON)
