"""The ``pipelines`` command line: a thin layer over the library's public functions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipelines import __version__
from pipelines.clikit import (
    LazyCommand,
    echo_output,
    echo_table,
    output_option,
    parse_pairs,
    printing_items,
    read_argument,
    state_options,
    state_path,
    streaming_output_option,
    until_signalled,
)
from pipelines.errors import (
    ConfigError,
    ConfigInvalid,
    EventValidationError,
    PatternError,
    PipelinesError,
)

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig
    from pipelines.runner import RunReport


# Plugins take the shared pieces from pipelines.clikit.
__all__ = ["cli", "main"]


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A click error (a bad option, a missing argument) as one line on stderr,
    as every other error is, instead of click's usage block."""
    try:
        yield
    except click.UsageError as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None


#: Set by ``run --debug``: show the traceback of an unexpected error too.
_debugging = False


def _traceback_wanted() -> bool:
    return _debugging or bool(os.environ.get("PIPELINES_DEBUG"))


def _one_line(exc: BaseException) -> str:
    """An unexpected error as one line: its type (a MemoryError says nothing
    else) and its message's lines joined."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Commands(click.Group):
    """Every command: an error is one line on stderr and a non-zero exit, not a
    traceback (set PIPELINES_DEBUG=1, or pass run --debug, for the traceback
    of a ``PipelinesError``)."""

    _plugin_commands = False

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """The last resort: an error no command expected (a bug, an OSError,
        a RecursionError, a MemoryError) is one line and exit 1, as any other
        error. Each known cause is reported where it happens; this only keeps
        one that is not from ending in a traceback. It is here, not in
        ``main``, because the ``pipelines`` script calls ``cli`` itself."""
        try:
            return super().main(*args, **kwargs)
        except Exception as exc:  # SystemExit and KeyboardInterrupt are not caught
            if _traceback_wanted():
                raise
            click.echo(
                f"error: unexpected {_one_line(exc)} (set PIPELINES_DEBUG=1 to see the traceback)",
                err=True,
            )
            raise SystemExit(1) from None

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands:
            return
        self._plugin_commands = True
        from pipelines.pluginmanager import get_plugin_manager

        built_in = dict(self.commands)
        get_plugin_manager().hook.register_commands(cli=self)
        self.commands.update(built_in)  # a plugin cannot replace a built-in command

    #: True while ``--help`` lists the commands: a ``LazyCommand`` is listed
    #: from its summary, not imported.
    _listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._add_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        if isinstance(command, LazyCommand) and not self._listing:
            command = self.commands[cmd_name] = command.load()
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(
        self, ctx: click.Context, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        # Completing a command's name lists names and summaries, as --help
        # does: from the lazy commands, so a TAB imports no command (every
        # plugin's CLI took about 1.5 s). Completing inside a command looks
        # it up by name (``resolve_command``): that one is imported.
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        with contextlib.suppress(PipelinesError):  # a broken plugin says so when used
            self._add_plugin_commands()
        return super().list_commands(ctx)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _one_line_errors():  # the top level's own options: pipelines --bogus
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> object:
        with _one_line_errors():  # the subcommands' options and arguments
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
@click.option(
    "--explain", is_flag=True, help="Say why: each $or branch's failing fields and conditions."
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["json", "jsonl", "table"]),
    default="table",
    show_default=True,
    help="With --explain: the reasons as text (table) or as JSON.",
)
def test_pattern(pattern: str, event: str, explain: bool, output: str) -> None:
    """Test an event against an event pattern, like `aws events test-event-pattern`.

    Prints true (exit 0) or false (exit 1); an invalid pattern or event is
    reported on stderr with exit 2. With --explain, the reasons follow: for
    each branch of the pattern (its $or alternatives), each field whose
    conditions the event fails, with the event's values there.
    """
    from pipelines.patterns import evaluate_pattern, explain_pattern

    try:
        if explain:
            explanation = explain_pattern(read_argument(pattern), read_argument(event))
            matched = explanation.matched
        else:
            matched = evaluate_pattern(read_argument(pattern), read_argument(event))
    except PatternError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except EventValidationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(2) from None
    if explain and output != "table":
        echo_output(explanation.to_json(), output)
    elif explain:
        click.echo("\n".join(explanation.lines()))
    else:
        click.echo("true" if matched else "false")
    raise SystemExit(0 if matched else 1)


@cli.command("plugins")
@output_option
def plugins_command(output: str) -> None:
    """List the loaded plugins: version, hooks and target types.

    PIPELINES_LOAD_PLUGINS limits the external plugins loaded: empty for
    built-ins only, or a comma-separated list of plugin names.
    """
    from pipelines.pluginmanager import list_plugins

    listing = [
        {
            "name": info.name,
            "version": info.version,
            "distribution": info.distribution,
            "builtin": info.builtin,
            "hooks": list(info.hooks),
            "targets": list(info.targets),
        }
        for info in list_plugins()
    ]
    echo_output(listing, output)


@cli.command("schema")
@output_option
def schema_command(output: str) -> None:
    """Print the JSON Schema of pipeline configs (with the installed target types)."""
    from pipelines.schema import config_schema

    echo_output(config_schema(), output)


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
@output_option
def schedule_next(
    expression: str, timezone: str | None, count: int, after: datetime | None, output: str
) -> None:
    """Print the next firings of EXPRESSION: a list of ISO 8601 times.

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
    echo_output([firing.isoformat() for firing in firings], output, column="Time")


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
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="With --input: seconds to wait, once the input is in, for retries to come due;"
    " retries due later are saved (with a state database) for the next run.",
)
@click.option("--watch", is_flag=True, help="Reload the config when a file of it changes.")
@click.option(
    "--control",
    default=None,
    help="Control socket for put and tap (default: control.sock beside the state database).",
)
@click.option("--no-control", is_flag=True, help="Do not listen for put and tap.")
@click.option(
    "--api",
    "api",
    default=None,
    metavar="HOST:PORT",
    help="Serve AWS's APIs (events, ...) on HOST:PORT for boto3, the AWS CLI and the SDKs,"
    " and /metrics, /health, /ready"
    " (`:PORT` listens on 127.0.0.1; port 0 picks a free one and logs it).",
)
@click.option(
    "--console",
    is_flag=True,
    help="Serve the web console on the --api port (127.0.0.1:0 without one);"
    " its login link, with a token, is logged at start.",
)
@click.option(
    "--runner",
    default=None,
    help="This runner's name among the runners sharing a PostgreSQL state"
    " (default: the host and the pid).",
)
@click.option(
    "--cloudformation",
    is_flag=True,
    help="FILES are CloudFormation or SAM templates: run what they import to.",
)
@click.option(
    "--parameter",
    "parameters",
    multiple=True,
    metavar="NAME=VALUE",
    help="With --cloudformation: a template parameter's value (repeatable).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def run_command(
    files: tuple[str, ...],
    input_path: str | None,
    log_format: str,
    log_level: str,
    shutdown_timeout: float,
    max_wait: float,
    watch: bool,
    control: str | None,
    no_control: bool,
    api: str | None,
    console: bool,
    runner: str | None,
    cloudformation: bool,
    parameters: tuple[str, ...],
    debug: bool,
) -> None:
    """Run the pipeline in FILES until SIGINT or SIGTERM (or until --input is delivered).

    SIGHUP (or, with --watch, a change to FILES) reloads the config in place:
    a config with problems is refused and the running one kept.
    """
    from pipelines.logs import configure_logging
    from pipelines.process import tuned_process

    global _debugging
    _debugging = debug
    configure_logging(log_format, log_level)
    try:
        with tuned_process():
            report = asyncio.run(
                _run(
                    list(files),
                    input_path,
                    shutdown_timeout,
                    max_wait,
                    watch,
                    control,
                    no_control,
                    api,
                    runner,
                    console,
                    _template_parameters(parameters) if cloudformation else None,
                )
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
    if input_path is not None:
        click.echo(f"run: {report.summary()}", err=True)
    if report.failed:
        source = input_path if input_path not in (None, "-") else "<stdin>"
        for line, code, message in report.failed:
            click.echo(f"{source}:{line}: {code}: {message}", err=True)
        raise SystemExit(1)


async def _run(
    files: list[str],
    input_path: str | None,
    shutdown_timeout: float,
    max_wait: float,
    watch: bool,
    control: str | None,
    no_control: bool,
    api: str | None,
    runner: str | None,
    console: bool = False,
    template_parameters: dict[str, str] | None = None,
) -> RunReport:
    from pipelines.config import load_config
    from pipelines.control import default_socket
    from pipelines.runner import read_lines, run_pipeline

    if template_parameters is not None:
        config = _imported_config(files, template_parameters)
    else:
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
        api=api,
        shutdown_timeout=shutdown_timeout,
        max_wait=max_wait,
        runner=runner,
        console=console,
    )


