"""The AWS-compatible endpoint: AWS's wire protocols over the running pipeline.

``ApiServer`` serves, on one port, every service in ``served_services()``:
the engine's own ``events`` and what plugins register through the
``register_services`` hook. See docs/api.md.
"""

from __future__ import annotations

import pluggy

from pipelines.api.errors import ApiError
from pipelines.api.events import events
from pipelines.api.server import ApiServer
from pipelines.api.services import Call, Service
from pipelines.errors import PluginError
from pipelines.pluginmanager import api_services

__all__ = ["ApiError", "ApiServer", "Call", "Service", "served_services"]


def served_services(manager: pluggy.PluginManager | None = None) -> dict[str, Service]:
    """The engine's services and every plugin's, by botocore's service name."""
    found = api_services(manager)
    if "events" in found:
        raise PluginError("a plugin registers the events service, which the engine serves")
    return {"events": events, **found}
