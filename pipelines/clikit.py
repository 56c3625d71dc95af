"""The toolkit of the ``pipelines`` command line, for its own commands and plugins'.

One way to do what every command does: find a pipeline's state database
(``state_options``, ``state_path``, ``with_store``), read ``KEY=VALUE`` pairs
(``parse_pairs``) and print what it answers (``output_option``,
``echo_output``, ``ItemPrinter``).

The output convention: every command that prints data takes ``--output/-o``
``json|jsonl|table``.

- ``json`` (the default): one JSON document, indented: an object for one
  thing, an array for a list.
- ``jsonl``: one compact JSON value a line: each element of a list, or the
  one object.
- ``table``: a table for reading: a list of objects as rows, one object as
  key/value rows; nested values as compact JSON.

Streaming commands (those that print items as they come: ``tap``,
``stream read``, ``logs tail``) print each item as it arrives in every
format, and default to ``jsonl``; their ``json`` is one array, closed when
the command ends. Messages for a person (progress, "no data") go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pipelines.errors import PipelinesError, PluginError
from pipelines.store import Location, Store, existing, location_of

T = TypeVar("T")
Command = TypeVar("Command", bound=Callable[..., Any])

OUTPUT_FORMATS = ("json", "jsonl", "table")


# -- commands imported when used ------------------------------------------------


class LazyCommand(click.Command):
    """A command known by its name and summary until it is used, then imported
    from ``target`` (``"package.module:attribute"``), so a ``pipelines`` run
    imports only the commands it runs: ``pipelines --help`` lists this one
    from the summary alone.

    ``summary`` must be the first sentence of the real command's help (or its
    ``short_help``), so the listing is the same either way; ``hidden`` as the
    real command's. The ``pipelines`` group swaps the real command in the
    first time it looks one up by name (``cli.get_command``), so everything
    but the listing (running it, its ``--help``, walking the command tree)
    sees the real command. In another group it still runs: ``make_context``
    is the real command's. For a plugin's ``register_commands``::

        cli.add_command(LazyCommand("queue", "plugins.queue.cli:queue_group",
                                    "Durable queues with SQS's semantics, ..."))
    """

    def __init__(self, name: str, target: str, summary: str, *, hidden: bool = False) -> None:
        super().__init__(name, help=summary, hidden=hidden, add_help_option=False)
        self.target = target
        self._loaded: click.Command | None = None

    def load(self) -> click.Command:
        """The real command: ``target`` imported (once), checked to be a command
        of this name."""
        if self._loaded is None:
            self._loaded = self._import()
        return self._loaded

    def _import(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module_name), attribute, None)
        if not isinstance(found, click.Command):
            raise PluginError(f"command {self.name!r}: {self.target} is not a click command")
        if found.name != self.name:
            raise PluginError(f"command {self.name!r}: {self.target} is the command {found.name!r}")
        return found

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        return self.load().make_context(info_name, args, parent, **extra)


# -- where the state is ---------------------------------------------------------


def state_options(command: Command) -> Command:
    """``--config/-c`` and ``--state``, for commands that work on a pipeline's
    state database (running or not); resolve them with ``state_path`` or
    ``with_store``."""
    command = click.option(
        "--state", default=None, help="The state database (default: the config's)."
    )(command)
    return click.option(
        "--config",
        "-c",
        default=None,
        help="The pipeline's config file (default pipeline.yaml), to find its state database.",
    )(command)


def state_database(config: str | None, state: str | None) -> Location:
    """The state database ``--config``/``--state`` name (it may not exist
    yet): a SQLite file, or a PostgreSQL URL."""
    from pipelines.config import load_config

    if state is not None:
        return location_of(state)
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


def state_path(config: str | None, state: str | None, *, create: bool = False) -> Location:
    """The state database ``--config``/``--state`` name. It must exist unless
    ``create``: a mistyped --state must fail, not leave an empty database behind."""
    path = state_database(config, state)
    return path if create else existing(path)


S = TypeVar("S", bound=Store)


def with_store(
    store_type: type[S],
    config: str | None,
    state: str | None,
    call: Callable[[S], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    """Open the ``store_type`` store (e.g. ``QueueStore``) of the state database
    ``--config``/``--state`` name, run ``call`` on it and close it. Only
    ``create`` (the commands that create things) may make a new database; the
    others open one that exists (``Store.existing``), or fail naming the path."""
    # Store.existing checks that the database exists (the same one-line error
    # as state_path), in the same step as opening it.
    path = state_database(config, state)

    async def run() -> T:
        if create:  # a new database, or an existing one's tables as they are
            store = await store_type.open(path, migrate=False)
            try:
                return await call(store)
            finally:
                await store.close()
        async with store_type.existing(path) as existing_store:
            return await call(existing_store)

    return asyncio.run(run())


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


# -- what the user gives ---------------------------------------------------------


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


def parse_pairs(pairs: Sequence[str], option: str, *, typed: bool = True) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict. With ``typed``, a VALUE that is JSON
    (a number, an object) is parsed; without, every VALUE stays text (metric
    dimensions: "1" is not 1)."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        parsed[key] = value
        if typed:
            with contextlib.suppress(json.JSONDecodeError):
                parsed[key] = json.loads(value)
    return parsed


# -- what a command prints ---------------------------------------------------------


def _output_option(default: str, command: Command) -> Command:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUT_FORMATS),
        default=default,
        show_default=True,
        help="json: one indented document; jsonl: a compact JSON value a line;"
        " table: a table for reading.",
    )(command)


def output_option(command: Command) -> Command:
    """``--output/-o json|jsonl|table`` (default json), for a command that
    prints its answer once it has it."""
    return _output_option("json", command)


def streaming_output_option(command: Command) -> Command:
    """``--output/-o`` for a command that prints items as they come (default
    jsonl: a line an item is what a pipe, or a person following, wants)."""
    return _output_option("jsonl", command)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text as the CLI prints it: UTF-8 kept, anything else as its str()."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def cell(value: Any) -> str:
    """A value as a table cell: text as it is, nested values as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return to_json(value)