def _template_parameters(pairs: tuple[str, ...]) -> dict[str, str]:
    from pipelines.cloudformation.cli import parameters_of

    return parameters_of(pairs)


def _imported_config(files: list[str], parameters: dict[str, str]) -> PipelineConfig:
    """``run --cloudformation``: the templates' config, the report on stderr."""
    from pipelines.cloudformation import config_for_run

    config, imported = config_for_run(files, parameters=parameters)
    for row in imported.rows:
        click.echo(f"{row.resource} ({row.type}): {row.status}: {row.detail}", err=True)
    for output in imported.outputs:
        click.echo(f"output {output.name}: {output.value}", err=True)
    return config


def control_socket(config: str | None, control: str | None) -> Path:
    """The socket of the running pipeline ``--config``/``--control`` name:
    --control is a socket path or a config file, --config a config file (the
    socket it runs with by default); without either, the config
    ``pipeline.yaml`` here."""
    from pipelines.config import load_config
    from pipelines.control import default_socket

    if config is not None and control is not None:
        raise click.UsageError("give --config or --control, not both")
    value = control if control is not None else config
    path = Path(value) if value is not None else Path("pipeline.yaml")
    named_config = config is not None or path.suffix in (".yaml", ".yml")
    if named_config or (path.is_file() and not path.is_socket()):
        return default_socket(load_config([path]))
    return path


