"""Schema discovery: the shapes of the events passing on watched buses,
kept as versions of ``source@DetailType`` in the ``discovered-schemas`` registry.

The hot path is the runtime's tap (``TargetServices.tap``): for each
dispatched event, ``observe`` tests the bus against the watched set and
appends the event to a bounded deque, or counts it as dropped when the deque
is full. Nothing is awaited there and nothing walks the event.

One task (``run``, owned by the runtime's task group through the resource)
drains the deque every ``interval`` seconds. Per event it computes the
structure's fingerprint (``infer.fingerprint``); one already seen for the
same (source, detail-type) costs nothing more. A new one is merged into that
type's shape (``infer.merge``: fields seen in any event, required those in
all); if the rendered schema differs from the latest version, a version is
added (the schema is created at the first), which the registry announces
with AWS's "Schema Created" / "Schema Version Created" events. Values never
make a version: only keys and types are looked at.

Sampling is the deque's bound and the drain interval together: at most
``queue`` events per ``interval`` are looked at, the rest are dropped and
counted (``dropped``). A shape that appears rarely under a heavy load may
take a while to be seen, as on AWS, whose discovery also samples.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from plugins.schemas.infer import (
    ENVELOPE,
    OPENAPI,
    Shape,
    dumps,
    fingerprint,
    merge,
    render,
    schema_name,
    shape_of,
)
from plugins.schemas.registry import Registry
from plugins.schemas.store import DISCOVERED

log = logging.getLogger("plugins.schemas")

#: Fingerprints remembered per event type; past this the set starts again
#: (a type whose keys are data, such as ids as keys, would grow it forever).
SEEN_LIMIT = 256
#: Events queued for a look, at most, and the pause between drains: together
#: at most QUEUE / INTERVAL events a second are looked at (640), the rest
#: dropped and counted. A fingerprint costs 5 to 20 µs for a 1 KB event, so
#: discovery under any load costs the bus about 1% of a core.
QUEUE, INTERVAL = 64, 0.1


class Discovery:
    """The discoverers of one runtime at work (see the module's doc)."""

    def __init__(
        self, registry: Registry, *, queue: int = QUEUE, interval: float = INTERVAL
    ) -> None:
        self.registry = registry
        self.limit = queue
        self.interval = interval
        #: The buses whose events are looked at (their discoverers are STARTED).
        self.watching: set[str] = set()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._ready = asyncio.Event()
        #: Events not looked at: the deque was full.
        self.dropped = 0
        #: Events looked at.
        self.looked = 0
        self._seen: dict[tuple[str, str], set[int]] = {}
        self._shapes: dict[tuple[str, str], Shape] = {}
        self._contents: dict[tuple[str, str], str] = {}

    def observe(self, bus: str, event: dict[str, Any]) -> None:
        """The tap: called by each bus's dispatcher for each event."""
        if bus not in self.watching:
            return
        if len(self._queue) >= self.limit:
            self.dropped += 1
            return
        self._queue.append(event)
        self._ready.set()

    async def run(self) -> None:
        """Drain the queue until cancelled; a failure on one event is logged
        and the next goes on."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self.drain()
            await asyncio.sleep(self.interval)

    async def drain(self) -> None:
        """Look at every event queued now."""
        while self._queue:
            event = self._queue.popleft()
            try:
                await self.look(event)
            except Exception:
                log.exception("schema discovery failed on an event of %s", event.get("source"))

    async def look(self, event: Mapping[str, Any]) -> None:
        key = (str(event.get("source", "")), str(event.get("detail-type", "")))
        self.looked += 1
        seen = self._seen.setdefault(key, set())
        mark = fingerprint(event)
        if mark in seen:
            return
        if len(seen) >= SEEN_LIMIT:
            seen.clear()
        seen.add(mark)
        name = schema_name(*key)
        if key not in self._shapes:
            await self._load(key, name)
        shape = merge(self._shapes.get(key, {}), shape_of(event))
        self._shapes[key] = shape
        content = dumps(render(key[0], key[1], shape, OPENAPI))
        if content == self._contents.get(key):
            return
        self._contents[key] = content
        store = self.registry.store
        if await store.get_schema(DISCOVERED, name) is None:
            await self.registry.create_schema(DISCOVERED, name, OPENAPI, content)
        else:
            await self.registry.update_schema(DISCOVERED, name, OPENAPI, content)

    async def _load(self, key: tuple[str, str], name: str) -> None:
        """The latest discovered version of a type (from an earlier run), so
        that discovery goes on from it instead of starting a new version."""
        found = await self.registry.store.get_version(DISCOVERED, name)
        if found is None:
            return
        self._contents[key] = found.content
        try:
            self._shapes[key] = shape_from(orjson.loads(found.content))
        except (ValueError, KeyError, TypeError):
            log.warning("discovered schema %s could not be read back; it starts anew", name)


def shape_from(document: Mapping[str, Any]) -> Shape:
    """The event shape a rendered OpenAPI discovered schema stands for: the
    ``AWSEvent`` component with every ``$ref`` put back in place."""
    components = document["components"]["schemas"]

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                return inline(components[ref.rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in value.items() if not k.startswith("x-amazon-events-")}
        if isinstance(value, list):
            return [inline(v) for v in value]
        return value

    shape: Shape = inline(components[ENVELOPE])
    return shape
