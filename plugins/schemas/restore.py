"""The schema registry's resource, made at start when the API made
discoverers in an earlier run.

Kept apart from ``api`` on purpose: the plugin's ``register_restorers`` runs
``restore_registry`` at every runtime's start, and ``api`` imports the
endpoint (aiohttp, botocore's models), which a runtime serving no endpoint
must not pay for at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugins.schemas.resource import TYPE_NAME, registry_of
from plugins.schemas.store import SchemaStore

if TYPE_CHECKING:
    from pipelines.api.services import ApiHost


async def restore_registry(runtime: ApiHost) -> None:
    """When a runtime starts (``register_restorers``): a pipeline that
    declares no ``schemas`` resource gets one if its state database has
    discoverers (made through the API in an earlier run), so that they
    discover from the start and not only after the first schemas request."""
    if registry_of(runtime) is not None:
        return
    store = await runtime.open_store(SchemaStore, where="the schema registry's discoverers")
    try:
        discoverers = await store.discoverers()
    finally:
        await store.close()
    if discoverers:
        await put_registry_resource(runtime)


async def put_registry_resource(runtime: ApiHost) -> None:
    """A ``schemas`` resource for the registry, under a name not taken."""
    name = TYPE_NAME
    while name in runtime.resource_names():
        name += "-api"
    await runtime.put_resource(name, TYPE_NAME, {})
