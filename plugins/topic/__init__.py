"""The built-in ``topic`` plugin: SNS-style fan-out with filter policies.

``target.TopicType`` is the target type; ``filterpolicy`` compiles SNS's
subscription filter policies onto the event-pattern engine; ``cli`` adds
``pipelines topic ...``; ``api`` serves SNS's API (``sns``) on the AWS
endpoint through ``register_services``; ``store`` keeps what the API
changed (``TopicStore``, named through ``register_stores``).
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
    register(LazyTargetType("topic", "plugins.topic.target:TopicType"))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "topic",
            "plugins.topic.cli:topic_group",
            "SNS-style topics declared in a pipeline's config.",
        )
    )


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.topic.api import sns

    register(sns)


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.topic.store import TopicStore

    register(TopicStore)


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.topic.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