def _console() -> Any:
    """A rich console on stdout. Off a terminal it has no width limit (a
    pipe or file gets whole rows, not rows wrapped at 80 columns) and no colour."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=1_000_000, no_color=True, color_system=None)


def echo_table(
    rows: Sequence[Any],
    columns: Sequence[str] | None = None,
    *,
    column: str = "value",
    caption: str | None = None,
) -> None:
    """``rows`` as a table: objects give their keys as columns (``columns``,
    or every key in the order first seen); other values fill one column
    named ``column``."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not rows and columns is None:
        if caption:
            click.echo(caption)
        return
    objects = all(isinstance(row, dict) for row in rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row)) if objects else [column]
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    for name in columns:
        numbers = [row.get(name) if objects else row for row in rows]
        table.add_column(
            Text(name), overflow="fold", justify="right" if _numeric(numbers) else "left"
        )
    for row in rows:
        values = [row.get(name) for name in columns] if objects else [row]
        # Text, not str: a cell's "[...]" is data, not rich markup.
        table.add_row(*(Text(cell(value)) for value in values))
    console = _console()
    with console.capture() as captured:
        console.print(table)
    # rich pads every line to the table's width: no trailing blanks in a pipe.
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
    if caption:  # a line of its own: rich would wrap it to the table's width
        click.echo(caption)


def _numeric(values: list[Any]) -> bool:
    """Whether a column holds numbers (and blanks): those are aligned right."""
    known = [value for value in values if value is not None]
    return bool(known) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in known
    )


