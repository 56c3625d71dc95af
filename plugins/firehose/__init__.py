"""The built-in ``firehose`` plugin: delivery streams with Kinesis Data
Firehose's semantics (buffer, transform, partition, compress, deliver).

``store.FirehoseStore`` keeps delivery streams and their buffered records;
``delivery.DeliveryStream`` runs one; ``target.FirehoseType`` makes a
delivery stream a resource and a rule target; ``api`` serves firehose on the
AWS endpoint (and makes the streams it made again when a runtime starts:
``register_restorers``); ``cli`` adds ``pipelines firehose ...``. Buckets
are the ``bucket`` plugin's (``plugins.bucket``). See docs/firehose.md.
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
    register(LazyTargetType("firehose", "plugins.firehose.target:FirehoseType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "firehose",
            "plugins.firehose.cli:firehose_group",
            "Delivery streams (Kinesis Data Firehose) of a pipeline.",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.firehose.api import firehose

    register(firehose)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.firehose.store import FirehoseStore

    register(FirehoseStore)


@hookimpl
def register_restorers(register: Callable[[Callable[[ApiHost], Awaitable[None]]], None]) -> None:
    from plugins.firehose.restore import restore_streams

    register(restore_streams)


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.firehose.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
