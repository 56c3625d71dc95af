"""``pipelines schedules ...``: EventBridge Scheduler's schedules on the command line.

Each command reads a pipeline's state database (running or not; never
created here) through ``plugins.scheduler.listing`` and prints as
``--output`` says.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import click

from pipelines import clikit
from pipelines.clikit import echo_output, output_option, state_options
from plugins.scheduler.listing import describe_schedule, list_schedules, next_runs
from plugins.scheduler.spec import DEFAULT_GROUP
from plugins.scheduler.store import ScheduleStore

_GROUP = click.option(
    "--group", "-g", default=DEFAULT_GROUP, show_default=True, help="The schedule's group."
)


@click.group("schedules")
def schedules_group() -> None:
    """EventBridge Scheduler's schedules of a pipeline (schedules: and the scheduler API)."""


@schedules_group.command("list")
@click.option("--group", "-g", default=None, help="Only this schedule group's.")
@click.option("--prefix", default="", help="Only schedules whose name starts with this.")
@click.option(
    "--only", type=click.Choice(["ENABLED", "DISABLED"]), default=None, help="Only these."
)
@state_options
@output_option
def list_command(
    group: str | None,
    prefix: str,
    only: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """List the schedules."""
    found = clikit.with_store(
        ScheduleStore,
        config,
        state,
        lambda store: list_schedules(store, group=group, prefix=prefix, state=only),
    )
    echo_output(
        found, output, columns=["GroupName", "Name", "State", "ScheduleExpression", "Target"]
    )


@schedules_group.command("describe")
@click.argument("name")
@_GROUP
@state_options
@output_option
def describe_command(
    name: str, group: str, config: str | None, state: str | None, output: str
) -> None:
    """Show schedule NAME as GetSchedule answers it."""
    found = clikit.with_store(
        ScheduleStore, config, state, lambda store: describe_schedule(store, name, group)
    )
    echo_output(found, output)


@schedules_group.command("next")
@click.argument("name")
@_GROUP
@click.option("--count", "-n", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--after",
    default=None,
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"]),
    help="From this UTC time (default now).",
)
@state_options
@output_option
def next_command(
    name: str,
    group: str,
    count: int,
    after: dt.datetime | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """The next runs of schedule NAME: each scheduled time (in its time zone)
    and the moment it fires (within its flexible window)."""
    location = clikit.state_database(config, state)
    moment = after.replace(tzinfo=dt.UTC) if after is not None else None
    runs = asyncio.run(next_runs(location, name, group, count=count, after=moment))
    echo_output(runs, output, columns=["Scheduled", "FiresAt", "State"])
