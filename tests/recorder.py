"""A target type for bus tests, registered through a real pluggy plugin manager.

``recorder`` targets record what they receive (payload, context, clock time)
and can be told to fail, to fail without retry, or to hold deliveries until
released, so tests can drive each delivery path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from pipelines import hookspecs
from pipelines.errors import DeliveryError
from pipelines.hookspecs import hookimpl
from pipelines.pluginmanager import ENTRY_POINT_GROUP
from pipelines.targets import DeliveryContext, Done, Target, TargetServices, TargetType


@dataclass
class Received:
    payload: Any
    context: DeliveryContext
    time: float


class Recorder(Target):
    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.concurrency = int(config.get("concurrency", 16))
        #: Fail this many deliveries before succeeding (-1: always).
        self.failures = int(config.get("fail", 0))
        self.retryable = bool(config.get("retryable", True))
        self.received: list[Received] = []
        self.attempts: list[float] = []
        self.gate: asyncio.Event | None = asyncio.Event() if config.get("hold") else None
        #: Turns of the event loop a delivery takes (0: it answers at once).
        self.turns = int(config.get("turns", 0))
        self.waiting = 0
        self.started = self.stopped = False
        self.clock: Any = None
        #: As a source would: put this many events as soon as it starts.
        self.put_on_start = int(config.get("put_on_start", 0))
        self.put_results: list[dict[str, Any]] = []

    async def start(self, services: TargetServices) -> None:
        self.clock = services.clock
        self.started = True
        if self.put_on_start:
            services.spawn(self._put(services))
            await asyncio.sleep(0.01)  # still starting (connecting) while it puts

    async def _put(self, services: TargetServices) -> None:
        entries = [
            {"Source": self.name, "DetailType": "started", "Detail": "{}"}
            for _ in range(self.put_on_start)
        ]
        self.put_results.append(await services.put_events(entries))

    async def stop(self) -> None:
        self.stopped = True

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        now = self.clock.time()
        self.attempts.append(now)
        if self.gate is not None:
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        for _ in range(self.turns):
            await asyncio.sleep(0)
        if self.failures != 0:
            self.failures -= 1 if self.failures > 0 else 0
            raise DeliveryError("TestFailure", f"{self.name} refuses", retryable=self.retryable)
        self.received.append(Received(payload, context, now))
        return None


class Sender(Recorder):
    """A recorder that takes deliveries through ``Target.deliver_nowait``: each attempt
    waits in ``sent`` until the test ends it (``finish``), or ends within
    the call itself with ``at_once``."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.at_once = bool(config.get("at_once", False))
        #: Attempts under way, oldest first: (payload, context, done).
        self.sent: list[tuple[Any, DeliveryContext, Done]] = []
        self.most_at_once = 0

    def deliver_nowait(self, payload: Any, context: DeliveryContext, done: Done) -> None:
        self.attempts.append(self.clock.time())
        if self.at_once:
            self.received.append(Received(payload, context, self.clock.time()))
            done(None)
            return
        self.sent.append((payload, context, done))
        self.most_at_once = max(self.most_at_once, len(self.sent))

    def finish(self, error: BaseException | None = None) -> None:
        """End the oldest attempt under way: delivered, or failed with ``error``."""
        payload, context, done = self.sent.pop(0)
        if error is None:
            self.received.append(Received(payload, context, self.clock.time()))
        done(error)


class RecorderType(TargetType):
    name = "recorder"
    description = "Records deliveries (tests only)"

    def create(self, target_id: str, config: Mapping[str, Any]) -> Recorder:
        return Recorder(target_id, config)


class SenderType(TargetType):
    name = "sender"
    description = "Records deliveries taken by Target.deliver_nowait (tests only)"

    def create(self, target_id: str, config: Mapping[str, Any]) -> Sender:
        return Sender(target_id, config)


class _TestPlugin:
    @hookimpl
    def register_targets(self, register: Callable[[TargetType], None]) -> None:
        register(RecorderType())
        register(SenderType())


def plugin_manager() -> pluggy.PluginManager:
    """The installed plugins plus the recorder, loaded as the runtime loads them."""
    manager = pluggy.PluginManager("pipelines")
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.register(_TestPlugin(), name="tests.recorder")
    return manager
