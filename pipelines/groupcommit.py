"""Group commit for targets: the deliveries waiting at the same moment share
one write (a stream's PutRecords, a log group's PutLogEvents), so a busy rule
target commits once per group, not once per event.

A target ``submit``s an item and waits for its own outcome; one task of the
target (``run``) takes everything waiting, splits it into requests, and
hands each to the target's ``write``, which answers item by item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items waiting to be written together.

    ``split`` cuts what is waiting into requests (each within the write's
    limits); ``write`` writes one request and returns an outcome per item. An
    exception from ``split`` fails everything it was given, from ``write``
    its whole request; a cancellation (the
    target stopping mid-write) fails everything taken with ``stopped()`` and
    ends ``run``.
    """

    def __init__(
        self,
        split: Callable[[list[T]], list[list[T]]],
        write: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        stopped: Callable[[], BaseException],
    ) -> None:
        self._split = split
        self._write = write
        self._stopped = stopped
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()

    @property
    def idle(self) -> bool:
        """Nothing is waiting to be taken."""
        return not self._waiting

    async def submit(self, item: T) -> R:
        """Write ``item`` with whatever else is waiting; its outcome. Each
        item is its own object (``split``'s requests are matched back to
        their callers by identity)."""
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, waiter))
        self._wakeup.set()
        return await waiter

    async def run(self) -> None:
        """Write what is waiting, until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                # An item whose caller was cancelled while it waited is not written.
                live = [(item, waiter) for item, waiter in self._waiting if not waiter.done()]
                self._waiting = []
                taken = {id(item): waiter for item, waiter in live}
                try:
                    requests = self._split([item for item, _ in live])
                except Exception as exc:
                    # An item split cannot weigh fails the callers taken with
                    # it; the task (and the runtime owning it) goes on.
                    self._settle(list(taken.values()), exc)
                    continue
                try:
                    for request in requests:
                        await self._commit(request, [taken[id(item)] for item in request])
                except BaseException:
                    # Stopped mid-write: these callers must not wait for ever.
                    # (The write may still commit: a retry then writes it twice.)
                    self._settle(list(taken.values()), self._stopped())
                    raise

    async def _commit(self, request: list[T], waiters: list[asyncio.Future[R]]) -> None:
        try:
            outcomes = await self._write(request)
        except Exception as exc:
            self._settle(waiters, exc)
            return
        for waiter, outcome in zip(waiters, outcomes, strict=True):
            if waiter.done():
                continue  # its caller was cancelled during the write: written all the same
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)

    def fail_waiting(self, error: BaseException) -> None:
        """Fail every item still waiting (the target stops)."""
        self._settle([waiter for _, waiter in self._waiting], error)
        self._waiting = []

    @staticmethod
    def _settle(waiters: list[asyncio.Future[R]], error: BaseException) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
