"""The built-in ``mqtt`` plugin: an MQTT broker as a source of events and as
a target, over gmqtt (MQTT 5); with a ``cluster`` section, runners share
their subscriptions through the broker. See docs/mqtt.md.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("mqtt", "plugins.mqtt.target:MqttType"))
