"""The ``pipelines`` command line: a thin layer over the library's public functions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipelines import __version__
from pipelines.errors import (
    ConfigError,
    ConfigInvalid,
    EventValidationError,
    PatternError,
    PipelinesError,
)
from pipelines.patterns import evaluate_pattern

if TYPE_CHECKING:
    from pipelines.runner import RunReport


def read_argument(value: str) -> str:
    """JSON text given inline, or ``@path`` to read it from a file (``@-`` for stdin)."""
    if not value.startswith("@"):
        return value
    source = value[1:]
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"cannot read {source}: {exc.strerror}") from None


class _Commands(click.Group):
    """Every command: a ``PipelinesError`` is one line on stderr and exit 1, not a
    traceback (set PIPELINES_DEBUG=1, or pass run --debug, for the traceback)."""

    _plugin_commands = False

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands:
            return
        self._plugin_commands = True
        from pipelines.pluginmanager import get_plugin_manager

        built_in = dict(self.commands)
        get_plugin_manager().hook.register_commands(cli=self)
        self.commands.update(built_in)  # a plugin cannot replace a built-in command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._add_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        with contextlib.suppress(PipelinesError):  # a broken plugin says so when used
            self._add_plugin_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except PipelinesError as exc:
            if os.environ.get("PIPELINES_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(1) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipelines")
def cli() -> None:
    """EventBridge-style event pipelines on your own machine."""


@cli.command("test-pattern")
@click.option("--pattern", "-p", required=True, help="Event pattern: JSON text or @file.")
@click.option("--event", "-e", required=True, help="Event: JSON text or @file.")
def test_pattern(pattern: str, event: str) -> None:
    """Test an event against an event pattern, like `aws events test-event-pattern`.

    Prints true (exit 0) or false (exit 1); an invalid pattern or event is
    reported on stderr with exit 2.
    """
    try:
        matched = evaluate_pattern(read_argument(pattern), read_argument(event))
    except PatternError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except EventValidationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(2) from None
    click.echo("true" if matched else "false")
    raise SystemExit(0 if matched else 1)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins_command(as_json: bool) -> None:
    """List the loaded plugins: version, hooks and target types.

    PIPELINES_LOAD_PLUGINS limits the external plugins loaded: empty for
    built-ins only, or a comma-separated list of plugin names.
    """
    from pipelines.pluginmanager import list_plugins

    infos = list_plugins()
    if as_json:
        listing = [
            {
                "name": info.name,
                "version": info.version,
                "distribution": info.distribution,
                "builtin": info.builtin,
                "hooks": list(info.hooks),
                "targets": list(info.targets),
            }
            for info in infos
        ]
        click.echo(json.dumps(listing, indent=2))
        return
    for info in infos:
        origin = "built-in" if info.builtin else f"from {info.distribution or 'code'}"
        click.echo(f"{info.name} {info.version or ''} ({origin})".replace("  ", " "))
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
        click.echo(f"  targets: {', '.join(info.targets) or '-'}")


@cli.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of pipeline configs (with the installed target types)."""
    from pipelines.schema import config_schema

    click.echo(json.dumps(config_schema(), indent=2))


@cli.group("schedule")
def schedule_group() -> None:
    """Schedule expressions: cron(...), rate(...), at(...)."""


@schedule_group.command("next")
@click.argument("expression")
@click.option("--tz", "timezone", default=None, help="IANA time zone (default UTC).")
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--after",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Start from this time instead of now (ISO 8601; naive times are in --tz).",
)
def schedule_next(
    expression: str, timezone: str | None, count: int, after: datetime | None
) -> None:
    """Print the next firings of EXPRESSION, one ISO 8601 time per line.

    A rate counts from --after (or now), as a new rate schedule does.
    """
    from pipelines.schedule import next_firings

    try:
        if after is not None and after.tzinfo is None:
            after = after.replace(tzinfo=schedule_zone(timezone))
        firings = next_firings(expression, timezone=timezone, count=count, after=after)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    for firing in firings:
        click.echo(firing.isoformat())


def schedule_zone(name: str | None) -> tzinfo:
    from pipelines.errors import Where
    from pipelines.schedule import zone

    return zone(Where("--tz"), name)


@cli.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate_command(files: tuple[str, ...]) -> None:
    """Check pipeline config FILES (merged): syntax, keys, references, patterns,
    schedules and target settings. Prints each problem as file:line:column:
    message; exit 0 when valid, 1 when not."""
    from pipelines.config import check

    problems = asyncio.run(check(list(files)))
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{', '.join(files)}: valid")


