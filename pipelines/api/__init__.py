"""The AWS-compatible endpoint: AWS's wire protocols over the running pipeline.

``ApiServer`` serves, on one port, every service in ``served_services()``:
the engine's own ``events`` and ``cloudwatch`` and what plugins register through the
``register_services`` hook. See docs/api.md.
"""

from __future__ import annotations

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
    hook), by botocore's service name; one served twice is an error naming both."""
    found: dict[str, tuple[Service, str]] = {
        "events": (events, "the engine"),
        "cloudwatch": (cloudwatch, "the engine"),
    }
    hook = (manager or get_plugin_manager()).hook.register_services
    for implementation in hook.get_hookimpls():
        plugin_name = implementation.plugin_name

        def register(service: Service, plugin_name: str = plugin_name) -> None:
            if service.name in found:
                raise PluginError(
                    f"AWS service {service.name!r} is served by both"
                    f" {found[service.name][1]!r} and {plugin_name!r}"
                )
            found[service.name] = (service, plugin_name)

        implementation.function(register=register)
    return {name: service for name, (service, _) in found.items()}