def control_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config/-c`` and ``--control``, for commands that talk to a running
    pipeline; resolve them with ``control_socket``. (-c is --config on every
    command: here the config names the socket the pipeline listens on.)"""
    command = click.option(
        "--control",
        default=None,
        help="The running pipeline's control socket (or its config file).",
    )(command)
    return click.option(
        "--config",
        "-c",
        default=None,
        help="The running pipeline's config file (default pipeline.yaml), to find its socket.",
    )(command)


@cli.command("put")
@click.argument("entries", nargs=-1)
@click.option("--input", "input_path", default=None, help="JSON-lines file of entries (- stdin).")
@control_options
@output_option
def put_command(
    entries: tuple[str, ...],
    input_path: str | None,
    config: str | None,
    control: str | None,
    output: str,
) -> None:
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
    result = asyncio.run(put_events(control_socket(config, control), parsed))
    echo_output(result, output)
    if result["FailedEntryCount"]:
        raise SystemExit(1)


@cli.command("top")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--sort",
    type=click.Choice(
        ["matched", "delivered", "failed", "dead_lettered", "in_flight", "pending_retries", "name"]
    ),
    default="failed",
    show_default=True,
    help="The column sorted by at first (keys change it).",
)
@control_options
def top_command(interval: float, sort: str, config: str | None, control: str | None) -> None:
    """A live view of a running pipeline, per rule and target: rates of matched,
    delivered, failed and dead-lettered events, in flight, queued, retries
    waiting, and the last error. Keys sort (m d f l i r n); q quits."""
    from pipelines.top import run_top

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_top(control_socket(config, control), interval=interval, sort=sort))


@cli.command("tap")
@click.option("--pattern", "-p", default=None, help="Only events matching this pattern (or @file).")
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@control_options
@streaming_output_option
def tap_command(
    pattern: str | None,
    count: int | None,
    config: str | None,
    control: str | None,
    output: str,
) -> None:
    """Print the events a running pipeline's buses accept, live ({"bus": ...,
    "event": ...} each), until interrupted or the pipeline stops."""
    from pipelines.control import tap

    try:
        parsed = json.loads(read_argument(pattern)) if pattern is not None else None
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--pattern is not JSON: {exc.msg}") from None

    socket = control_socket(config, control)

    async def follow() -> None:
        with printing_items(output, live=True) as printer:
            async for message in tap(socket, parsed):
                if "tapping" in message:
                    click.echo(f"tap: tapping {socket}", err=True)
                    continue
                if "dropped" in message:
                    click.echo(
                        f"tap: missed {message['dropped']} events (reading too slowly)", err=True
                    )
                    continue
                if not printer.write(message) or printer.count == count:
                    return

    # Ctrl-C (or SIGTERM) is how a tap ends: a clean end, json's array closed.
    asyncio.run(until_signalled(follow()))


# -- archives and replays ------------------------------------------------------------


@cli.group("state")
def state_group() -> None:
    """The state database: its stores' versions, and migrating them forward."""


#: What ``state info --output table`` shows of each store.
STATE_COLUMNS = ("store", "version", "known", "status")


@state_group.command("info")
@state_options
@output_option
def state_info_command(config: str | None, state: str | None, output: str) -> None:
    """The state database's engine and each store's version (changes nothing)."""
    from pipelines.migrations import state_info

    info = asyncio.run(state_info(state_path(config, state)))
    if output == "table":
        caption = f"{info['state']} ({info['engine']})"
        echo_output(info["stores"], output, columns=STATE_COLUMNS, caption=caption)
    else:
        echo_output(info, output)


