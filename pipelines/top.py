"""``pipelines top``: a live view of a running pipeline, per rule target.

Every ``interval`` seconds it asks the pipeline for its numbers (the control
socket's ``stats``: ``pipelines.snapshot``) and shows, per rule target, the
rates since the last look (matched by its rule, delivered, failed attempts,
dead-lettered, dropped), what is in flight, queued and waiting as a retry,
and its last error with its age. A target that fails every call shows a
failure rate, a growing count of retries and the error it raises.

Keys: ``m`` ``d`` ``f`` ``l`` ``i`` ``r`` sort by matched, delivered,
failed, dead-lettered, in flight, retries (largest first); ``n`` by name;
``q`` quits. ``rows``/``render`` are plain functions of two snapshots, so
another view (the web console) can show the same figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipelines.control import stats

#: Key -> (column sorted by, its title).
SORTS: dict[str, tuple[str, str]] = {
    "m": ("matched", "matched/s"),
    "d": ("delivered", "delivered/s"),
    "f": ("failed", "failed/s"),
    "l": ("dead_lettered", "dead-lettered/s"),
    "i": ("in_flight", "in flight"),
    "r": ("pending_retries", "retries"),
    "n": ("name", "name"),
}
DEFAULT_SORT = "failed"


@dataclass(frozen=True, slots=True)
class Row:
    """One rule target's figures between two snapshots."""

    bus: str
    rule: str
    target: str
    resource: str
    matched: float  # its rule's matched events per second
    delivered: float
    failed: float  # failed attempts per second
    dead_lettered: float
    dropped: float
    in_flight: int
    queued: int
    pending_retries: int
    #: "Code: message", or "" when it never failed.
    last_error: str
    #: Seconds since that error (None: never failed).
    error_age: float | None

    @property
    def name(self) -> str:
        bus = "" if self.bus == "default" else f"{self.bus}/"
        return f"{bus}{self.rule}/{self.target}"

    def key(self, column: str) -> Any:
        return self.name if column == "name" else getattr(self, column)


