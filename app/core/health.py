"""Operations endpoints at the root: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, Response

from app.core.db import Database
from app.core.migrate import current_revision, head_revision
from app.core.observability import gauge_text, metrics_text

router = APIRouter(tags=["operations"])
log = logging.getLogger("sdms.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(request: Request) -> Response:
    """The database answers and its schema is at the latest migration."""
    db: Database = request.app.state.db
    head = head_revision()
    try:
        async with db.read() as conn:
            await conn.execute(text("SELECT 1"))
            current = await current_revision(conn)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("not ready: %s", exc)
        return JSONResponse(
            {"status": "unavailable", "detail": "database unreachable or not migrated"}, 503
        )
    if current != head:
        return JSONResponse(
            {"status": "unavailable", "detail": f"migrations at {current}, expected {head}"}, 503
        )
    return JSONResponse({"status": "ok", "database": db.dialect, "migration": current})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latencies by route, and the domain gauges that
    the app registered (`app.state.domain_metrics`), read from the database at scrape time;
    without them, and `sdms_database_up 0`, when the database does not answer."""
    db: Database = request.app.state.db
    body, content_type = metrics_text()
    domain = b""
    try:
        for collect in request.app.state.domain_metrics:
            domain += await collect(db)
        up = 1
    except (SQLAlchemyError, OSError) as exc:  # the requests' own metrics still count
        log.warning("metrics without the database's gauges: %s", exc)
        domain, up = b"", 0
    body += domain + gauge_text(
        "sdms_database_up", "Whether the database answered this scrape's queries", [({}, up)]
    )
    return Response(body, media_type=content_type)
