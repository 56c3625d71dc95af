"""The schema registry's resource, made at start when the API made
discoverers in an earlier run.

Kept apart from ``api`` on purpose: the plugin's ``register_restorers`` runs
``restore_registry`` at every runtime's start, and ``api`` imports the
endpoint (aiohttp, botocore's models), which a runtime serving no endpoint
must not pay for at start. The resource's module (schema content, hence
jsonschema: about 40 modules, 70-150 ms of CPU) is imported only when the
state database has discoverers: a running ``schemas`` resource was made
from that module, so without it imported there is none to look for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugins.schemas.store import SchemaStore

if TYPE_CHECKING:
    from pipelines.api.services import ApiHost


async def restore_registry(runtime: ApiHost) -> None:
    """When a runtime starts (``register_restorers``): a pipeline that
    declares no ``schemas`` resource gets one if its state database has
    discoverers (made through the API in an earlier run), so that they
    discover from the start and not only after the first schemas request."""
    store = await runtime.open_store(SchemaStore, where="the schema registry's discoverers")
    try:
        discoverers = await store.discoverers()
    finally:
        await store.close()
    if not discoverers:
        return
    from plugins.schemas.resource import registry_of

    if registry_of(runtime) is None:
        await put_registry_resource(runtime)


async def put_registry_resource(runtime: ApiHost) -> None:
    """A ``schemas`` resource for the registry, under a name not taken."""
    from plugins.schemas.resource import TYPE_NAME

    name = TYPE_NAME
    while name in runtime.resource_names():
        name += "-api"
    await runtime.put_resource(name, TYPE_NAME, {})