@cli.command("test")
@click.argument("path", default=".", type=click.Path(exists=True))
def test_command(path: str) -> None:
    """Run the config unit tests in PATH: a *.test.yaml file, or every one
    under a directory (default: here). Exit 0 when all pass, 1 when not."""
    from pipelines.testing import run_tests

    results = asyncio.run(run_tests(path))
    if not results:
        click.echo(f"error: no test files (*.test.yaml) in {path}", err=True)
        raise SystemExit(1)
    for result in results:
        click.echo(f"{result.file}::{result.name} {'PASSED' if result.passed else 'FAILED'}")
        for failure in result.failures:
            click.echo(textwrap.indent(failure, "    "))
    failed = sum(not result.passed for result in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)


@cli.command("run")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--input",
    "input_path",
    default=None,
    help="Put events from a JSON-lines file (- for stdin), one PutEvents entry per line;"
    " exit once all are delivered.",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info"
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to drain in-flight deliveries at shutdown; the rest is persisted.",
)
@click.option("--watch", is_flag=True, help="Reload the config when a file of it changes.")
@click.option(
    "--control",
    default=None,
    help="Control socket for put and tap (default: control.sock beside the state database).",
)
@click.option("--no-control", is_flag=True, help="Do not listen for put and tap.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def run_command(
    files: tuple[str, ...],
    input_path: str | None,
    log_format: str,
    log_level: str,
    shutdown_timeout: float,
    watch: bool,
    control: str | None,
    no_control: bool,
    debug: bool,
) -> None:
    """Run the pipeline in FILES until SIGINT or SIGTERM (or until --input is delivered).

    SIGHUP (or, with --watch, a change to FILES) reloads the config in place:
    a config with problems is refused and the running one kept.
    """
    from pipelines.logs import configure_logging

    configure_logging(log_format, log_level)
    try:
        report = asyncio.run(
            _run(list(files), input_path, shutdown_timeout, watch, control, no_control)
        )
    except ConfigInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    except PipelinesError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    if report.failed:
        source = input_path if input_path not in (None, "-") else "<stdin>"
        for line, code, message in report.failed:
            click.echo(f"{source}:{line}: {code}: {message}", err=True)
        raise SystemExit(1)


async def _run(
    files: list[str],
    input_path: str | None,
    shutdown_timeout: float,
    watch: bool,
    control: str | None,
    no_control: bool,
) -> RunReport:
    from pipelines.config import load_config
    from pipelines.control import default_socket
    from pipelines.runner import read_lines, run_pipeline

    config = load_config(files)
    socket = None
    if not no_control:
        socket = Path(control) if control else default_socket(config)
    stop, reload_requested = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    return await run_pipeline(
        config,
        events=read_lines(input_path) if input_path is not None else None,
        stop=stop,
        reload_requested=reload_requested,
        watch=watch,
        control=socket,
        shutdown_timeout=shutdown_timeout,
    )


def control_socket(value: str | None) -> Path:
    """--control: a socket path, or a config file (the socket it runs with by
    default); without it, the config ``pipeline.yaml`` here."""
    from pipelines.config import load_config
    from pipelines.control import default_socket

    path = Path(value) if value is not None else Path("pipeline.yaml")
    if path.suffix in (".yaml", ".yml") or (path.is_file() and not path.is_socket()):
        return default_socket(load_config([path]))
    return path


def state_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config/-c`` and ``--state``, for commands that work on a pipeline's
    state database (running or not); resolve them with ``state_database``."""
    command = click.option(
        "--state", default=None, help="The state database (default: the config's)."
    )(command)
    return click.option(
        "--config",
        "-c",
        default=None,
        help="The pipeline's config file (default pipeline.yaml), to find its state database.",
    )(command)


async def until_signalled(work: Awaitable[None]) -> None:
    """Run ``work`` until it ends, or until SIGINT or SIGTERM (then cancel it:
    a clean end, exit code 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    working = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        stopping.cancel()
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working  # raises what the work raised (an unknown group...)


def state_database(config: str | None, state: str | None) -> Path:
    """The state database ``--config``/``--state`` name."""
    from pipelines.config import load_config

    if state is not None:
        return Path(state)
    path = Path(config) if config is not None else Path("pipeline.yaml")
    if config is None and not path.exists():
        raise PipelinesError(
            "which pipeline? give its config with --config FILE, or --state PATH"
            " (no pipeline.yaml here)"
        )
    found = load_config([path]).state
    if found is None:
        raise PipelinesError(f"{path} has no state database (state: false)")
    return found


CONTROL_OPTION = click.option(
    "--control",
    "-c",
    default=None,
    help="The running pipeline: its config file (default pipeline.yaml) or its control socket.",
)


@cli.command("put")
@click.argument("entries", nargs=-1)
@click.option("--input", "input_path", default=None, help="JSON-lines file of entries (- stdin).")
@CONTROL_OPTION
def put_command(entries: tuple[str, ...], input_path: str | None, control: str | None) -> None:
    """Put events into a running pipeline: each ENTRY is a PutEvents entry as
    JSON text (or give --input). Prints PutEvents' result; exit 1 when an
    entry failed."""
    from pipelines.control import put_events

    lines = list(entries)
    if input_path is not None:
        lines += read_argument(f"@{input_path}").splitlines()
    parsed = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"entry {number}: not JSON: {exc.msg}") from None
    if not parsed:
        raise click.UsageError("no entries: give ENTRY arguments or --input")
    result = asyncio.run(put_events(control_socket(control), parsed))
    click.echo(json.dumps(result, indent=2))
    if result["FailedEntryCount"]:
        raise SystemExit(1)


