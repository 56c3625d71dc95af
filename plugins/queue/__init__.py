"""The built-in ``queue`` plugin: durable queues with SQS's semantics.

``store.QueueStore`` is the queue API (and the client the CLI uses);
``target.QueueType`` makes a queue a rule target or a dead-letter target;
``cli`` adds ``pipelines queue ...``; ``api`` serves SQS's API on the
runner's AWS endpoint (``register_services``); ``console`` its pages
of the web console (``register_console``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.clikit import LazyCommand
from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType

if TYPE_CHECKING:
    import click

    # the endpoint's code loads only when an endpoint starts
    from pipelines.api.services import Service
    from pipelines.console.sections import Section
    from pipelines.store import Store


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("queue", "plugins.queue.target:QueueType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "queue",
            "plugins.queue.cli:queue_group",
            "Durable queues with SQS's semantics, in a pipeline's state database.",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.queue.api import sqs

    register(sqs)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.queue.store import QueueStore

    register(QueueStore)


@hookimpl
def register_console(register: Callable[[Section], None]) -> None:
    from plugins.queue.console import QueueSection

    register(QueueSection())


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.queue.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
