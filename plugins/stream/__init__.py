"""The built-in ``stream`` plugin: durable streams with Kinesis Data Streams'
semantics.

``store.StreamStore`` is the stream API (shards, put, iterators, resharding,
retention, consumers with checkpoints); ``target.StreamType`` makes a stream a
rule target with consumers; ``cli`` adds ``pipelines stream ...``; ``api`` serves
kinesis on the AWS endpoint (``pipelines run --api``).
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
    register(LazyTargetType("stream", "plugins.stream.target:StreamType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "stream",
            "plugins.stream.cli:stream_group",
            "Durable streams with Kinesis' semantics, in a pipeline's state database.",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.stream.api import kinesis

    register(kinesis)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.stream.store import StreamStore

    register(StreamStore)


@hookimpl
def register_console(register: Callable[[Section], None]) -> None:
    from plugins.stream.console import StreamSection

    register(StreamSection())


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.stream.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
