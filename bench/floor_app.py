"""The floor of our stack: FastAPI + asyncpg on SDMS's own `incidents` table, no auth, no rules.

What SDMS cannot beat on the same uvicorn settings: a pydantic body, one SQL statement, orjson
out. Run: `python -m bench.floor_app --port P --workers 2` with FLOOR_DSN=postgresql://...

It reads and answers the incident record's own columns (`RECORD`), the same work in every
run: not the columns SDMS adds for its own rules later (since migration 0006, the copy of
the SLA clocks that SDMS shows as `sla`), which `SELECT *` would make the floor pay for.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg  # type: ignore[import-untyped]
import orjson
import uuid_utils.compat as uuid7
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response

RECORD = """id, number, region, title, description, organization_id, service_id, category,
 channel, contact_email, impact, urgency, priority, state, hold_reason, assignee_id, group_id,
 major, request_type, estimated_resolution_at, resolution_code, resolution_notes,
 escalation_level, reopen_count, problem_id, caused_by_change_id, opened_at, acknowledged_at,
 responded_at, resolved_at, closed_at, created_by_id, eta_alert_at, eta_alerted_for, created_at,
 updated_at, version"""
CREATE = f"""INSERT INTO incidents (id, number, region, title, description, organization_id,
 channel, impact, urgency, priority, state, major, request_type, escalation_level, reopen_count,
 opened_at, created_at, updated_at, version) VALUES ($1, 'INC-MSK-' || lpad(nextval(
 'inc_number_seq')::text, 7, '0'), 'msk', $2, $3, $4, $5, $6, $7, $8, 'new', false, 'incident',
 0, 0, now(), now(), now(), 1) RETURNING {RECORD}"""
PAGE = f"""SELECT {RECORD} FROM incidents WHERE organization_id = $1 AND state = $2
 ORDER BY created_at DESC, id DESC LIMIT $3"""
PAGE_AFTER = f"""SELECT {RECORD} FROM incidents WHERE organization_id = $1 AND state = $2
 AND (created_at, id) < ($4::timestamptz, $5::uuid) ORDER BY created_at DESC, id DESC LIMIT $3"""
MOVE = f"""UPDATE incidents SET state = 'in_progress', acknowledged_at = now(), updated_at = now(),
 version = version + 1 WHERE id = $1 AND state = 'new' RETURNING {RECORD}"""
COMMENT = """INSERT INTO journal_entries (id, record_type, record_id, kind, public, body,
 created_at) VALUES ($1, 'incident', $2, 'comment', false, $3, now()) RETURNING *"""


class IncidentIn(BaseModel):
    organization_id: uuid.UUID
    title: str
    description: str = ""
    channel: str = "api"
    impact: int = 3
    urgency: int = 3


class Move(BaseModel):
    to: str


class CommentIn(BaseModel):
    body: str


def reply(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, default=str), status, media_type="application/json")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["FLOOR_DSN"], min_size=4, max_size=30)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/incidents")
async def create(body: IncidentIn, request: Request) -> Response:
    row = await request.app.state.pool.fetchrow(
        CREATE, uuid7.uuid7(), body.title, body.description, body.organization_id,
        body.channel, body.impact, body.urgency, body.impact + body.urgency - 1,
    )  # fmt: skip
    return reply(dict(row), 201)


@app.get("/incidents/{incident_id}")
async def get(incident_id: uuid.UUID, request: Request) -> Response:
    row = await request.app.state.pool.fetchrow(
        f"SELECT {RECORD} FROM incidents WHERE id = $1", incident_id
    )
    return reply(dict(row)) if row else reply({"detail": "not found"}, 404)


@app.get("/incidents")
async def page(
    organization_id: uuid.UUID, state: str, request: Request, limit: int = 50, cursor: str = ""
) -> Response:
    pool = request.app.state.pool
    if cursor:
        stamp, _, ident = cursor.rpartition(",")
        after = (datetime.fromisoformat(stamp), uuid.UUID(ident))
        rows = await pool.fetch(PAGE_AFTER, organization_id, state, limit + 1, *after)
    else:
        rows = await pool.fetch(PAGE, organization_id, state, limit + 1)
    items = [dict(r) for r in rows[:limit]]
    more = len(rows) > limit
    next_cursor = f"{items[-1]['created_at'].isoformat()},{items[-1]['id']}" if more else None
    return reply({"items": items, "next_cursor": next_cursor})


@app.post("/incidents/{incident_id}/transitions")
async def move(incident_id: uuid.UUID, body: Move, request: Request) -> Response:
    row = await request.app.state.pool.fetchrow(MOVE, incident_id)
    return reply(dict(row)) if row else reply({"detail": "not new"}, 409)


@app.post("/incidents/{incident_id}/comments")
async def comment(incident_id: uuid.UUID, body: CommentIn, request: Request) -> Response:
    row = await request.app.state.pool.fetchrow(COMMENT, uuid7.uuid7(), incident_id, body.body)
    return reply(dict(row), 201)


if __name__ == "__main__":
    # Served exactly as `sdms serve` serves SDMS: the same uvicorn settings and the same worker
    # processes, each connection dealt to the one holding fewest (app/core/serving.py).
    from app.core.serving import serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    serve(
        app="bench.floor_app:app", host="127.0.0.1", port=args.port, workers=args.workers,
        access_log=False, log_level="info", proxy_headers=False,
    )  # fmt: skip
