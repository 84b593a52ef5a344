"""A throwaway PostgreSQL cluster for tests, like tests/redis_server.py for Redis.

``initdb`` + ``pg_ctl`` in a temporary directory (data and Unix socket inside it), listening on
127.0.0.1 on a free port, trust authentication, no fsync. One cluster per test session; each test
gets its own fresh database from the ``pg_database`` fixture. initdb refuses to run as root, so
when the tests run as root the server runs as the ``postgres`` user, in a directory chowned to
it. Tests are skipped (with the reason) only when the binaries cannot be found.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PgServer", "find_pg_bin", "pg_database", "pg_server"]

_START_TIMEOUT_S = 30


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's versioned dirs."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _RunAs:
    """Who runs the server: ourselves, or ``postgres`` when we are root."""

    user: str | None

    def kwargs(self) -> dict[str, object]:
        return {} if self.user is None else {"user": self.user, "group": self.user}


class PgServer:
    """One cluster; ``stop()`` then ``start()`` brings it back on the same port and data."""

    def __init__(self, bindir: Path, root: Path, run_as: _RunAs) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._run_as = run_as

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            cwd=self.root,
            timeout=_START_TIMEOUT_S + 10,
            **self._run_as.kwargs(),  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{out}")

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        # fsync off: fast, and a killed server still keeps its commits (the OS has them);
        # synchronous_commit stays on, or stop() would lose the last commits with the server.
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories='{self.root}' -c fsync=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "start",
        )

    @property
    def running(self) -> bool:
        done = subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=_START_TIMEOUT_S,
            **self._run_as.kwargs(),  # type: ignore[arg-type]
        )
        return done.returncode == 0

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: an abrupt outage (connections are cut); ``fast`` for the teardown."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self._psql(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _psql(self, sql: str) -> None:
        self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        )


def _make_root() -> tuple[Path, _RunAs]:
    """A temp dir the server's user owns. As root, that user is ``postgres``."""
    root = Path(tempfile.mkdtemp(prefix="llm-proxy-pg-"))
    if os.geteuid() != 0:
        return root, _RunAs(None)
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root but there is no 'postgres' user for initdb") from None
    os.chown(root, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o700)
    for parent in root.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(f"the postgres user cannot reach {root}: {parent} is not o+x")
    return root, _RunAs("postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A started cluster for the whole session (skipped only without the binaries)."""
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    root, run_as = _make_root()
    server = PgServer(bindir, root, run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running:
            server.stop("fast")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        if not pg_server.running:  # a test may have left it stopped
            pg_server.start()
        pg_server.drop_database(name)