@cli.command("tap")
@click.option("--pattern", "-p", default=None, help="Only events matching this pattern (or @file).")
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@CONTROL_OPTION
def tap_command(pattern: str | None, count: int | None, control: str | None) -> None:
    """Print the events a running pipeline's buses accept, live, as JSON lines
    ({"bus": ..., "event": ...}), until interrupted or the pipeline stops."""
    from pipelines.control import tap

    try:
        parsed = json.loads(read_argument(pattern)) if pattern is not None else None
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--pattern is not JSON: {exc.msg}") from None

    socket = control_socket(control)

    async def follow() -> None:
        seen = 0
        async for message in tap(socket, parsed):
            if "tapping" in message:
                click.echo(f"tap: tapping {socket}", err=True)
                continue
            if "dropped" in message:
                click.echo(
                    f"tap: missed {message['dropped']} events (reading too slowly)", err=True
                )
                continue
            click.echo(json.dumps(message))
            sys.stdout.flush()  # live, also into a pipe
            seen += 1
            if count is not None and seen >= count:
                return

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tap ends
        asyncio.run(follow())


# -- archives and replays ------------------------------------------------------------


@cli.group("archive")
def archive_group() -> None:
    """Archives: the events a pipeline keeps for replays (read from its state database)."""


@archive_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON description per line.")
@state_options
def archive_list_command(as_json: bool, config: str | None, state: str | None) -> None:
    """List the archives with their event counts, sizes and time spans."""
    from pipelines.archive import read_archives

    archives = asyncio.run(read_archives(state_database(config, state)))
    if as_json:
        for described in archives:
            click.echo(json.dumps(described))
        return
    click.echo(f"{'NAME':<24} {'STATE':<9} {'EVENTS':>10} {'BYTES':>12}  OLDEST .. NEWEST")
    for a in archives:
        span = f"{a['OldestEventTime'] or '-'} .. {a['NewestEventTime'] or '-'}"
        click.echo(
            f"{a['ArchiveName']:<24} {a['State']:<9} {a['EventCount']:>10,}"
            f" {a['SizeBytes']:>12,}  {span}"
        )


@archive_group.command("describe")
@click.argument("name")
@state_options
def archive_describe_command(name: str, config: str | None, state: str | None) -> None:
    """DescribeArchive NAME, as JSON."""
    from pipelines.archive import read_archives

    [described] = asyncio.run(read_archives(state_database(config, state), name))
    click.echo(json.dumps(described, indent=2))


def _moment(value: str | None, option: str, default: float) -> float:
    """An RFC 3339 time or epoch seconds, as epoch seconds."""
    from pipelines.event import parse_time

    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_time(value).timestamp()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@cli.group("replay")
def replay_group() -> None:
    """Replays: archived events put on a running pipeline's bus again."""