@state_group.command("migrate")
@state_options
@output_option
def state_migrate_command(config: str | None, state: str | None, output: str) -> None:
    """Bring every store of the state database that is behind to this version."""
    from pipelines.migrations import migrate_state

    migration = asyncio.run(migrate_state(state_path(config, state)))
    echo_output(migration.done, output, columns=("store", "from", "to"), caption=migration.summary)


@cli.group("archive")
def archive_group() -> None:
    """Archives: the events a pipeline keeps for replays (read from its state database)."""


#: What ``archive list --output table`` shows of each archive.
ARCHIVE_COLUMNS = (
    "ArchiveName",
    "State",
    "EventCount",
    "SizeBytes",
    "OldestEventTime",
    "NewestEventTime",
)


@archive_group.command("list")
@state_options
@output_option
def archive_list_command(config: str | None, state: str | None, output: str) -> None:
    """List the archives with their event counts, sizes and time spans."""
    from pipelines.archive import read_archives

    archives = asyncio.run(read_archives(state_path(config, state)))
    echo_output(archives, output, columns=ARCHIVE_COLUMNS)


@archive_group.command("describe")
@click.argument("name")
@state_options
@output_option
def archive_describe_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """DescribeArchive NAME."""
    from pipelines.archive import read_archives

    [described] = asyncio.run(read_archives(state_path(config, state), name))
    echo_output(described, output)


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
@control_options
@output_option
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
    config: str | None,
    control: str | None,
    output: str,
) -> None:
    """Start replay NAME in the running pipeline and follow it to its end: a
    progress bar on a terminal, a line a second otherwise (on stderr); then
    print its description. Exit 1 when it did not complete. Times are RFC
    3339 or epoch seconds."""
    from pipelines import control as channel

    socket = control_socket(config, control)
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
        echo_output(started, output)
        return
    final = asyncio.run(_follow_replay(socket, name))
    echo_output(final, output)
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
@output_option
def replay_status_command(
    name: str | None, config: str | None, state: str | None, output: str
) -> None:
    """DescribeReplay NAME (or a list of every replay), from the state
    database: also for a pipeline that is not running."""
    from pipelines.replay import replay_status

    replays = asyncio.run(replay_status(state_path(config, state), name))
    echo_output(replays[0] if name is not None else replays, output)


@replay_group.command("cancel")
@click.argument("name")
@control_options
@output_option
def replay_cancel_command(name: str, config: str | None, control: str | None, output: str) -> None:
    """CancelReplay NAME in the running pipeline."""
    from pipelines.control import cancel_replay

    echo_output(asyncio.run(cancel_replay(control_socket(config, control), name)), output)


# -- metrics and alarms ---------------------------------------------------------------


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


@cli.group("metrics")
def metrics_group() -> None:
    """Metrics: the data in a pipeline's metric store (the bus's own under Pipelines/Events)."""


@metrics_group.command("list")
@click.option("--namespace", default=None, help="Only this namespace.")
@state_options
@output_option
def metrics_list_command(
    namespace: str | None, config: str | None, state: str | None, output: str
) -> None:
    """ListMetrics: the metrics with data."""
    from pipelines.metrics import read_metrics

    echo_output(asyncio.run(read_metrics(state_path(config, state), namespace)), output)


