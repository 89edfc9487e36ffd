"""A throwaway PostgreSQL server from the installed binaries, for the tests and the benchmarks.

initdb refuses to run as root; when we are root (CI), the server runs as the `postgres` OS user
in a directory it owns. The server listens on a free TCP port on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def find_bin_dir() -> Path | None:
    configured = os.environ.get("SDMS_PG_BIN")
    candidates = [configured] if configured else []
    candidates += list(DEFAULT_BIN_DIRS)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found (set SDMS_PG_BIN)")
        self.bin_dir = bin_dir
        self.durable = durable
        self.extra_settings = settings or {}
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sdms-pg-"))
        self.data_dir = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        self.user = "postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> PostgresServer:
        if self.as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            "shared_buffers": "256MB",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            **self.extra_settings,
        }
        option_string = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            option_string,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def create_database(self, name: str) -> str:
        self._run(
            str(self.bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            name,
        )
        return self.url(name)

    def postmaster_pid(self) -> int:
        """The server's own process (its backends are its children)."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres", driver: str = "asyncpg") -> str:
        suffix = f"+{driver}" if driver else ""
        return f"postgresql{suffix}://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.data_dir.exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
        # Give the postmaster a moment to let go of its files before removing them.
        time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
