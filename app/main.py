"""The application factory: `create_app()` wires settings, database, clock, routers, workers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.core import errors, idempotency, notify, queryparams
from app.core.clock import Clock, SystemClock
from app.core.config import Settings, get_settings
from app.core.db import Database, create_engine
from app.core.health import router as health_router
from app.core.jobs import Job, run_forever
from app.core.observability import RequestContextMiddleware, configure_logging
from app.identity.principals import AUTH_CHANNEL, PrincipalCache
from app.identity.router import router as identity_router
from app.incidents import jobs as incident_jobs
from app.incidents.router import router as incidents_router
from app.metrics import incident_gauges, sla_gauges
from app.slm import jobs as slm_jobs
from app.slm.router import router as slm_router

MAX_BODY_BYTES = 1024 * 1024


def background_jobs() -> list[Job]:
    return [
        Job("incidents.auto_close", incident_jobs.auto_close),
        Job("incidents.eta_exceeded", incident_jobs.eta_exceeded),
        Job("slm.sla_events", slm_jobs.sla_events),
        Job("idempotency.purge", idempotency.purge_job),
    ]


def _operation_id(route: APIRoute) -> str:
    return route.name


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _document_api_keys(app: FastAPI) -> None:
    """Declare the API-key scheme in the OpenAPI document. Authentication itself is done by
    `current_call` (app/core/deps.py), not by a security dependency per route, which FastAPI
    would resolve on every request."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An SDMS API key: `Authorization: Bearer <key>`.",
                }
            }
            schema["security"] = [{"apiKey": []}]
            for path in OPEN_PATHS & schema["paths"].keys():
                for operation in schema["paths"][path].values():
                    operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    jobs: Sequence[Job] | None = None,
) -> FastAPI:
    """Build the app. Tests pass their own clock and database; `sdms serve` passes nothing."""
    settings = settings or get_settings()
    clock = clock or SystemClock()
    jobs = background_jobs() if jobs is None else jobs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database or Database(
            create_engine(
                settings.database_url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
            ),
            concurrency=settings.worker_concurrency,
        )
        app.state.db = db
        stop = asyncio.Event()
        worker = None
        if settings.embedded_worker and jobs:
            worker = asyncio.create_task(run_forever(jobs, db, settings, clock, stop))
        listener = None
        if db.dialect == "postgresql" and settings.auth_cache_seconds > 0:
            follow = notify.follow(settings.database_url, AUTH_CHANNEL, app.state.principals, stop)
            listener = asyncio.create_task(follow)
        # What start-up built (modules, tables, compiled statements, models) lives as long as
        # the process: kept out of the collector's full passes, which otherwise walk it all
        # again and again while requests allocate.
        gc.collect()
        gc.freeze()
        # A list page allocates hundreds of containers; with the default threshold (700) the
        # young generation is collected every request or two. Collecting it every 20,000
        # allocations (older generations every 20 collections) cut the server's instructions
        # per request by 3-5 % (list, create; perf stat, bench/README.md) for a few MB.
        gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            if listener is not None:
                listener.cancel()  # it may be waiting for a connection or a ping
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            if database is None:
                await db.dispose()

    app = FastAPI(
        title="SDMS - Service Desk Management System",
        version="1.0.0",
        description="ITIL service management: incidents, problems, changes, releases and "
        "service levels, over one REST API.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.principals = PrincipalCache(settings.auth_cache_seconds)
    app.state.domain_metrics = [incident_gauges, sla_gauges]
    if database is not None:
        app.state.db = database

    errors.install_handlers(app)
    # The body limit lives in our middleware so that a 413 is a problem with a request id.
    app.add_middleware(
        RequestContextMiddleware, access_log=settings.access_log, max_body_bytes=MAX_BODY_BYTES
    )

    # Most-used first: requests are matched against the routes in this order.
    for router in (incidents_router, slm_router, identity_router, health_router):
        queryparams.document(router)
        app.include_router(router)
    _document_api_keys(app)
    return app


def app_factory() -> FastAPI:
    """Entry point for uvicorn workers (`app.main:app_factory`, factory=True)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
