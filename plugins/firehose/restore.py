"""The delivery streams the firehose API made, made again as resources.

Kept apart from ``api`` on purpose: the plugin's ``register_restorers`` runs
``restore_streams`` at every runtime's start, and ``api`` imports the
endpoint (aiohttp, botocore's models), which a runtime serving no endpoint
must not pay for at start. The target's module (formats, codecs: about 120
modules) is imported only when there is a stream to make again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.errors import ResourceNotFoundError
from plugins.firehose.store import FirehoseStore, StreamRecord

if TYPE_CHECKING:
    from pipelines.api.services import ApiHost
    from plugins.firehose.target import FirehoseTarget

log = logging.getLogger("plugins.firehose")


async def restore_streams(runtime: ApiHost) -> None:
    """When a runtime starts (``register_restorers``): the delivery streams
    the API made in earlier runs are resources again, their buffers written
    out as they come due."""
    store = await runtime.open_store(FirehoseStore, where="the delivery streams made by the API")
    try:
        await made_again(runtime, store)
    finally:
        await store.close()


async def made_again(runtime: ApiHost, store: FirehoseStore) -> None:
    """The API's streams not running here, resources again (each alone: one
    that fails is logged)."""
    made = [record for record in await store.streams() if record.made_by_api]
    if not made:
        return
    running = {t.stream_name for t in running_streams(runtime)}
    for record in made:
        if record.name not in running:
            try:
                await runtime.put_resource(record.name, "firehose", stream_settings(record))
            except Exception:
                log.exception("delivery stream %s (made by the API) not made again", record.name)


def running_streams(runtime: ApiHost) -> list[FirehoseTarget]:
    """The delivery streams running here (not those deleted through another runner)."""
    from plugins.firehose.target import FirehoseTarget

    found = []
    for name in runtime.resource_names():
        try:
            target = runtime.resource(name)
        except ResourceNotFoundError:
            continue
        if isinstance(target, FirehoseTarget) and not target.gone:
            found.append(target)
    return found


def stream_settings(record: StreamRecord) -> dict[str, Any]:
    """A stream the API made, as the ``firehose`` resource's settings."""
    from plugins.firehose.spec import EXTENDED_S3, HTTP_ENDPOINT

    config = record.config
    settings: dict[str, Any] = (
        {"http_endpoint": config[HTTP_ENDPOINT]}
        if HTTP_ENDPOINT in config
        else {"destination": config[EXTENDED_S3]}
    )
    source = config.get("KinesisStreamSourceConfiguration")
    if source:
        settings["kinesis_stream"] = source["KinesisStreamARN"].rsplit("/", 1)[-1]
    return settings