@replay_group.command("start")
@click.argument("name")
@click.option("--archive", "-a", required=True, help="The archive to replay from.")
@click.option("--from", "start", default=None, help="Event time to start at (default: 0).")
@click.option("--to", "end", default=None, help="Event time to end before (default: now).")
@click.option("--bus", default="default", show_default=True, help="The destination bus.")
@click.option("--rule", "rules", multiple=True, help="Only to this rule (repeatable).")
@click.option("--speed", type=float, default=None, help="Original pace times this factor.")
@click.option("--description", default="", help="A description of the replay.")
@click.option("--no-wait", is_flag=True, help="Return once started, without following it.")
@CONTROL_OPTION
def replay_start_command(
    name: str,
    archive: str,
    start: str | None,
    end: str | None,
    bus: str,
    rules: tuple[str, ...],
    speed: float | None,
    description: str,
    no_wait: bool,
    control: str | None,
) -> None:
    """Start replay NAME in the running pipeline and follow it to its end: a
    progress bar on a terminal, a line a second otherwise; then its description
    as JSON. Exit 1 when it did not complete. Times are RFC 3339 or epoch seconds."""
    from pipelines import control as channel

    socket = control_socket(control)
    options = {
        "start": _moment(start, "--from", 0.0),
        "end": _moment(end, "--to", time.time()),
        "bus": bus,
        "rules": list(rules) or None,
        "speed": speed,
        "description": description,
    }
    started = asyncio.run(channel.start_replay(socket, name, archive, **options))
    if no_wait:
        click.echo(json.dumps(started, indent=2))
        return
    final = asyncio.run(_follow_replay(socket, name))
    click.echo(json.dumps(final, indent=2))
    if final["State"] != "COMPLETED":
        raise SystemExit(1)


async def _follow_replay(socket: Path, name: str) -> dict[str, Any]:
    """Poll the replay until it ends, showing its progress on stderr."""
    from pipelines import control as channel

    ended = ("COMPLETED", "CANCELLED", "FAILED")
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(name, total=None)
            while (described := await channel.describe_replay(socket, name))["State"] not in ended:
                bar.update(
                    task, total=described["EventsTotal"], completed=described["EventsReplayed"]
                )
                await asyncio.sleep(0.2)
            bar.update(task, total=described["EventsTotal"], completed=described["EventsReplayed"])
            return described
    while True:
        described = await channel.describe_replay(socket, name)
        click.echo(
            f"replay {name}: {described['State']} {described['EventsReplayed']}"
            f"/{described['EventsTotal']} events,"
            f" last event time {described['EventLastReplayedTime'] or '-'}",
            err=True,
        )
        if described["State"] in ended:
            return described
        await asyncio.sleep(1.0)


@replay_group.command("status")
@click.argument("name", required=False)
@state_options
def replay_status_command(name: str | None, config: str | None, state: str | None) -> None:
    """DescribeReplay NAME (or every replay, one per line), as JSON, from the
    state database: also for a pipeline that is not running."""
    from pipelines.replay import replay_status

    replays = asyncio.run(replay_status(state_database(config, state), name))
    if name is not None:
        click.echo(json.dumps(replays[0], indent=2))
        return
    for described in replays:
        click.echo(json.dumps(described))


@replay_group.command("cancel")
@click.argument("name")
@CONTROL_OPTION
def replay_cancel_command(name: str, control: str | None) -> None:
    """CancelReplay NAME in the running pipeline."""
    from pipelines.control import cancel_replay

    click.echo(json.dumps(asyncio.run(cancel_replay(control_socket(control), name)), indent=2))


# -- metrics and alarms ---------------------------------------------------------------

_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """A one-line chart: a block per value, scaled from the smallest to the
    largest; a blank where a period has no data."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low or 1.0
    return "".join(
        " " if v is None else _SPARKS[round((v - low) / span * (len(_SPARKS) - 1))] for v in values
    )


def _duration(value: str) -> float:
    """'90', '90s', '15m', '2h', '3d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
    try:
        if value[-1:] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a duration such as 90s, 15m, 2h or 3d", param_hint="--since"
        ) from None


