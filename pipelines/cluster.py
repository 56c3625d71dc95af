"""Who a runner is among the runners of one state database, and what it leads.

On a SQLite file there is one runner: the ``RunnerLock`` beside the file
keeps a second one out, and that runner leads everything. On PostgreSQL
several runners share the database (a cluster). Each holds, on a connection
of its own for its whole life, a session advisory lock on its name: a second
runner with the same name is refused, and when a runner dies, however it
dies, the server ends its session and frees its locks. So:

- a runner's name being free means the runner is gone, and the rows it left
  (intake rows, pending retries) can be adopted by another (``claim``);
- the work done once per cluster (firing schedules, evaluating alarms) goes
  to the runner holding that role's lock (``leads``). The others try for it
  every ``check_every`` seconds, so a leader that dies is replaced within
  about that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from pipelines.errors import StateError
from pipelines.runnerlock import RunnerLock
from pipelines.store import Connection, Location

log = logging.getLogger("pipelines.cluster")

#: The roles one runner of a cluster takes: firing schedules, evaluating alarms.
SCHEDULER = "scheduler"
ALARMS = "alarms"
ROLES = (SCHEDULER, ALARMS)
#: How often a runner that does not lead a role tries to take it (seconds).
CHECK_EVERY = 5.0


def default_runner_name() -> str:
    """This process's name among a cluster's runners: the host and the pid,
    unique while it runs (a restarted runner adopts what it left under the
    old name, like any other runner would)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lock_key(kind: str, name: str) -> int:
    """A 64-bit advisory lock key for ``name`` of ``kind`` (signed, as
    PostgreSQL's bigint): a hash, so names of any length fit."""
    digest = hashlib.blake2b(f"pipelines:{kind}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Membership:
    """The one runner of a SQLite state database: it leads every role."""

    shared = False

    def __init__(self, location: Path) -> None:
        self.runner = ""
        self._lock = RunnerLock(location)
        #: Set when the runner can no longer tell whether it holds its locks
        #: (in a cluster, its connection to the database was lost).
        self.lost = asyncio.Event()

    async def join(self) -> None:
        self._lock.acquire()

    async def leave(self) -> None:
        self._lock.release()

    def leads(self, role: str) -> bool:
        return self._lock.held

    async def watch(self) -> None:
        """Watch the locks while the runner runs (nothing to watch for a file)."""

    async def wait_to_lead(self, role: str) -> None:
        """Return once this runner leads ``role`` (at once: it is alone)."""

    async def try_to_lead(self, role: str) -> bool:
        """Take ``role`` if no other runner holds it; whether this one leads it."""
        return self.leads(role)

    @contextlib.asynccontextmanager
    async def claim(self, other: str) -> AsyncIterator[bool]:
        """Whether ``other`` is gone (a SQLite file has no other runner)."""
        yield False


class SharedMembership(Membership):
    """A runner of a cluster on PostgreSQL: its name's lock and its roles'
    locks, held on one connection of its own."""

    shared = True

    def __init__(
        self, location: str, runner: str | None = None, *, check_every: float = CHECK_EVERY
    ) -> None:
        self.location = location
        self.runner = runner or default_runner_name()
        self.check_every = check_every
        self._connection: Connection | None = None
        self._led: set[str] = set()
        self.lost = asyncio.Event()
        #: Serializes the statements on the one connection.
        self._serial = asyncio.Lock()
        self._holds_pool = False

    async def join(self) -> None:
        from pipelines.postgres import POOLS, backend

        # A connection of its own, not the pool's: its locks are the
        # session's, and must end with the runner (a lent connection would
        # go back to the pool still holding them, or lend them to a store).
        self._connection = await backend().session(self.location)
        # The runner holds its pool for its whole life, so that a reload's
        # stores reuse the connections of those it closed.
        await POOLS.hold(self.location)
        self._holds_pool = True
        if not await self._try_lock("runner", self.runner):
            await self.leave()
            raise StateError(
                f"runner name {self.runner!r} is in use by another runner of this state"
                " database: give each runner its own name (pipelines run --runner NAME)"
            )
        log.info("joined the cluster as runner %s", self.runner)

    async def leave(self) -> None:
        """Give up every lock, then close the connection. Unlocking first:
        the server frees a closed session's locks a moment after the close
        returns, and a runner restarted at once under this name must find
        its name free."""
        connection, self._connection = self._connection, None
        self._led.clear()
        if self._holds_pool:
            from pipelines.postgres import POOLS

            self._holds_pool = False
            await POOLS.release(self.location)
        if connection is None:
            return
        try:
            if not self.lost.is_set():
                await connection.execute("SELECT pg_advisory_unlock_all()")
        except Exception as exc:  # the server frees them with the session anyway
            log.warning("runner %s could not give up its locks: %s", self.runner, exc)
        finally:
            await connection.close()

    def leads(self, role: str) -> bool:
        return role in self._led

    async def watch(self) -> None:
        """Every ``check_every`` seconds, check the connection holding the
        locks. When it is lost the server has freed them: another runner
        may take the roles, so this one stops leading at once (``lost``)
        rather than fire schedules a second time."""
        while not self.lost.is_set():
            await asyncio.sleep(self.check_every)
            try:
                await self._call("SELECT ?", 1)
            except Exception as exc:
                self._led.clear()
                self.lost.set()
                log.error(
                    "runner %s lost its connection to the cluster's database (%s): it no"
                    " longer fires schedules or evaluates alarms; restart it",
                    self.runner,
                    exc,
                )

    async def wait_to_lead(self, role: str) -> None:
        """Return once this runner leads ``role``: try now, then every
        ``check_every`` seconds (cancel to give up)."""
        while not await self.try_to_lead(role):
            await asyncio.sleep(self.check_every)
        log.info("runner %s now leads the cluster's %s", self.runner, role)

    async def try_to_lead(self, role: str) -> bool:
        if role not in self._led and await self._try_lock("role", role):
            self._led.add(role)
        return role in self._led

    @contextlib.asynccontextmanager
    async def claim(self, other: str) -> AsyncIterator[bool]:
        """Whether runner ``other`` is gone; if it is, its name stays locked
        by this runner for the block (no other runner adopts its rows too,
        and it cannot come back meanwhile)."""
        gone = await self._try_lock("runner", other)
        try:
            yield gone
        finally:
            if gone:
                await self._unlock("runner", other)

    async def _try_lock(self, kind: str, name: str) -> bool:
        return bool(await self._call("SELECT pg_try_advisory_lock(?)", lock_key(kind, name)))

    async def _unlock(self, kind: str, name: str) -> None:
        await self._call("SELECT pg_advisory_unlock(?)", lock_key(kind, name))

    async def _call(self, sql: str, key: int) -> object:
        if self._connection is None:
            raise StateError("the runner has left the cluster")
        async with self._serial:
            return await self._connection.scalar(sql, (key,))


def membership_for(
    location: Location, runner: str | None = None, *, check_every: float = CHECK_EVERY
) -> Membership:
    """How a runner on ``location`` takes part: alone on a file, or in a cluster."""
    if isinstance(location, Path):
        if runner:
            raise StateError(
                "a runner name is for a cluster's runners: the state is a SQLite file,"
                " which one runner uses"
            )
        return Membership(location)
    return SharedMembership(location, runner, check_every=check_every)


async def led(membership: Membership, role: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` once this runner leads ``role`` (a task the runtime owns)."""
    await membership.wait_to_lead(role)
    await work()
