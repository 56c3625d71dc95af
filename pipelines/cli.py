"""The ``pipelines`` command line: a thin layer over the library's public functions."""

from __future__ import annotations

import json
import sys
from datetime import datetime, tzinfo
from pathlib import Path

import click

from pipelines import __version__
from pipelines.errors import ConfigError, EventValidationError, PatternError
from pipelines.patterns import evaluate_pattern


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
def plugins_command() -> None:
    """List the loaded plugins: version, hooks and target types, as JSON."""
    from pipelines.pluginmanager import list_plugins

    listing = [
        {
            "name": info.name,
            "version": info.version,
            "hooks": list(info.hooks),
            "targets": list(info.targets),
        }
        for info in list_plugins()
    ]
    click.echo(json.dumps(listing, indent=2))


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
    from pipelines.schedule import zone

    return zone("--tz", name)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