@metrics_group.command("get")
@click.argument("namespace")
@click.argument("name")
@click.option("--dimension", "-d", "dimension", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--stat", default="Average", show_default=True, help="Statistic or pNN.N.")
@click.option(
    "--period",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds per datapoint (default: what fits the terminal's width).",
)
@click.option("--since", default="1h", show_default=True, help="How far back: 90s, 15m, 2h, 3d.")
@click.option(
    "--png",
    "png",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also draw the chart into this PNG file (needs matplotlib: pipelines[charts]).",
)
@state_options
@output_option
def metrics_get_command(
    namespace: str,
    name: str,
    dimension: tuple[str, ...],
    stat: str,
    period: int | None,
    since: str,
    png: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """GetMetricStatistics for one metric. As a table: a row per period with
    data, and on a terminal a chart of the whole window under it (value axis
    on the left, UTC times under it). Without --period, the period is the
    shortest of 1, 2, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours or days
    whose points fit the terminal's width."""
    from pipelines.charts import choose_period, slots, text_chart, write_png
    from pipelines.event import format_epoch
    from pipelines.metrics import STATISTICS, read_metric_statistics

    now = time.time()
    window = _duration(since)
    start = now - window
    columns = shutil.get_terminal_size((80, 24)).columns
    chart_width = max(columns - 14, 10)  # the value axis's labels take the rest
    if period is None:
        period = choose_period(window, chart_width)
    extended = stat not in STATISTICS
    answer = asyncio.run(
        read_metric_statistics(
            state_path(config, state),
            namespace,
            name,
            parse_pairs(dimension, "--dimension", typed=False),
            start=start,
            end=now,
            period=period,
            statistics=[] if extended else [stat],
            extended_statistics=[stat] if extended else [],
        )
    )
    points = answer["Datapoints"]
    if not points:
        click.echo(f"no data for {namespace} {name} in the last {since}", err=True)

    def value(point: dict[str, Any]) -> float | None:
        found = point.get("ExtendedStatistics", {}).get(stat) if extended else point.get(stat)
        return None if found is None else float(found)

    by_time = {point["Timestamp"]: value(point) for point in points}
    moments = slots(start, now, period)
    series = [by_time.get(format_epoch(moment, "seconds")) for moment in moments]
    label = f"{namespace} {name} {stat} per {_period_text(period)}, last {since}"
    if png is not None:
        write_png(Path(png), moments, series, title=label, ylabel=stat, span=(start, now))
    if output != "table":
        echo_output(answer, output)
        return
    rows = [{"Timestamp": point["Timestamp"], stat: value(point)} for point in points]
    echo_table(rows, ["Timestamp", stat])
    if sys.stdout.isatty() and points:
        click.echo("\n".join(text_chart(moments, series, label=label)))


def _period_text(period: int) -> str:
    for unit, seconds in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if period % seconds == 0:
            return f"{period // seconds} {unit}"
    return f"{period} s"


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
@state_options
@output_option
def alarms_list_command(
    state_value: str | None, config: str | None, state: str | None, output: str
) -> None:
    """DescribeAlarms: each alarm's state and the reason for it."""
    from pipelines.alarms import read_alarms

    alarms = asyncio.run(read_alarms(state_path(config, state)))
    alarms = [a for a in alarms if state_value is None or a["StateValue"] == state_value]
    columns = ("AlarmName", "StateValue", "StateUpdatedTimestamp", "StateReason")
    echo_output(alarms, output, columns=columns)


@alarms_group.command("describe")
@click.argument("name")
@state_options
@output_option
def alarms_describe_command(name: str, config: str | None, state: str | None, output: str) -> None:
    """DescribeAlarms for NAME."""
    from pipelines.alarms import read_alarms

    path = state_path(config, state)
    found = asyncio.run(read_alarms(path, name))
    if not found:
        raise PipelinesError(f"no alarm named {name!r} in {path}")
    echo_output(found[0], output)


@alarms_group.command("history")
@click.argument("name", required=False)
@click.option("-n", "limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@state_options
@output_option
def alarms_history_command(
    name: str | None, limit: int, config: str | None, state: str | None, output: str
) -> None:
    """DescribeAlarmHistory: state updates, newest first."""
    from pipelines.alarms import read_alarm_history

    history = asyncio.run(read_alarm_history(state_path(config, state), name, limit))
    echo_output(history, output, columns=("Timestamp", "AlarmName", "HistorySummary"))


@alarms_group.command("set-state")
@click.argument("name")
@click.option(
    "--state-value", required=True, type=click.Choice(["OK", "ALARM", "INSUFFICIENT_DATA"])
)
@click.option("--reason", required=True, help="The state reason to record.")
@click.option("--reason-data", default=None, help="JSON reason data.")
@control_options
@output_option
def alarms_set_state_command(
    name: str,
    state_value: str,
    reason: str,
    reason_data: str | None,
    config: str | None,
    control: str | None,
    output: str,
) -> None:
    """SetAlarmState in the running pipeline, until the alarm's next evaluation
    (to try the routes and actions of its state-change events)."""
    from pipelines.control import set_alarm_state

    described = asyncio.run(
        set_alarm_state(control_socket(config, control), name, state_value, reason, reason_data)
    )
    echo_output(described, output)


#: Built-in commands imported when used: pipelines.cloudformation imports the
#: whole config layer, which no other command's start needs.
LAZY_COMMANDS = (
    LazyCommand(
        "import",
        "pipelines.cloudformation.cli:import_command",
        "Import CloudFormation or SAM TEMPLATES (YAML or JSON; several: in the order"
        " given, a later one may Fn::ImportValue an earlier one's exports) as a"
        " pipeline config.",
    ),
    LazyCommand(
        "export",
        "pipelines.cloudformation.cli:export_command",
        "Export pipeline CONFIGS (merged) as the CloudFormation template they correspond to.",
    ),
)
for _command in LAZY_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
