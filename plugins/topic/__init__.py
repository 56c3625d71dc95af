"""The built-in ``topic`` plugin: SNS-style fan-out with filter policies.

``target.TopicType`` is the target type; ``filterpolicy`` compiles SNS's
subscription filter policies onto the event-pattern engine; ``cli`` adds
``pipelines topic ...``.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from pipelines.hookspecs import hookimpl
from pipelines.targets import TargetType
from plugins.topic.target import TopicType


@hookimpl
def register_targets(register: Callable[[TargetType], None]) -> None:
    register(TopicType())


@hookimpl
def register_commands(cli: click.Group) -> None:
    from plugins.topic.cli import topic_group

    cli.add_command(topic_group)
