"""The built-in ``http`` plugin: EventBridge's connections and API destinations.

``destination`` has the ``connection`` and ``api_destination`` target types
(requests through ``pipelines.http``); ``webhook`` the ``webhook`` source
(requests on the runner's port, through ``TargetServices.routes``); ``api`` serves the events API's
connection and API destination operations beside the engine's
(``register_services``). See docs/http.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType

if TYPE_CHECKING:
    from pipelines.api.services import Service


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("connection", "plugins.http.destination:ConnectionType"))
    register(LazyTargetType("api_destination", "plugins.http.destination:ApiDestinationType"))
    register(LazyTargetType("webhook", "plugins.http.webhook:WebhookType"))


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.http.api import events

    register(events)


@hookimpl
def register_cloudformation(register: Callable[[object], None]) -> None:
    from plugins.http.cloudformation import MAPPINGS

    for mapping in MAPPINGS:
        register(mapping)
