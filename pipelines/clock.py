"""Time, injected wherever it matters (backoff, event age, schedules).

The bus never calls ``time.time()`` or ``asyncio.sleep`` for policy decisions;
it asks its ``Clock``. ``SystemClock`` is the real one; ``ManualClock`` only
moves when a test (or a simulation) calls ``advance``, so a 24-hour retry
policy can be tested in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (wall-clock time)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Run ``callback`` on the event loop once ``delay`` seconds have passed."""
        ...


async def sleep(clock: Clock, delay: float) -> None:
    """Sleep ``delay`` seconds of ``clock`` time."""
    if delay <= 0:
        await asyncio.sleep(0)
        return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    handle = clock.call_later(delay, wake)
    try:
        await future
    finally:
        handle.cancel()


class SystemClock:
    """The real clock: ``time.time`` and the running loop's timers."""

    def time(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that stands still until ``advance`` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        timer = _Timer(callback)
        heapq.heappush(self._timers, (self._now + max(delay, 0.0), next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        """When the earliest pending timer fires, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        """How many timers wait (not cancelled): what waits on this clock,
        for a test to see that it waits before it moves anything."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def jump(self, seconds: float) -> None:
        """Move time forward without firing timers, as a machine waking from
        sleep sees it; the next ``advance`` fires what is due, late."""
        self._now += seconds

    async def advance(
        self, seconds: float, *, quiet: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Move time forward, firing each due timer at its own moment, in order.

        Between timers the loop runs until quiet (``quiet``, when given, is
        awaited too: work that waits on threads, such as SQLite writes, can
        then schedule its next timer before time moves on).
        """
        target = self._now + seconds
        await self._quiet(quiet)
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            _, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            timer.callback()
            await self._quiet(quiet)
        self._now = target
        await self._quiet(quiet)

    @staticmethod
    async def _quiet(quiet: Callable[[], Awaitable[None]] | None) -> None:
        await settle()
        if quiet is not None:
            await quiet()
            await settle()


async def settle(rounds: int = 50) -> None:
    """Let ready callbacks and tasks run: ``rounds`` passes of the event loop."""
    for _ in range(rounds):
        await asyncio.sleep(0)
