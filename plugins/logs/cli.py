"""``pipelines logs ...``: the log group API (``LogStore``) on the command line.

Each command opens the state database of a pipeline (running or not: SQLite
lets both use it at once; only ``create`` makes a new one) and calls one
``LogStore`` method, printing its answer as ``--output`` says
(``pipelines.clikit``): ``tail`` prints each event as it comes (a JSON line
each by default), ``query``'s table is the Logs Insights result's rows.
Times in the store are milliseconds since the epoch.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from pipelines import clikit
from pipelines.clikit import (
    echo_output,
    echo_table,
    output_option,
    printing_items,
    state_options,
    state_path,
    streaming_output_option,
    until_signalled,
)
from pipelines.clock import SystemClock
from pipelines.metrics import MetricStore
from plugins.logs.store import EVENT_OVERHEAD, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, LogStore

T = TypeVar("T")

#: The units of a relative time (``--since 10m``), in seconds.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def with_store(
    config: str | None,
    state: str | None,
    call: Callable[[LogStore], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    return clikit.with_store(LogStore, config, state, call, create=create)


def with_metered_store(
    config: str | None, state: str | None, call: Callable[[LogStore], Awaitable[T]]
) -> T:
    """``with_store``, the groups' metric filters publishing into the
    database's metric store as they do in a running pipeline."""
    path = state_path(config, state)

    async def run() -> T:
        sink = await MetricStore.open(path, SystemClock(), migrate=False)
        try:
            async with await LogStore.open(
                path, metrics=sink.put_metric_data, migrate=False
            ) as store:
                return await call(store)
        finally:
            await sink.close()  # writes what the metric filters published

    return asyncio.run(run())


