from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pipelines.archive import row_events
from pipelines.clock import ManualClock
from pipelines.patterns import Matcher, compile_pattern
from pipelines.runtime import Runtime

#: A module for function targets in CLI tests (write it as ``sinkmod.py`` next
#: to the config): ``record`` appends each payload to $SINK_FILE (after
#: $SINK_DELAY seconds), ``audit`` to $AUDIT_FILE.
SINK_MODULE = """
import json, os, time

def record(payload):
    time.sleep(float(os.environ.get("SINK_DELAY", "0")))
    with open(os.environ["SINK_FILE"], "a") as out:
        out.write(json.dumps(payload) + "\\n")

def audit(payload):
    with open(os.environ["AUDIT_FILE"], "a") as out:
        out.write(json.dumps(payload) + "\\n")
"""

#: A pipeline sending each shop event's detail to ``sinkmod:record``.
SINK_PIPELINE = """
resources:
  sink: {type: function, function: "sinkmod:record"}
rules:
  orders:
    pattern: {source: [shop]}
    targets: [{id: t, resource: sink, input_path: $.detail}]
"""


def pipelines_command() -> list[str]:
    """The installed console script, next to this interpreter when in a venv."""
    script = Path(sys.executable).with_name("pipelines")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines"]


def project_env() -> dict[str, str]:
    """This environment with the project first on a subprocess's path, so that
    ``tests.X`` is this package: gmqtt installs a top-level ``tests`` package
    into site-packages, which would be found before the editable install's."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pipelines_command(), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verdict(pattern: Any, event: Any) -> bool:
    """Pattern.matches on the event, asserting both Matcher entry points agree with it."""
    matched = compile_pattern(pattern).matches(event)
    matcher = Matcher()
    matcher.add("r", pattern)
    expected = ["r"] if matched else []
    assert matcher.match(event) == expected
    assert matcher.match_json(json.dumps(event)) == expected
    return matched


async def eventually(check: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait (real time: a broker, another connection) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def advance(runtime: Runtime, seconds: float) -> None:
    """Move a runtime's ManualClock forward, letting the pipeline go quiet
    (deliveries done) between the timers it fires."""
    clock = runtime.clock
    assert isinstance(clock, ManualClock)

    async def quiet() -> None:
        async with asyncio.timeout(5):
            while not runtime._drained():
                await asyncio.sleep(0.001)

    await clock.advance(seconds, quiet=quiet)


@contextlib.asynccontextmanager
async def held_elsewhere(path: Path | str) -> AsyncIterator[None]:
    """Another process holds the database's write lock until the block ends:
    what the store's thread takes meanwhile waits in SQLite (busy timeout),
    and what is handed over meanwhile gathers behind it."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def sql(location: Path | str, statement: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on a state database from outside its stores (what
    a test reads, or breaks, behind a running pipeline's back), on either
    engine: a SQLite file or a PostgreSQL URL (``?`` placeholders). Its rows."""
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        import psycopg

        from pipelines.postgres import translate

        with psycopg.connect(location, autocommit=True) as db:
            cursor = db.execute(translate(statement), parameters)
            return cursor.fetchall() if cursor.description is not None else []
    with sqlite3.connect(location) as db:
        return db.execute(statement, parameters).fetchall()


def archived(location: Path | str, archive: str | None = None) -> list[bytes]:
    """The JSON of the events archived (in ``archive``, or all), in the order
    they were written: the rows of ``archive_groups`` by seq, each row's
    events (JSON lines) in turn. Read from outside the stores, as ``sql``."""
    where, parameters = (" WHERE archive = ?", (archive,)) if archive is not None else ("", ())
    rows = sql(location, f"SELECT events, body FROM archive_groups{where} ORDER BY seq", parameters)
    return [event for events, body in rows for event in row_events(events, body)]


class Cyclic:
    """An object in a reference cycle of its own: only the collector frees it
    (the runner's frozen heap is checked with one)."""

    def __init__(self) -> None:
        self.me = self
