"""The pipes the pipes API made, made again as resources.

Kept apart from ``api`` on purpose: the plugin's ``register_restorers`` runs
``restore_pipes`` at every runtime's start, and ``api`` imports the endpoint
(aiohttp, botocore's models), which a runtime serving no endpoint must not
pay for at start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from plugins.pipes.pipe import ORIGIN
from plugins.pipes.store import PipeStore

if TYPE_CHECKING:
    from pipelines.api.services import ApiHost

log = logging.getLogger("plugins.pipes")


async def restore_pipes(runtime: ApiHost) -> None:
    """When a runtime starts (``register_restorers``): the pipes the API made
    run again, each in its saved desired state."""
    store = await runtime.open_store(PipeStore, where="the pipes made by the API")
    try:
        await made_again(runtime, store)
    finally:
        await store.close()


async def made_again(runtime: ApiHost, store: PipeStore) -> None:
    """The API's pipes of earlier runs, resources again (those not running)."""
    names = runtime.resource_names()
    for record in await store.made_by_api():
        if record.name in names:
            continue
        try:
            await runtime.put_resource(record.name, "pipe", {**record.settings, ORIGIN: "api"})
        except Exception:
            log.exception("pipe %s (made by the API) not made again", record.name)
