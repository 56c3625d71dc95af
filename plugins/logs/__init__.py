"""The built-in ``logs`` plugin: log groups with CloudWatch Logs' semantics.

``store.LogStore`` is the API (groups, streams, PutLogEvents, FilterLogEvents,
metric and subscription filters, retention, queries); ``filterpattern`` parses
CloudWatch's filter patterns and ``insights`` runs Logs Insights queries;
``target.LogGroupType`` makes a log group a rule target; ``cli`` adds
``pipelines logs ...``; ``api`` serves logs on the AWS
endpoint (``pipelines run --api``).
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
    from pipelines.console.sections import Section
    from pipelines.store import Store


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("log_group", "plugins.logs.target:LogGroupType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "logs",
            "plugins.logs.cli:logs_group",
            "Log groups with CloudWatch Logs' semantics, in a pipeline's state database.",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.logs.api import logs

    register(logs)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.logs.store import LogStore

    register(LogStore)


@hookimpl
def register_console(register: Callable[[Section], None]) -> None:
    from plugins.logs.console import LogSection

    register(LogSection())


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.logs.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
