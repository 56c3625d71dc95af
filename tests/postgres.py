"""A private PostgreSQL server for the tests: initdb into a temporary
directory, listening on a free port of 127.0.0.1 only, stopped at the end.

The tests never use a system service. One server per test session (initdb
takes a second or two); each test that wants one gets a fresh database on
it (``postgres_url``). Debian's ``postgresql`` package puts its programs in
``/usr/lib/postgresql/<version>/bin``; ``scripts/system-packages`` installs it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _binaries() -> Path:
    """The directory of initdb and pg_ctl."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not versions:
        pytest.fail("PostgreSQL is not installed: scripts/system-packages installs it")
    return versions[0].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.bin = _binaries()
        self.user = "pipelines"
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        # initdb refuses to run as root: run the server as a user that exists
        # (``nobody`` when the tests run as root, as in CI containers).
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "nobody", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.directory / "data"
        if os.geteuid() == 0:
            os.chmod(self.directory, 0o777)
        self._run("initdb", "-D", str(data), "-U", self.user, "-A", "trust", "-E", "UTF8")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.directory}"
            " -c fsync=off -c synchronous_commit=on -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.directory / "log"),
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"test_{next(self._names)}_{os.getpid()}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    directory = Path(tempfile.mkdtemp(prefix="pipelines-pg-"))
    server = PostgresServer(directory)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh database on the session's private server."""
    return postgres_server.new_database()
