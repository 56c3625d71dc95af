"""``pipelines top`` in a real pseudo-terminal against a running pipeline."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.top import rows, sort_rows
from tests.helpers import pipelines_command
from tests.observed import Pipeline

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class Terminal:
    """A command on a pseudo-terminal of ``columns`` x ``lines``: what it shows,
    and keys typed to it."""

    def __init__(self, command: list[str], columns: int = 200, lines: int = 40) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.shown = ""

    def read(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the command exited: the terminal is gone
                return
            if not chunk:
                return
            self.shown += _ANSI.sub("", chunk.decode(errors="replace"))

    def wait_for(self, pattern: str, seconds: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while True:
            found = re.search(pattern, self.shown)
            if found:
                return found
            assert self.process.poll() is None, self.shown[-3000:]
            assert time.monotonic() < deadline, f"{pattern!r} not shown:\n{self.shown[-3000:]}"
            self.read()

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    running = Pipeline(tmp_path).start()  # the control socket only: no HTTP port
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_top_shows_a_target_that_fails_every_call_and_sorts_by_key(pipeline: Pipeline) -> None:
    pipeline.put("shop", 4)
    terminal = Terminal([*pipelines_command(), "top", "--control", str(pipeline.control)])
    try:
        terminal.wait_for(r"sorted by failed/s")
        # The failing target: its retries waiting and the error it raises.
        terminal.wait_for(
            r"orders/charge\s[^\n]*\s4\s+\d+s ago\s+[^\n]*RuntimeError: card service down"
        )
        # Events put while it watches show as rates on their rule's target.
        pipeline.put("refunds", 30)
        rates = re.compile(r"refunds/sink\s+([\d.]+)\s+([\d.]+)\s")
        deadline = time.monotonic() + 15
        while True:
            shown = rates.findall(terminal.shown)
            if any(float(matched) > 0 and float(delivered) > 0 for matched, delivered in shown):
                break
            assert time.monotonic() < deadline, terminal.shown[-3000:]
            terminal.read(0.5)
        # The target that delivers shows no error.
        sink = terminal.wait_for(r"orders/sink\s[^\n]*")
        assert "RuntimeError" not in sink.group(0)
        # Sorted by failures, the failing target comes first.
        frame = terminal.shown[terminal.shown.rindex("sorted by failed/s") :]
        assert frame.index("orders/charge") < frame.index("orders/sink")
        # A key press sorts by name: the refunds rule's target moves before it.
        mark = len(terminal.shown)
        terminal.type("n")
        terminal.wait_for(r"sorted by name")
        frame = terminal.shown[mark:]
        frame = frame[frame.rindex("sorted by name") :]
        assert (
            frame.index("orders/charge") < frame.index("orders/sink") < frame.index("refunds/sink")
        )
        terminal.type("q")
        assert terminal.process.wait(timeout=10) == 0
    finally:
        terminal.close()


def test_top_says_when_no_pipeline_runs(tmp_path: Path) -> None:
    terminal = Terminal([*pipelines_command(), "top", "--control", str(tmp_path / "none.sock")])
    try:
        assert terminal.process.wait(timeout=30) != 0
        terminal.read(0.5)
        assert "no pipeline is running" in terminal.shown
        assert "Traceback" not in terminal.shown
    finally:
        terminal.close()


def _stats(time: float, delivered: int, failed: int, matched: int) -> dict[str, object]:
    target = {
        "bus": "default",
        "rule": "r",
        "target": "t",
        "resource": "f",
        "delivered": delivered,
        "failed_attempts": failed,
        "dead_lettered": 0,
        "dropped": 0,
        "in_flight": 1,
        "queued": 0,
        "pending_retries": 3,
        "last_error": {"code": "E", "message": "m", "at": time - 5},
    }
    rule = {"bus": "default", "rule": "r", "state": "ENABLED", "MatchedEvents": matched}
    return {"time": time, "running": True, "targets": [target], "rules": [rule]}


def test_rates_are_the_difference_over_the_time_between_two_looks() -> None:
    [row] = rows(_stats(100.0, 10, 4, 20), _stats(102.0, 30, 10, 50))
    assert (row.delivered, row.failed, row.matched) == (10.0, 3.0, 15.0)
    assert row.last_error == "E: m" and row.error_age == 5.0
    [first] = rows(None, _stats(100.0, 10, 4, 20))
    assert first.delivered == 0.0  # no rate from one look
    assert sort_rows([row, first], "delivered")[0] is row


def test_the_names_are_whole_on_an_80_column_terminal() -> None:
    from rich.console import Console

    from pipelines.top import Row, render

    long = ("default", "order-processing-rule-v2", "charge-customer", "x")
    rows = [
        Row("default", "orders", "charge", "charge", 1.5, 1, 0.5, 0, 0, 2, 0, 4, "E: down", 12.0),
        Row(*long, 12345.6, 12000, 333, 0, 0, 1234, 56789, 1200, "E: x", 3.0),
        Row("default", "audit", "sink", "sink", 10, 10, 0, 0, 0, 0, 0, 0, "", None),
    ]
    console = Console(width=80, color_system=None, record=True)
    console.print(render(rows, "failed", {"running": True}, "ctl", 80))
    shown = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in shown)
    charge = next(line for line in shown if line.startswith("orders/charge "))
    assert charge.split()[1:8] == ["1.5", "1.0", "0.5", "0", "2", "0", "4"]
    assert any(line.startswith("audit/sink ") for line in shown)
    # A long name gives way (cut short), not the figures beside it.
    busy = next(line for line in shown if line.startswith("order-process"))
    assert busy.split()[1:8] == ["12,346", "12,000", "333", "0", "1234", "56789", "1200"]