def _dimensions(pairs: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--dimension")
        found[name] = value
    return found


@cli.group("metrics")
def metrics_group() -> None:
    """Metrics: the data in a pipeline's metric store (the bus's own under Pipelines/Events)."""


@metrics_group.command("list")
@click.option("--namespace", default=None, help="Only this namespace.")
@state_options
def metrics_list_command(namespace: str | None, config: str | None, state: str | None) -> None:
    """ListMetrics: one JSON object per metric."""
    from pipelines.metrics import read_metrics

    for metric in asyncio.run(read_metrics(state_database(config, state), namespace)):
        click.echo(json.dumps(metric))


@metrics_group.command("get")
@click.argument("namespace")
@click.argument("name")
@click.option("--dimension", "-d", "dimension", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--stat", default="Average", show_default=True, help="Statistic or pNN.N.")
@click.option("--period", type=int, default=60, show_default=True, help="Seconds per datapoint.")
@click.option("--since", default="1h", show_default=True, help="How far back: 90s, 15m, 2h, 3d.")
@click.option("--json", "as_json", is_flag=True, help="The GetMetricStatistics answer as JSON.")
@state_options
def metrics_get_command(
    namespace: str,
    name: str,
    dimension: tuple[str, ...],
    stat: str,
    period: int,
    since: str,
    as_json: bool,
    config: str | None,
    state: str | None,
) -> None:
    """GetMetricStatistics for one metric: a line per period with data, and on
    a terminal a sparkline of the whole window."""
    from pipelines.event import format_epoch
    from pipelines.metrics import STATISTICS, read_metric_statistics

    now = time.time()
    start = now - _duration(since)
    extended = stat not in STATISTICS
    answer = asyncio.run(
        read_metric_statistics(
            state_database(config, state),
            namespace,
            name,
            _dimensions(dimension),
            start=start,
            end=now,
            period=period,
            statistics=[] if extended else [stat],
            extended_statistics=[stat] if extended else [],
        )
    )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    points = answer["Datapoints"]

    def value(point: dict[str, Any]) -> float | None:
        found = point.get("ExtendedStatistics", {}).get(stat) if extended else point.get(stat)
        return None if found is None else float(found)

    if sys.stdout.isatty():
        by_time = {point["Timestamp"]: value(point) for point in points}
        first = int(start // 60 * 60)
        slots = [first + k * period for k in range(int((now - first) // period) + 1)]
        series = [by_time.get(format_epoch(moment, "seconds")) for moment in slots]
        known = [v for v in series if v is not None]
        if known:
            click.echo(f"{sparkline(series)}  {stat} min {min(known):g} max {max(known):g}")
    for point in points:
        shown = value(point)
        click.echo(f"{point['Timestamp']}  {'-' if shown is None else f'{shown:g}'}")
    if not points:
        click.echo(f"no data for {namespace} {name} in the last {since}", err=True)


@cli.group("alarms")
def alarms_group() -> None:
    """Alarms: their states and history (from the state database), and set-state."""


@alarms_group.command("list")
@click.option(
    "--state-value",
    type=click.Choice(["OK", "ALARM", "INSUFFICIENT_DATA"]),
    default=None,
    help="Only alarms in this state.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON description per line.")
@state_options
def alarms_list_command(
    state_value: str | None, as_json: bool, config: str | None, state: str | None
) -> None:
    """DescribeAlarms: each alarm's state and the reason for it."""
    from pipelines.alarms import read_alarms

    alarms = asyncio.run(read_alarms(state_database(config, state)))
    alarms = [a for a in alarms if state_value is None or a["StateValue"] == state_value]
    if as_json:
        for described in alarms:
            click.echo(json.dumps(described))
        return
    click.echo(f"{'NAME':<32} {'STATE':<17} {'SINCE':<24} REASON")
    for a in alarms:
        click.echo(
            f"{a['AlarmName']:<32} {a['StateValue']:<17} {a['StateUpdatedTimestamp']:<24}"
            f" {a['StateReason']}"
        )


@alarms_group.command("describe")
@click.argument("name")
@state_options
def alarms_describe_command(name: str, config: str | None, state: str | None) -> None:
    """DescribeAlarms for NAME, as JSON."""
    from pipelines.alarms import read_alarms

    found = asyncio.run(read_alarms(state_database(config, state), name))
    if not found:
        raise PipelinesError(f"no alarm named {name!r} in {state_database(config, state)}")
    click.echo(json.dumps(found[0], indent=2))


@alarms_group.command("history")
@click.argument("name", required=False)
@click.option("-n", "limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON history item per line.")
@state_options
def alarms_history_command(
    name: str | None, limit: int, as_json: bool, config: str | None, state: str | None
) -> None:
    """DescribeAlarmHistory: state updates, newest first."""
    from pipelines.alarms import read_alarm_history

    for item in asyncio.run(read_alarm_history(state_database(config, state), name, limit)):
        if as_json:
            click.echo(json.dumps(item))
        else:
            click.echo(f"{item['Timestamp']}  {item['AlarmName']}  {item['HistorySummary']}")


@alarms_group.command("set-state")
@click.argument("name")
@click.option(
    "--state-value", required=True, type=click.Choice(["OK", "ALARM", "INSUFFICIENT_DATA"])
)
@click.option("--reason", required=True, help="The state reason to record.")
@click.option("--reason-data", default=None, help="JSON reason data.")
@CONTROL_OPTION
def alarms_set_state_command(
    name: str, state_value: str, reason: str, reason_data: str | None, control: str | None
) -> None:
    """SetAlarmState in the running pipeline, until the alarm's next evaluation
    (to try the routes and actions of its state-change events)."""
    from pipelines.control import set_alarm_state

    described = asyncio.run(
        set_alarm_state(control_socket(control), name, state_value, reason, reason_data)
    )
    click.echo(json.dumps(described, indent=2))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
