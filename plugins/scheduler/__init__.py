"""The built-in ``scheduler`` plugin: EventBridge Scheduler's schedules and schedule groups.

``target.SchedulerType`` is the ``scheduler`` resource holding them (a
config's ``schedules:`` and ``schedule_groups:`` sections become it), each
schedule a rule of the internal bus ``aws.scheduler`` fired by the engine's
scheduler; ``store.ScheduleStore`` keeps them in the state database; ``api``
serves the scheduler API (REST-JSON) on the AWS endpoint; ``cli`` adds
``pipelines schedules list|describe|next``. See docs/scheduler.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.clikit import LazyCommand
from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType

if TYPE_CHECKING:
    import click

    from pipelines.api import Service
    from pipelines.store import Store


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("scheduler", "plugins.scheduler.target:SchedulerType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "schedules",
            "plugins.scheduler.cli:schedules_group",
            "EventBridge Scheduler's schedules of a pipeline (schedules: and the scheduler API).",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.scheduler.api import scheduler

    register(scheduler)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.scheduler.store import ScheduleStore

    register(ScheduleStore)


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.scheduler.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
