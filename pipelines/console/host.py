"""What the console reads of the running pipeline (``Runtime`` implements it)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from pipelines.alarms import Alarms
from pipelines.archive import Archiver
from pipelines.bus import Bus, Observer
from pipelines.clock import Clock
from pipelines.delivery import Deliverer
from pipelines.metrics import Metrics, MetricStore
from pipelines.replay import Replays
from pipelines.store import Location, Store

StoreT = TypeVar("StoreT", bound=Store)


class ConsoleHost(Protocol):
    @property
    def clock(self) -> Clock: ...

    @property
    def counters(self) -> Metrics: ...

    @property
    def deliverer(self) -> Deliverer: ...

    @property
    def alarms(self) -> Alarms: ...

    @property
    def archives(self) -> Archiver: ...

    @property
    def replays(self) -> Replays: ...

    @property
    def metrics(self) -> MetricStore: ...

    @property
    def state_path(self) -> Location | None: ...

    @property
    def running(self) -> bool: ...

    def buses(self) -> list[Bus]: ...

    def bus(self, name: str = ...) -> Bus: ...

    def resource_names(self) -> list[str]: ...

    def tap(self, observe: Observer) -> AbstractContextManager[None]: ...

    async def open_store(self, store_type: type[StoreT], *args: Any, where: str) -> StoreT: ...