def echo_output(
    value: Any,
    output: str,
    *,
    columns: Sequence[str] | None = None,
    column: str = "value",
    caption: str | None = None,
) -> None:
    """Print a command's answer as ``--output`` says: ``value`` is one object
    (key/value rows in a table) or a list (a row each). A table shows
    ``columns`` of a list's objects when given (a summary: json and jsonl
    always have every field) and ``caption`` under it."""
    if output == "json":
        click.echo(to_json(value, indent=2))
    elif output == "jsonl":
        for item in value if isinstance(value, list) else [value]:
            click.echo(to_json(item))
    elif isinstance(value, list):
        echo_table(value, columns, column=column, caption=caption)
    elif isinstance(value, dict):
        pairs = [{"key": key, "value": item} for key, item in value.items()]
        echo_table(pairs, ["key", "value"], caption=caption)
    else:
        click.echo(cell(value))


class ItemPrinter:
    """Prints a list item by item, as the items come, in an ``--output`` format.

    json writes one array (``[`` at the first item, ``]`` at ``close``), so
    what is printed is one document once the command ends. jsonl writes a
    line an item. table buffers the rows for one table at ``close``, unless
    ``live`` (a streaming command): then a row a line under a header of the
    first item's keys, the columns as wide as the widest value so far.
    """

    def __init__(
        self,
        output: str,
        *,
        live: bool = False,
        columns: Sequence[str] | None = None,
        column: str = "value",
    ) -> None:
        self.output = output
        self.live = live
        self.columns = list(columns) if columns is not None else None
        self.column = column
        self.count = 0
        self._rows: list[Any] = []
        self._widths: list[int] = []
        self.gone = False  # the reader closed the pipe (| head)

    def write(self, item: Any) -> bool:
        """Print ``item``; False once stdout's reader has gone (stop producing)."""
        if self.gone:
            return False
        try:
            self._write(item)
            if self.live:
                sys.stdout.flush()  # live, also into a pipe
        except BrokenPipeError:
            # e.g. | head: send the rest (and Python's flush at exit) nowhere.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.gone = True
            return False
        self.count += 1
        return True

    def _write(self, item: Any) -> None:
        if self.output == "json":
            text = to_json(item, indent=2).replace("\n", "\n  ")
            click.echo(("[\n  " if self.count == 0 else ",\n  ") + text, nl=False)
        elif self.output == "jsonl":
            click.echo(to_json(item))
        elif not self.live:
            self._rows.append(item)
        else:
            self._live_row(item)

    def _live_row(self, item: Any) -> None:
        if self.columns is None:
            self.columns = list(item) if isinstance(item, dict) else [self.column]
        values = [item.get(name) for name in self.columns] if isinstance(item, dict) else [item]
        texts = [cell(value) for value in values]
        if not self._widths:  # the header, its columns as wide as the first row's
            pairs = zip(self.columns, texts, strict=True)
            self._widths = [max(len(name), len(text)) for name, text in pairs]
            self._line(self.columns)
        self._line(texts)

    def _line(self, texts: list[str]) -> None:
        self._widths = [max(w, len(text)) for w, text in zip(self._widths, texts, strict=True)]
        padded = [text.ljust(width) for text, width in zip(texts, self._widths, strict=True)]
        click.echo("  ".join(padded).rstrip())

    def close(self) -> None:
        """End the list: close json's array (an empty one if nothing came),
        print table's rows."""
        if self.gone:
            return
        try:
            if self.output == "json":
                click.echo("[]" if self.count == 0 else "\n]")
            elif self.output == "table" and not self.live:
                echo_table(self._rows, self.columns, column=self.column)
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.gone = True


@contextlib.contextmanager
def printing_items(
    output: str,
    *,
    live: bool = False,
    columns: Sequence[str] | None = None,
    column: str = "value",
) -> Iterator[ItemPrinter]:
    """An ``ItemPrinter``, closed at the end of the block. On an error, a
    json array begun is closed (stdout stays one document; the error goes
    to stderr) and one not begun is not printed at all."""
    printer = ItemPrinter(output, live=live, columns=columns, column=column)
    try:
        yield printer
    except BaseException:
        if printer.count or printer.output != "json":
            printer.close()
        raise
    printer.close()
