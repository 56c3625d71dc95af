"""Crash safety: SIGKILL a process archiving under load at a random moment;
every event whose put_events call had returned must be in the archive, once,
in a database that passes PRAGMA integrity_check (SQLite), on either engine."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.archive import row_events

from .helpers import sql

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_loses_no_acknowledged_event(state_location: str, round_: int) -> None:
    state = state_location
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.archive_writer", state],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert writer.stdout is not None
    # A random moment: after some hundreds of acknowledged calls, plus a
    # random fraction of a second so the kill lands anywhere in a commit.
    calls = random.randint(100, 800)
    lines = [writer.stdout.readline() for _ in range(calls)]
    time.sleep(random.uniform(0, 0.05))
    writer.send_signal(signal.SIGKILL)
    # The rest through the same file object: it holds what readline read
    # ahead, which communicate (reading the pipe beneath it) would drop,
    # cutting a line in two. The process is dead, so the reads end.
    assert writer.stderr is not None
    rest, errors = writer.stdout.read(), writer.stderr.read()
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL, errors.decode()
    acknowledged = [i for line in [*lines, *rest.splitlines()] if line for i in json.loads(line)]
    assert len(acknowledged) >= calls * 10

    if not state.startswith("postgresql://"):
        assert sql(state, "PRAGMA integrity_check") == [("ok",)]
    # The count and the rows in one statement, so one snapshot: PostgreSQL
    # may still be committing a transaction the killed writer had sent
    # whole, and two reads could see it half (the rows before, the count after).
    rows = sql(
        state,
        "SELECT a.event_count, g.events, g.body FROM archives AS a"
        " JOIN archive_groups AS g ON g.archive = a.name WHERE a.name = 'crash' ORDER BY g.seq",
    )
    stored = Counter(
        json.loads(event)["id"] for _, events, body in rows for event in row_events(events, body)
    )
    count = rows[0][0]
    missing = [i for i in acknowledged if i not in stored]
    assert missing == []
    assert [i for i, n in stored.items() if n > 1] == []  # exactly once
    assert count == sum(stored.values())  # the counters moved with the rows