class TimeValue(click.ParamType[int, str | int]):
    """A moment, in ms since the epoch: a relative time (a number and one unit
    of s, m, h, d, w: that long ago, as ``aws logs tail --since``) or an ISO
    8601 time (UTC unless it says)."""

    name = "time"
    _RELATIVE = re.compile(r"(\d+)([smhdw])")

    def convert(
        self, value: str | int, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value  # already converted
        relative = self._RELATIVE.fullmatch(value.strip())
        if relative:
            ago = int(relative[1]) * UNIT_SECONDS[relative[2]]
            return int((time.time() - ago) * 1000)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(
                f"{value!r} is neither a relative time (a number and one unit of s, m, h, d, w:"
                " 10m, 2h) nor an ISO 8601 time",
                param,
                ctx,
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding


class Retention(click.ParamType[int | None, str]):
    """``retention``'s DAYS: a number of days, or ``never`` (None)."""

    name = "days"

    def convert(
        self, value: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | None:
        if value.strip().lower() == "never":
            return None
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of days nor never", param, ctx)


@click.group("logs")
def logs_group() -> None:
    """Log groups with CloudWatch Logs' semantics, in a pipeline's state database."""


# -- groups, streams, filters -------------------------------------------------


@logs_group.command("groups")
@click.option("--prefix", default="", help="Only the groups whose name starts with this.")
@state_options
@output_option
def groups_command(prefix: str, config: str | None, state: str | None, output: str) -> None:
    """List the log groups (as DescribeLogGroups)."""
    echo_output(with_store(config, state, lambda store: store.describe_log_groups(prefix)), output)


@logs_group.command("create")
@click.argument("group")
@click.option(
    "--retention-days", type=int, default=None, metavar="N", help="Expire events after N days."
)
@click.option("--exist-ok", is_flag=True, help="An existing GROUP is no error (and kept as it is).")
@state_options
def create_command(
    group: str, retention_days: int | None, exist_ok: bool, config: str | None, state: str | None
) -> None:
    """Create log GROUP."""
    with_store(
        config,
        state,
        lambda store: store.create_log_group(group, retention_days, exist_ok=exist_ok),
        create=True,
    )


@logs_group.command("retention")
@click.argument("group")
@click.argument("days", type=Retention())
@state_options
def retention_command(group: str, days: int | None, config: str | None, state: str | None) -> None:
    """Keep GROUP's events DAYS days, or never expire them.

    DAYS is one of CloudWatch's values (1, 3, 5, 7, 14, 30...) or never."""
    with_store(config, state, lambda store: store.put_retention_policy(group, days))


@logs_group.command("delete")
@click.argument("group")
@state_options
def delete_command(group: str, config: str | None, state: str | None) -> None:
    """Delete log GROUP with its streams, events and filters."""
    with_store(config, state, lambda store: store.delete_log_group(group))


@logs_group.command("streams")
@click.argument("group")
@click.option("--prefix", default="", help="Only the streams whose name starts with this.")
@state_options
@output_option
def streams_command(
    group: str, prefix: str, config: str | None, state: str | None, output: str
) -> None:
    """List GROUP's log streams (as DescribeLogStreams)."""
    streams = with_store(config, state, lambda store: store.describe_log_streams(group, prefix))
    echo_output(streams, output)


@logs_group.command("filters")
@click.argument("group")
@state_options
@output_option
def filters_command(group: str, config: str | None, state: str | None, output: str) -> None:
    """Print GROUP's metric and subscription filters."""

    async def describe(store: LogStore) -> dict[str, Any]:
        return {
            "metricFilters": await store.describe_metric_filters(group),
            "subscriptionFilters": await store.describe_subscription_filters(group),
        }

    echo_output(with_store(config, state, describe), output)


# -- put ------------------------------------------------------------------------


def numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-empty line."""
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\r\n")
        if text:
            yield number, text


def input_lines(source: str) -> Iterator[tuple[int, str]]:
    """``numbered`` lines of file ``source`` (- stdin)."""
    try:
        if source == "-":
            yield from numbered(sys.stdin)
            return
        with Path(source).open(encoding="utf-8") as lines:
            yield from numbered(lines)
    except OSError as exc:
        raise click.UsageError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"cannot read {source}: not UTF-8 text ({exc.reason})") from None


def batches(lines: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """PutLogEvents requests within CloudWatch's limits (10,000 events,
    1,048,576 bytes counting 26 per event): (line number, event) each, every
    event timestamped when its line is read (never earlier than the last)."""
    batch: list[tuple[int, dict[str, Any]]] = []
    size = 0
    last = 0
    for number, text in lines:
        last = max(last, int(time.time() * 1000))
        event_size = len(text.encode()) + EVENT_OVERHEAD
        if batch and (len(batch) == MAX_BATCH_EVENTS or size + event_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((number, {"timestamp": last, "message": text}))
        size += event_size
    if batch:
        yield batch


def add_result(total: dict[str, Any], answer: dict[str, Any], numbers: list[int]) -> None:
    """Add one PutLogEvents answer to ``total``; its errors name input lines."""
    total["acceptedCount"] += answer["acceptedCount"]
    for reason, count in answer["rejectedCounts"].items():
        total["rejectedCounts"][reason] = total["rejectedCounts"].get(reason, 0) + count
    for error in answer.get("errors", []):
        index = error["index"]
        message = error["message"].removeprefix(f"logEvents[{index}]: ")
        total["errors"].append(
            {"line": numbers[index], "message": f"line {numbers[index]}: {message}"}
        )


@logs_group.command("put")
@click.argument("group")
@click.argument("stream")
@click.option(
    "--input",
    "input_path",
    default="-",
    show_default=True,
    help="A file of messages, one per line (- stdin); empty lines are skipped.",
)
@click.option("--create-stream", is_flag=True, help="Create STREAM if it does not exist.")
@state_options
@output_option
def put_command(
    group: str,
    stream: str,
    input_path: str,
    create_stream: bool,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Put each line of --input as a log event of STREAM in GROUP.

    Events are timestamped now and sent in PutLogEvents requests. Prints the
    combined answer: acceptedCount, rejectedCounts, and errors naming input
    lines; exit 1 when an event was rejected."""

    async def put(store: LogStore) -> dict[str, Any]:
        total: dict[str, Any] = {"acceptedCount": 0, "rejectedCounts": {}, "errors": []}
        sent = 0
        for batch in batches(input_lines(input_path)):
            events = [event for _, event in batch]
            answer = await store.put_log_events(group, stream, events, create_stream=create_stream)
            add_result(total, answer, [number for number, _ in batch])
            sent += len(batch)
        if not sent:
            raise click.UsageError(f"no lines to put in {input_path}")
        if not total["errors"]:
            del total["errors"]
        return total

    total = with_metered_store(config, state, put)
    echo_output(total, output)
    if sum(total["rejectedCounts"].values()):
        raise SystemExit(1)


# -- tail -----------------------------------------------------------------------


async def pages(store: LogStore, group: str, **query: Any) -> AsyncIterator[dict[str, Any]]:
    """Every event FilterLogEvents finds, page after page (nextToken)."""
    token: str | None = None
    while True:
        answer = await store.filter_log_events(group, next_token=token, **query)
        for event in answer["events"]:
            yield event
        token = answer.get("nextToken")
        if token is None:
            return


async def followed(
    store: LogStore, group: str, poll: float, **query: Any
) -> AsyncIterator[dict[str, Any]]:
    """The events ``query`` finds now, then (until cancelled) those ingested
    later, each once: a poll looks at the events after the newest id known
    before the poll before it, skipping those it printed already."""
    after: int | None = None
    shown: set[int] = set()  # ids over ``after`` printed already
    while True:
        newest = await store.last_event_id()
        async for event in pages(store, group, after_id=after, **query):
            event_id = int(event["eventId"])
            if event_id not in shown:
                shown.add(event_id)
                yield event
        after = newest  # every event up to it was there to be seen
        shown = {event_id for event_id in shown if event_id > after}
        await asyncio.sleep(poll)


@logs_group.command("tail")
@click.argument("group")
@click.option(
    "--since",
    type=TimeValue(),
    default="10m",
    show_default=True,
    help="From when: a relative time (a number and one unit of s, m, h, d, w) or an ISO 8601"
    " time (UTC unless it says).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep polling for new events until interrupted.")
@click.option(
    "--filter",
    "--filter-pattern",
    "pattern",
    default="",
    metavar="PATTERN",
    help="Only the events matching this CloudWatch filter pattern.",
)
@click.option(
    "--stream", "streams", multiple=True, metavar="NAME", help="Only this log stream (repeatable)."
)
@click.option("--stream-prefix", default=None, help="Only the log streams whose name starts so.")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@state_options
@streaming_output_option
def tail_command(
    group: str,
    since: int,
    follow: bool,
    pattern: str,
    streams: tuple[str, ...],
    stream_prefix: str | None,
    poll: float,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Print GROUP's events since --since, as `aws logs tail`, as they are found.

    Events come in time order; with --follow, new ones go on being printed
    until interrupted (Ctrl-C, SIGTERM). A table shows each event's
    timestamp, stream and message."""
    query = {
        "pattern": pattern,
        "start_time": since,
        "stream_names": list(streams) or None,
        "stream_prefix": stream_prefix,
    }
    columns = ("timestamp", "logStreamName", "message")

    async def tail(store: LogStore) -> None:
        events = followed(store, group, poll, **query) if follow else pages(store, group, **query)
        with printing_items(output, live=True, columns=columns) as printer:
            async for event in events:
                if not printer.write(event):
                    return

    with_store(config, state, lambda store: until_signalled(tail(store)))


# -- query ------------------------------------------------------------------------


@logs_group.command("query")
@click.argument("group")
@click.argument("text", metavar="QUERY")
@click.option(
    "--since",
    type=TimeValue(),
    default=None,
    help="Query the events since then: a relative time (1h) or an ISO 8601 time (default 1h).",
)
@click.option("--start", type=TimeValue(), default=None, help="Query the events from then.")
@click.option("--end", type=TimeValue(), default=None, help="Query the events until then.")
@state_options
@output_option
def query_command(
    group: str,
    text: str,
    since: int | None,
    start: int | None,
    end: int | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Run Logs Insights QUERY over GROUP's events (by default the last hour's).

    Prints the result: its fields, rows, and the records matched and
    scanned (statistics). A table shows the rows under the fields, with the
    statistics under it."""
    if since is not None and start is not None:
        raise click.UsageError("give --since or --start, not both")
    if start is None:
        start = since if since is not None else int((time.time() - 3600) * 1000)
    result = with_store(
        config, state, lambda store: store.query(group, text, start_time=start, end_time=end)
    )
    statistics = {
        "recordsMatched": result.records_matched,
        "recordsScanned": result.records_scanned,
    }
    if output != "table":
        answer = {"fields": result.fields, "rows": result.rows, "statistics": statistics}
        echo_output(answer, output)
        return
    caption = f"records matched: {statistics['recordsMatched']},"
    caption += f" records scanned: {statistics['recordsScanned']}"
    echo_table(result.rows, result.fields or None, caption=caption)
