"""The pipes the pipes API made, made again as resources.

Kept apart from ``api`` on purpose: the plugin's ``register_restorers`` runs
``restore_pipes`` at every runtime's start, and ``api`` imports the endpoint
(aiohttp, botocore's models), which a runtime serving no endpoint must not
pay for at start. The pipe's module (its sources: the logs, queue, stream
and MQTT plugins' stores; about 40 modules, 150-240 ms of CPU) is imported
only when there is a pipe to make again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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
    made = [record for record in await store.made_by_api() if record.name not in names]
    if not made:
        return
    from plugins.pipes.pipe import ORIGIN

    for record in made:
        try:
            await runtime.put_resource(record.name, "pipe", {**record.settings, ORIGIN: "api"})
        except Exception:
            log.exception("pipe %s (made by the API) not made again", record.name)
