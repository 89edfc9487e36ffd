"""Section 10 of the contract: health, readiness, metrics, and the `sdms` command line."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import Database, create_engine
from app.main import create_app
from tests.factories import Api, World, ok

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def app_on(url: str, database: Database | None = None) -> AsyncIterator[AsyncClient]:
    """The app on a database of its own (no bootstrap key, no workers)."""
    database = database or Database(create_engine(url))
    app = create_app(Settings(database_url=url, embedded_worker=False), database=database, jobs=[])
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as http:
            yield http
    finally:
        await database.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def migrated_copy(template: Path, path: Path) -> str:
    """A migrated SQLite database of the test's own at `path`: its URL."""
    shutil.copyfile(template, path)
    return sqlite_url(path)


async def sdms(*args: str, database_url: str) -> tuple[int, str, str]:
    """Run the installed `sdms` command against this database, as an operator would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDMS_")}
    env["SDMS_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever is installed
    command = shutil.which("sdms", path=str(Path(sys.executable).parent)) or "sdms"
    process = await asyncio.create_subprocess_exec(
        command,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# --- health and readiness -------------------------------------------------------------------


async def test_healthz_and_readyz_need_no_key(api: Api) -> None:
    assert ok(await api.get("/healthz"), 200)["status"] == "ok"
    ready = ok(await api.get("/readyz"), 200)
    assert ready["status"] == "ok"
    # The operations endpoints live at the root only.
    assert (await api.get("/api/v1/healthz")).status_code == 404


async def test_readyz_503_on_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    async with app_on(sqlite_url(tmp_path / "empty.db")) as http:
        response = await http.get("/readyz")
        assert response.status_code == 503, response.text
        assert response.json()["status"] != "ok"
        assert (await http.get("/healthz")).status_code == 200  # the process itself is fine


async def test_readyz_503_on_a_database_behind_the_latest_migration(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "old.db"
    url = migrated_copy(sqlite_template, path)
    async with app_on(url) as http:
        assert (await http.get("/readyz")).status_code == 200
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
        await engine.dispose()
        assert (await http.get("/readyz")).status_code == 503


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/sdms.db",
        "postgresql+asyncpg://sdms:secret-password@127.0.0.1:1/sdms",
    ],
    ids=["sqlite", "postgresql"],
)
async def test_readyz_503_when_the_database_is_unreachable(url: str) -> None:
    async with app_on(url) as http:
        response = await asyncio.wait_for(http.get("/readyz"), timeout=30)
    assert response.status_code == 503
    assert "secret-password" not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/sdms.db",
        "postgresql+asyncpg://sdms:secret-password@127.0.0.1:1/sdms",
    ],
    ids=["sqlite", "postgresql"],
)
async def test_an_api_request_is_a_503_to_retry_when_the_database_is_unreachable(
    url: str,
) -> None:
    # One request at a time on a pool of one: a turn or connection that a failed connect
    # kept would make the next request "too busy" instead.
    one = Database(create_engine(url, pool_size=1, max_overflow=0, pool_timeout=1), concurrency=1)
    async with app_on(url, database=one) as http:
        for _ in range(3):
            response = await asyncio.wait_for(
                http.get("/api/v1/incidents", headers={"Authorization": "Bearer any-key"}), 30
            )
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "5"
            problem = response.json()
            assert problem["type"] == "urn:sdms:problem:unavailable"
            assert "database cannot be reached" in problem["detail"]
            assert "secret-password" not in response.text


# --- metrics --------------------------------------------------------------------------------


def samples(body: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def route_value(body: str, name: str, route: str, **labels: str) -> float:
    """The sample of `name` for the route template `route` (0 if none)."""
    total = 0.0
    for key, value in samples(body, name).items():
        got = dict(key)
        if got.get("route") == route and all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total


async def test_metrics_count_and_time_requests_by_route(api: Api, world: World) -> None:
    org = world.org_a["id"]
    before = (await api.get("/metrics")).text
    for _ in range(2):
        ok(await world.agent.get(f"/organizations/{org}"), 200)
    await world.agent.get(f"/organizations/{world.customer_a_user['id']}")  # a 404
    await api.get(f"/api/v1/no-such-thing/{org}")

    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = "/api/v1/organizations/{organization_id}"
    counter = "sdms_http_requests_total"
    for status, expected in (("200", 2), ("404", 1)):
        delta = route_value(after, counter, route, method="GET", status=status) - route_value(
            before, counter, route, method="GET", status=status
        )
        assert delta == expected, status
    histogram = "sdms_http_request_duration_seconds_count"
    assert (
        route_value(after, histogram, route, method="GET")
        - route_value(before, histogram, route, method="GET")
        == 3
    )
    buckets = samples(after, "sdms_http_request_duration_seconds_bucket")
    assert any(dict(k).get("route") == route for k in buckets)
    # Routes are templates: an id or an unknown path never becomes a label of its own.
    assert org not in after
    assert "no-such-thing" not in after
    assert route_value(after, counter, "unmatched", status="404") >= 1
    # The metrics endpoint's own text is well formed for a scraper (the parser is strict).
    assert "# TYPE sdms_http_requests_total counter" in after
    assert "# TYPE sdms_http_request_duration_seconds histogram" in after
    assert samples(after, "sdms_database_up") == {(): 1.0}
    assert samples(after, "sdms_change_log_last_seq")  # a domain gauge, read from the database


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/sdms.db",
        "postgresql+asyncpg://sdms:secret-password@127.0.0.1:1/sdms",
    ],
    ids=["sqlite", "postgresql"],
)
async def test_metrics_answer_without_the_database(url: str) -> None:
    """A scrape while the database is down still gets the requests' metrics (the 503s
    included), with `sdms_database_up 0` and no domain gauges."""
    async with app_on(url) as http:
        failed = await http.get("/api/v1/incidents", headers={"Authorization": "Bearer k"})
        assert failed.status_code == 503
        response = await asyncio.wait_for(http.get("/metrics"), 30)
    assert response.status_code == 200, response.text
    body = response.text
    assert samples(body, "sdms_database_up") == {(): 0.0}
    assert not samples(body, "sdms_change_log_last_seq")
    assert route_value(body, "sdms_http_requests_total", "/api/v1/incidents", status="503") >= 1
    assert "secret-password" not in body


# --- the command line -----------------------------------------------------------------------


@pytest.mark.slow
async def test_python_dash_m_app_is_the_cli() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDMS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "--help",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    for command in ("serve", "migrate", "worker", "create-api-key"):
        assert command in out.decode()


@pytest.mark.slow
async def test_create_api_key_prints_a_key_that_authenticates(
    tmp_path: Path, sqlite_template: Path
) -> None:
    url = migrated_copy(sqlite_template, tmp_path / "ops.db")
    code, out, err = await sdms(
        "create-api-key", "--role", "admin", "--name", "Ops", database_url=url
    )
    assert code == 0, err
    key = out.strip()
    assert key.startswith("sdms_")
    assert out.count("\n") == 1  # the key and nothing else: scripts capture it
    async with app_on(url) as http:
        headers = {"Authorization": f"Bearer {key}"}
        me = ok(await http.get("/api/v1/me", headers=headers), 200)
        assert (me["role"], me["name"]) == ("admin", "Ops")
        created = await http.post(
            "/api/v1/organizations", json={"name": "First", "code": "FIRST"}, headers=headers
        )
        assert created.status_code == 201
        bogus = {"Authorization": f"Bearer {key}x"}
        assert (await http.get("/api/v1/me", headers=bogus)).status_code == 401
    # A customer needs an organization: an error and a failing exit code, not a key.
    code, out, err = await sdms(
        "create-api-key", "--role", "customer", "--name", "Lost", database_url=url
    )
    assert code != 0
    assert "sdms_" not in out
    assert "organization" in err


@pytest.mark.slow
async def test_migrate_makes_an_empty_database_ready(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fresh.db")
    async with app_on(url) as http:
        assert (await http.get("/readyz")).status_code == 503
        code, _out, err = await sdms("migrate", database_url=url)
        assert code == 0, err
        assert (await http.get("/readyz")).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bad organization id", "database not migrated"])
async def test_create_api_key_fails_cleanly(
    tmp_path: Path, sqlite_template: Path, case: str
) -> None:
    path = tmp_path / "ops.db"
    args = ["create-api-key", "--role", "admin", "--name", "X"]
    if case == "bad organization id":
        shutil.copyfile(sqlite_template, path)
        args = ["create-api-key", "--role", "customer", "--name", "X"]
        args += ["--organization-id", "not-a-uuid"]
    code, out, err = await sdms(*args, database_url=sqlite_url(path))
    assert code == 2
    assert "sdms_" not in out
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert "SELECT" not in err
    assert "INSERT" not in err


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_process(port: int, url: str, workers: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDMS_")}
    env.update(SDMS_DATABASE_URL=url, PYTHONPATH=str(ROOT), SDMS_EMBEDDED_WORKER="false")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_serve_with_workers_answers_refuses_a_taken_port_and_stops_on_sigterm(
    tmp_path: Path, sqlite_template: Path
) -> None:
    import signal

    import httpx

    url, port = migrated_copy(sqlite_template, tmp_path / "serve.db"), free_port()
    server = await serve_process(port, url, workers=2)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            # Many connections at once, each answered (by whichever worker has it).
            answers = await asyncio.gather(*(http.get("/healthz") for _ in range(8)))
            assert [a.status_code for a in answers] == [200] * 8
        # A second server on the same port fails at once instead of sharing it.
        second = await serve_process(port, url, workers=2)
        _out, err = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode != 0
        assert b"cannot listen" in err
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(server.communicate(), timeout=60)
    assert server.returncode == 0, err.decode()
    assert err.decode().count("Finished server process") == 2  # both workers shut down cleanly
