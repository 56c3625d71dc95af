"""The AWS-compatible endpoint: AWS's wire protocols over the running pipeline.

``ApiServer`` serves, on one port, every service in ``served_services()``:
the engine's own ``events`` and ``cloudwatch`` and what plugins register through the
``register_services`` hook. See docs/api.md.
"""

from __future__ import annotations

import dataclasses

import pluggy

from pipelines.api.cloudwatch import cloudwatch
from pipelines.api.errors import ApiError
from pipelines.api.events import events
from pipelines.api.server import ApiServer
from pipelines.api.services import Call, QueryError, Service, resource_of
from pipelines.errors import PluginError
from pipelines.pluginmanager import get_plugin_manager

__all__ = [
    "ApiError",
    "ApiServer",
    "Call",
    "QueryError",
    "Service",
    "resource_of",
    "served_services",
]


def served_services(manager: pluggy.PluginManager | None = None) -> dict[str, Service]:
    """The engine's services and every plugin's (the ``register_services``
    hook), by botocore's service name. Several may serve one service, each
    its own operations (the http plugin serves the events service's
    connections and API destinations beside the engine's rules); the first
    registered gives the service's settings. An operation served twice is an
    error naming both."""
    found: dict[str, Service] = {}
    owners: dict[tuple[str, str], str] = {}

    def add(service: Service, owner: str) -> None:
        for operation in service.operations:
            first = owners.setdefault((service.name, operation), owner)
            if first != owner:
                raise PluginError(
                    f"AWS operation {service.name}:{operation} is served by both"
                    f" {first!r} and {owner!r}"
                )
        served = found.get(service.name)
        if served is None:
            found[service.name] = service
        else:  # a copy: the first's Service object is a module's, shared
            operations = {**served.operations, **service.operations}
            found[service.name] = dataclasses.replace(served, operations=operations)

    add(events, "the engine")
    add(cloudwatch, "the engine")
    hook = (manager or get_plugin_manager()).hook.register_services
    for implementation in hook.get_hookimpls():

        def register(service: Service, owner: str = implementation.plugin_name) -> None:
            add(service, owner)

        implementation.function(register=register)
    return found
