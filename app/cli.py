"""The `sdms` command (also `python -m app`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from app.core.auth import Role
from app.core.config import get_settings

cli = typer.Typer(help="SDMS - Service Desk Management System", no_args_is_help=True)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the API (and, unless SDMS_EMBEDDED_WORKER=false, the background jobs)."""
    from app.core.serving import serve as serve_app

    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker process writes its metrics here; /metrics adds them up.
        metrics_dir = Path(tempfile.gettempdir()) / f"sdms-metrics-{os.getpid()}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    settings = get_settings()
    serve_app(
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # SDMS logs its own line per request (SDMS_ACCESS_LOG), with its id
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


@cli.command()
def migrate() -> None:
    """Bring the database schema to the latest migration."""
    from app.core.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    typer.echo(f"database at head: {settings.database_url.split('@')[-1]}")


@cli.command()
def worker() -> None:
    """Run the background jobs (SLA events, auto-close, ETA, housekeeping) until stopped."""
    from app.core.clock import SystemClock
    from app.core.db import Database, create_engine
    from app.core.jobs import run_forever
    from app.core.observability import configure_logging
    from app.main import background_jobs

    settings = get_settings()
    configure_logging(settings.log_level)

    async def main() -> None:
        db = Database(create_engine(settings.database_url, pool_size=2, max_overflow=2))
        try:
            await run_forever(background_jobs(), db, settings, SystemClock())
        finally:
            await db.dispose()

    asyncio.run(main())


@cli.command("create-api-key")
def create_api_key(
    role: Annotated[Role, typer.Option(help="Role of the new account.")],
    name: Annotated[str, typer.Option(help="Name of the new account.")],
    organization_id: Annotated[
        str | None, typer.Option(help="Organization (required for customers).")
    ] = None,
) -> None:
    """Create an account with a new API key and print the key (shown once)."""
    import uuid

    from sqlalchemy.exc import SQLAlchemyError

    from app.core.auth import SYSTEM
    from app.core.clock import SystemClock
    from app.core.context import Context
    from app.core.db import Database, create_engine
    from app.core.errors import AppError
    from app.identity.service import create_service_account

    settings = get_settings()
    try:
        organization = uuid.UUID(organization_id) if organization_id else None
    except ValueError as exc:
        typer.echo(f"error: --organization-id {organization_id!r} is not a UUID", err=True)
        raise typer.Exit(2) from exc

    async def main() -> str:
        db = Database(create_engine(settings.database_url, pool_size=1, max_overflow=0))
        try:
            async with db.transaction() as conn:
                ctx = Context(SYSTEM, SystemClock().now(), settings)
                key = await create_service_account(
                    conn,
                    ctx=ctx,
                    name=name,
                    role=role,
                    organization_id=organization,
                )
            return key.api_key
        finally:
            await db.dispose()

    try:
        typer.echo(asyncio.run(main()))
    except AppError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    except (SQLAlchemyError, OSError) as exc:
        typer.echo(
            "error: the database is unreachable or not migrated (run `sdms migrate`): "
            f"{type(exc).__name__}",
            err=True,
        )
        raise typer.Exit(2) from exc


def openapi_document() -> str:
    from app.main import create_app

    schema = create_app().openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@cli.command("export-openapi")
def export_openapi(
    output: Annotated[
        Path | None, typer.Option(help="File to write; default: print to stdout.")
    ] = None,
) -> None:
    """Write the OpenAPI document of the app (openapi/openapi.json is this output)."""
    document = openapi_document()
    if output is None:
        sys.stdout.write(document)
    else:
        output.write_text(document, encoding="utf-8")
        typer.echo(f"wrote {output}")


def main() -> None:
    cli()
