"""The built-in ``pipes`` plugin: EventBridge Pipes.

``pipe.PipeType`` is the ``pipe`` resource type (a config's ``pipes:``
section declares resources of it); ``sources`` reads queues and streams;
``definition`` checks a pipe's settings; ``template`` fills AWS's pipes input
templates; ``store.PipeStore`` keeps pipes' definitions, states and counts;
``cli`` adds ``pipelines pipes ...``; ``api`` serves the pipes API on the
AWS endpoint. See docs/pipes.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pipelines.clikit import LazyCommand
from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType

if TYPE_CHECKING:
    import click

    from pipelines.api import Service
    from pipelines.api.services import ApiHost
    from pipelines.store import Store


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("pipe", "plugins.pipes.pipe:PipeType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "pipes",
            "plugins.pipes.cli:pipes_group",
            "EventBridge Pipes of a pipeline: states and counts, start and stop.",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.pipes.api import pipes

    register(pipes)


@hookimpl
def register_restorers(register: Callable[[Callable[[ApiHost], Awaitable[None]]], None]) -> None:
    from plugins.pipes.restore import restore_pipes

    register(restore_pipes)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.pipes.store import PipeStore

    register(PipeStore)