def rows(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[Row]:
    """Each rule target's rates between ``before`` and ``now`` (two ``stats``
    answers; rates are 0 without ``before``)."""
    elapsed = 0.0 if before is None else max(now["time"] - before["time"], 1e-9)
    old_targets = {_target_key(t): t for t in before["targets"]} if before else {}
    old_rules = {(r["bus"], r["rule"]): r for r in before["rules"]} if before else {}
    new_rules = {(r["bus"], r["rule"]): r for r in now["rules"]}

    def rate(new: Mapping[str, Any], old: Mapping[str, Any] | None, field: str) -> float:
        if old is None or not elapsed:
            return 0.0
        return max(float(new[field]) - float(old[field]), 0.0) / elapsed

    found = []
    for target in now["targets"]:
        old = old_targets.get(_target_key(target))
        rule_key = (target["bus"], target["rule"])
        rule = new_rules.get(rule_key)
        last = target["last_error"]
        found.append(
            Row(
                bus=target["bus"],
                rule=target["rule"],
                target=target["target"],
                resource=target["resource"],
                matched=0.0
                if rule is None
                else rate(rule, old_rules.get(rule_key), "MatchedEvents"),
                delivered=rate(target, old, "delivered"),
                failed=rate(target, old, "failed_attempts"),
                dead_lettered=rate(target, old, "dead_lettered"),
                dropped=rate(target, old, "dropped"),
                in_flight=int(target["in_flight"]),
                queued=int(target["queued"]),
                pending_retries=int(target["pending_retries"]),
                last_error="" if last is None else f"{last['code']}: {last['message']}",
                error_age=None if last is None else max(now["time"] - last["at"], 0.0),
            )
        )
    return found


def _target_key(target: Mapping[str, Any]) -> tuple[str, str, str]:
    return target["bus"], target["rule"], target["target"]


def sort_rows(found: list[Row], column: str) -> list[Row]:
    """Largest first (by name: alphabetical), ties by name."""
    if column == "name":
        return sorted(found, key=lambda row: row.name)
    return sorted(found, key=lambda row: (-row.key(column), row.name))


#: What the figures' columns, the gaps and the least of the last error take
#: of a terminal's width: the names get the rest (12 to 40 characters).
_BESIDE_NAMES = 66


def render(
    found: list[Row], column: str, now: Mapping[str, Any], source: str, width: int = 80
) -> Group:
    """The view, for a terminal ``width`` columns wide: a header line, the
    table, the keys."""
    title = next(title for name, title in SORTS.values() if name == column)
    header = Text.assemble(
        ("pipelines top", "bold"),
        f"  {source}  ",
        ("running" if now["running"] else "not running", "green" if now["running"] else "red"),
        f"  {len(found)} rule targets (rates per second), sorted by {title}",
    )
    # The names keep room on an 80-column terminal: no rules between the
    # columns, and the figures' headers short, on two lines where need be
    # (one line each, with "/s", left the names no room).
    table = Table(
        expand=True, pad_edge=False, show_edge=False, box=box.SIMPLE_HEAD, collapse_padding=True
    )
    names = max(12, min(40, width - _BESIDE_NAMES))
    table.add_column("rule/target", no_wrap=True, min_width=12, max_width=names)
    for name in ("matched", "deliv-\nered", "failed", "dead-\nlettered"):
        table.add_column(name, justify="right", no_wrap=True, min_width=_widest(name))
    for name in ("in\nflight", "queued", "retries"):
        table.add_column(name, justify="right", no_wrap=True, min_width=_widest(name))
    table.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=1)
    for row in sort_rows(found, column):
        failing = row.failed > 0 or row.pending_retries > 0
        table.add_row(
            Text(row.name, style="bold red" if failing else ""),
            _rate(row.matched),
            _rate(row.delivered),
            Text(_rate(row.failed), style="red" if row.failed else ""),
            _rate(row.dead_lettered + row.dropped),
            str(row.in_flight),
            str(row.queued),
            Text(str(row.pending_retries), style="yellow" if row.pending_retries else ""),
            "" if row.error_age is None else f"{_age(row.error_age)} ago  {row.last_error}",
        )
    keys = Text(
        "sort: m matched  d delivered  f failed  l dead-lettered  i in flight"
        "  r retries  n name    q quit",
        style="dim",
    )
    return Group(header, table, keys)


def _widest(header: str) -> int:
    """A figure column's header, whole: the width of its longest line."""
    return max(len(line) for line in header.splitlines())


def _rate(value: float) -> str:
    if not value:
        return "0"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3_600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3_600:.1f}h"


@contextlib.contextmanager
def _keys_of(stream: Any) -> Iterator[Callable[[], str]]:
    """Key presses on a terminal, one character at a time without Enter
    (cbreak mode, restored after); nothing to read when not a terminal."""
    if not stream.isatty():
        yield lambda: ""
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    os.set_blocking(fd, False)
    try:

        def read() -> str:
            try:
                return os.read(fd, 64).decode(errors="ignore")
            except BlockingIOError:
                return ""

        yield read
    finally:
        os.set_blocking(fd, True)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(
    socket: Path,
    *,
    interval: float = 1.0,
    sort: str = DEFAULT_SORT,
    console: Console | None = None,
    iterations: int | None = None,
) -> None:
    """Show the pipeline listening on ``socket`` until ``q`` (or ``iterations``
    refreshes). ``ControlError`` when no pipeline listens there."""
    console = console or Console()
    before = None
    column = sort
    refreshes = 0
    now = await stats(socket)
    with _keys_of(sys.stdin) as keys, Live(console=console, auto_refresh=False) as live:
        while True:
            view = render(rows(before, now), column, now, str(socket), console.width)
            live.update(view, refresh=True)
            refreshes += 1
            if iterations is not None and refreshes >= iterations:
                return
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                pressed = keys()
                if "q" in pressed:
                    return
                for key in pressed:
                    if key in SORTS:
                        column = SORTS[key][0]
                        view = render(rows(before, now), column, now, str(socket), console.width)
                        live.update(view, refresh=True)
                await asyncio.sleep(0.05)
            before, now = now, await stats(socket)
