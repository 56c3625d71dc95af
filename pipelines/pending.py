"""Group commit of pending retries: the saves and deletes of
``pending_deliveries`` that wait at the same moment share one write.

During an outage every failed attempt that will be retried is saved, so the
saves come as fast as the targets fail. One writer task (owned by the
runtime, like the durable intake's) takes every save and delete waiting,
writes the saves in one statement and the deletes in another, and only then
answers their callers: a caller learns its row is committed (its job may be
settled) or that the write failed. The group grows with the load, so a burst
of failures costs a few commits, not one each.

Before the writer runs and after it has stopped (at start, at the last
writes of a stop) a caller's item is written at once, alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from pipelines.state import PendingSave, StateDB


class PendingWriter:
    """The writer of one state database's pending rows. ``run()`` is its task;
    ``close()`` makes it write what is left and return."""

    def __init__(self, store: StateDB) -> None:
        self.store = store
        self._saves: list[tuple[PendingSave, asyncio.Future[None]]] = []
        self._deletes: list[tuple[str, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._running = False
        self._closing = False

    async def save(self, row: PendingSave) -> None:
        """Insert or update ``row``; returns once it is committed."""
        if not self._running:
            await self.store.save_pending_rows([row])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._saves.append((row, done))
        self._wake.set()
        await done

    async def delete(self, key: str) -> None:
        """Delete the row ``key``; returns once the delete is committed."""
        if not self._running:
            await self.store.delete_pending_keys([key])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._deletes.append((key, done))
        self._wake.set()
        await done

    @property
    def idle(self) -> bool:
        return not self._saves and not self._deletes

    def close(self) -> None:
        """Write what waits, then return from ``run`` (at stop, before the
        database closes)."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """The writer task: write what gathered, answer who waits, repeat."""
        self._running = True
        try:
            while not self._closing:
                await self._wake.wait()
                self._wake.clear()
                while not self.idle:
                    await self._write()
        finally:
            # Whoever still waits (the task was cancelled mid-write) is told,
            # and later callers write alone.
            self._running = False
            stopped = RuntimeError("the pending retries' writer stopped before this write")
            for _, done in [*self._saves, *self._deletes]:
                if not done.done():
                    done.set_exception(stopped)
            self._saves, self._deletes = [], []

    async def _write(self) -> None:
        """Saves first, then deletes: a job saved and finished in the same
        turn must not keep its row."""
        saves, self._saves = self._saves, []
        if saves:
            await self._commit(
                [done for _, done in saves],
                self.store.save_pending_rows([row for row, _ in saves]),
            )
        deletes, self._deletes = self._deletes, []
        if deletes:
            await self._commit(
                [done for _, done in deletes],
                self.store.delete_pending_keys([key for key, _ in deletes]),
            )

    @staticmethod
    async def _commit(waiting: list[asyncio.Future[None]], write: Awaitable[None]) -> None:
        try:
            await write
        except asyncio.CancelledError:
            _answer(waiting, RuntimeError("the pending retries' writer was cancelled"))
            raise
        except Exception as exc:  # the database refused (disk full, I/O): each caller decides
            _answer(waiting, exc)
        else:
            _answer(waiting, None)


def _answer(waiting: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for done in waiting:
        if done.done():
            continue  # its caller was cancelled while it waited: written all the same
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
