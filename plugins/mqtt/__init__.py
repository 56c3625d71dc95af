"""The built-in ``mqtt`` plugin: an MQTT broker as a source of events and as
a target, over gmqtt (MQTT 5); with a ``cluster`` section, runners share
their subscriptions through the broker. See docs/mqtt.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.hookspecs import hookimpl

if TYPE_CHECKING:
    from pipelines.targets import TargetType


@hookimpl
def register_targets(register: Callable[[TargetType], None]) -> None:
    from plugins.mqtt.target import MqttType

    register(MqttType())
