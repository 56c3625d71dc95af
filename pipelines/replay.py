"""Replays: archived events put on a bus again, to all its rules or to some.

``Replays.start`` (StartReplay) takes the events of an archive whose event
time falls in ``[start_time, end_time)``, in event-time order, adds the
top-level field ``replay-name`` and puts them in the destination bus's
intake, to every rule whose pattern matches or only to the named ones. A
replay goes through EventBridge's states::

    STARTING -> RUNNING -> COMPLETED
                        -> CANCELLING -> CANCELLED   (cancel)
                        -> FAILED                    (archive or bus gone, state error)

Its progress (events replayed, ``EventLastReplayedTime`` and the position in
the archive) is saved after each chunk, and at a graceful stop exactly at the
last event the bus accepted: a RUNNING replay resumes there when the runtime
starts again, so nothing is put twice (after a crash, the events of the last
unsaved chunk are put again: at least once). Beyond AWS, ``speed`` replays at
the original pace times a factor instead of as fast as the bus takes them.

Runners sharing a state database (PostgreSQL) share its replays, and each
replay runs on one of them: the runner that started it (or claimed it later)
owns it, for a lease of ``LEASE`` seconds that it renews as it goes (each
chunk, and while a paced replay waits). Every write of its progress is
conditional on still owning it. Another runner describes it from the shared
row (RUNNING, its progress as of the last chunk), can cancel it (the owner
finishes it at its next step), and claims it, at its start (``resume``) or
when ``adoption`` runs, once the owner let it go (a graceful stop) or its
lease ran out (the owner died): of runners claiming at once, exactly one wins.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from pipelines.archive import Archiver, ArchiveStore, archive_arn, iso
from pipelines.clock import Clock, sleep
from pipelines.errors import PipelinesError, ReplayError, ResourceNotFoundError, StateError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, parse_json
from pipelines.store import Location, Upkeep

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from pipelines.bus import Bus


class ReplayHost(Protocol):
    """What replays use of their owner (the ``Runtime``)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def archives(self) -> Archiver: ...

    def bus(self, name: str = ...) -> Bus: ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


log = logging.getLogger("pipelines.replay")

STARTING, RUNNING, CANCELLING = "STARTING", "RUNNING", "CANCELLING"
COMPLETED, CANCELLED, FAILED = "COMPLETED", "CANCELLED", "FAILED"
ACTIVE = (STARTING, RUNNING, CANCELLING)
CHUNK = 1000  # events read, put and saved as one step
#: Seconds a runner holds a replay without renewing it; another runner takes
#: over a replay whose owner has not renewed it for that long (it died).
LEASE = 60.0
#: How often the owner renews while it waits (a paced replay's gaps).
RENEW_EVERY = LEASE / 3
_NAME = re.compile(r"[.\-_A-Za-z0-9]{1,64}")


@dataclass(slots=True)
class Replay:
    """A replay and its progress, as stored in the ``replays`` table."""

    name: str
    archive: str
    bus: str
    rules: tuple[str, ...] | None
    start_time: float
    end_time: float
    speed: float | None
    description: str = ""
    state: str = STARTING
    reason: str = ""
    total: int = 0
    replayed: int = 0
    # Position: the last event put on the bus, as its row's time and seq and
    # its place in the row (``ArchiveStore.read``).
    cursor_time: float = float("-inf")
    cursor_seq: int = 0
    cursor_item: int = 0
    last_replayed: float | None = None
    started: float | None = None
    ended: float | None = None

    def row(self) -> tuple[Any, ...]:
        """Its values in the order of ``pipelines.archive.REPLAY_COLUMNS``."""
        rules = orjson.dumps(list(self.rules)).decode() if self.rules is not None else None
        return (
            self.name,
            self.archive,
            self.bus,
            rules,
            self.start_time,
            self.end_time,
            self.speed,
            self.description,
            self.state,
            self.reason,
            self.total,
            self.replayed,
            self.cursor_time,
            self.cursor_seq,
            self.cursor_item,
            self.last_replayed,
            self.started,
            self.ended,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Replay:
        replay = cls(*row)
        if replay.rules is not None:
            replay.rules = tuple(orjson.loads(replay.rules))  # type: ignore[arg-type]
        return replay

    def describe(self) -> dict[str, Any]:
        """DescribeReplay's fields, with our progress counts and speed."""
        destination: dict[str, Any] = {
            "Arn": f"arn:aws:events:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:event-bus/{self.bus}"
        }
        if self.rules is not None:
            destination["FilterArns"] = list(self.rules)
        return {
            "ReplayName": self.name,
            "ReplayArn": f"arn:aws:events:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:replay/{self.name}",
            "Description": self.description,
            "State": self.state,
            "StateReason": self.reason,
            "EventSourceArn": archive_arn(self.archive),
            "Destination": destination,
            "EventStartTime": iso(self.start_time),
            "EventEndTime": iso(self.end_time),
            "EventLastReplayedTime": iso(self.last_replayed),
            "ReplayStartTime": iso(self.started),
            "ReplayEndTime": iso(self.ended),
            "EventsTotal": self.total,
            "EventsReplayed": self.replayed,
            "Speed": self.speed,
        }


def _invalid(message: str) -> ReplayError:
    return ReplayError("ValidationException", message)


def _exists(name: str) -> ReplayError:
    return ReplayError("ResourceAlreadyExistsException", f"Replay {name} already exists.")


def _check_times(start: float, end: float) -> None:
    for label, value in (("EventStartTime", start), ("EventEndTime", end)):
        try:
            datetime.fromtimestamp(value, UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            raise _invalid(f"{label} {value!r} is not a time (epoch seconds)") from None
    if not start < end:
        raise _invalid("EventStartTime must be before EventEndTime.")


class _Lost(Exception):
    """This runner no longer owns the replay: another runner took it over."""


class _CancelledElsewhere(Exception):
    """Another runner asked for the replay to be cancelled."""


def runner_name() -> str:
    """A name for this runner's claims, unique among the runners of a cluster
    (and between two runtimes of one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def load(store: ArchiveStore, name: str | None = None) -> list[Replay]:
    return [Replay.from_row(row) for row in await store.replays(name)]


async def read_replays(store: ArchiveStore, name: str | None = None) -> list[dict[str, Any]]:
    """Describe one replay or all, from the store (what ``pipelines replay status`` shows)."""
    replays = await load(store, name)
    if name is not None and not replays:
        raise ResourceNotFoundError(f"Replay {name} does not exist.")
    return [replay.describe() for replay in replays]


async def replay_status(state: Location, name: str | None = None) -> list[dict[str, Any]]:
    """Describe one replay or all from the state database at ``state``, whether
    its pipeline runs or not (what ``pipelines replay status`` shows)."""
    async with ArchiveStore.existing(state) as store:
        return await read_replays(store, name)


class Replays:
    """The runtime's replays (``runtime.replays``): started, resumed, cancelled,
    each a task of the runtime."""

    def __init__(self, host: ReplayHost, owner: str | None = None) -> None:
        self.host = host
        #: Who this runner is in the replays' ``owner`` column.
        self.owner = owner if owner is not None else runner_name()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._replays: dict[str, Replay] = {}
        self._cancelling: set[str] = set()
        #: Per replay, its progress as last saved once its events were safe
        #: (cursor time, seq and item, last replayed, replayed): a stop resumes there.
        self._safe: dict[str, tuple[float, int, int, float | None, int]] = {}
        #: Per replay, the intake position before its chunk under way.
        self._since: dict[str, int] = {}

    @property
    def store(self) -> ArchiveStore:
        store = self.host.archives.store
        if store is None:
            raise StateError("replays need a state database: give the runtime a state_path")
        return store

    async def start(
        self,
        name: str,
        archive: str,
        start_time: float,
        end_time: float,
        destination_bus: str = "default",
        rules: Sequence[str] | None = None,
        *,
        speed: float | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """StartReplay; times are epoch seconds. Returns ReplayArn, State, ReplayStartTime."""
        store = self.store
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _invalid(f"replay name {name!r} must be 1 to 64 letters, digits, '.', '-', '_'")
        _check_times(start_time, end_time)
        if speed is not None and not (isinstance(speed, int | float) and 0 < speed < math.inf):
            raise _invalid(f"speed must be a number above 0, not {speed!r}")
        bus = self.host.bus(destination_bus)
        if rules is not None:
            if isinstance(rules, str) or not all(isinstance(r, str) for r in rules):
                raise _invalid(f"rules must be a list of rule names, not {rules!r}")
            rules = tuple(rules)
            for rule in rules:
                if bus.describe_rule(rule).get("EventPattern") is None:
                    raise _invalid(f"rule {rule} has a schedule, not an event pattern")
        if name in self._replays:  # claimed below before any await: no two starts race
            raise _exists(name)
        replay = Replay(name, archive, bus.name, rules, start_time, end_time, speed, description)
        replay.started = self.host.clock.time()
        self._replays[name] = replay
        try:
            if await load(store, name):
                raise _exists(name)
            if not await store.exists(archive):
                raise ResourceNotFoundError(f"Archive {archive} does not exist.")
            # Another runner may start the same name meanwhile: one insert wins.
            if not await store.create_replay(replay.row(), self.owner, self._lease()):
                raise _exists(name)
        except BaseException:
            del self._replays[name]
            raise
        self._tasks[name] = self.host.spawn(self._run(replay))
        return {
            "ReplayArn": replay.describe()["ReplayArn"],
            "State": replay.state,
            "ReplayStartTime": iso(replay.started),
        }

    async def cancel(self, name: str) -> dict[str, Any]:
        """CancelReplay: a STARTING or RUNNING replay becomes CANCELLING, then
        CANCELLED (by the runner that runs it, if another one does)."""
        replay = self._replays.get(name)
        if replay is None:
            stored = await load(self.store, name)
            if not stored:
                raise ResourceNotFoundError(f"Replay {name} does not exist.")
            replay = stored[0]
            if replay.state in (STARTING, RUNNING) and await self.store.cancel_replay(name):
                return {"ReplayArn": replay.describe()["ReplayArn"], "State": CANCELLING}
            replay = (await load(self.store, name))[0]  # it moved meanwhile
        task = self._tasks.get(name)
        if replay.state not in (STARTING, RUNNING) or task is None:
            raise ReplayError(
                "IllegalStatusException",
                f"Replay {name} is {replay.state}: only a STARTING or RUNNING replay"
                " can be cancelled.",
            )
        # No await from the check to here: the replay cannot end in between.
        replay.state = CANCELLING
        self._cancelling.add(name)
        task.cancel()
        return {"ReplayArn": replay.describe()["ReplayArn"], "State": CANCELLING}

    async def describe(self, name: str) -> dict[str, Any]:
        replay = self._replays.get(name)
        if replay is not None:
            return replay.describe()
        return (await read_replays(self.store, name))[0]

    async def list(self) -> list[dict[str, Any]]:
        stored = {replay.name: replay for replay in await load(self.store)}
        stored.update(self._replays)
        return [replay.describe() for replay in stored.values()]

    async def resume(self) -> None:
        """At start: go on with replays that were running when the runtime
        stopped, and take over those whose runner let them go or died (its
        lease ended); replays another runner runs stay there."""
        store, clock = self.store, self.host.clock
        for stored in await load(store):
            name = stored.name
            if stored.state not in ACTIVE or name in self._replays:
                continue
            if not await store.claim_replay(name, self.owner, clock.time(), self._lease()):
                log.debug("replay %s runs on another runner", name)
                continue
            # Read again now that it is ours: its owner may have saved since.
            found = await load(store, name)
            if not found:
                continue
            replay = found[0]
            if replay.state == CANCELLING:  # cancelled, then stopped before it ended
                await self._finish(replay, CANCELLED, "Cancelled before the runtime stopped.")
            elif replay.state in ACTIVE:
                log.info("resuming replay %s after %d events", replay.name, replay.replayed)
                self._spawn(replay)

    def adoption(self) -> Upkeep:
        """Taking over, now and then, the replays of runners that died (a
        cluster's runners run it; ``resume`` does it once, at start)."""
        return Upkeep(LEASE, self.resume, "replays left by a stopped runner")

    async def stop(self) -> None:
        """At shutdown: stop every replay where it is, progress saved; RUNNING
        ones resume at the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def _spawn(self, replay: Replay) -> None:
        self._replays[replay.name] = replay
        self._tasks[replay.name] = self.host.spawn(self._run(replay))

    async def _run(self, replay: Replay) -> None:
        """The replay's task: nothing it meets ends the runtime, only the replay."""
        try:
            try:
                await self._replay(replay)
                state, reason = COMPLETED, ""
            except asyncio.CancelledError:
                if replay.name not in self._cancelling:  # the runtime stops: resume later
                    # The position it saves must have its events in the intake:
                    # wait for the chunk's write, or go back to the last safe one
                    # (that chunk is then replayed again: at least once).
                    await self._secure(replay)
                    try:
                        # Let go of it: the next runner to start takes it over.
                        if not await self._save(replay, release=True):
                            log.warning("replay %s: another runner took it over", replay.name)
                    except Exception:
                        log.exception("saving the progress of replay %s failed", replay.name)
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()  # asked for by cancel(), and handled here
                state, reason = CANCELLED, "Cancelled by request."
            except _CancelledElsewhere:
                state, reason = CANCELLED, "Cancelled by request."
            except _Lost:
                log.warning(
                    "replay %s: another runner took it over after %d events; this one stops",
                    replay.name,
                    replay.replayed,
                )
                return
            except Exception as exc:  # a gone archive or bus, a database error, a bug
                log.error("replay %s failed: %s", replay.name, exc)
                state, reason = FAILED, f"{type(exc).__name__}: {exc}"[:512]
            await self._finish(replay, state, reason)
        finally:
            del self._tasks[replay.name]
            del self._replays[replay.name]
            self._cancelling.discard(replay.name)
            self._safe.pop(replay.name, None)
            self._since.pop(replay.name, None)

    async def _secure(self, replay: Replay) -> None:
        since = self._since.get(replay.name)
        try:
            if since is not None:
                await self.host.bus(replay.bus).committed(since)
        except (PipelinesError, asyncio.CancelledError):
            self._rewind(replay)

    def _mark_safe(self, replay: Replay) -> None:
        self._safe[replay.name] = (
            replay.cursor_time,
            replay.cursor_seq,
            replay.cursor_item,
            replay.last_replayed,
            replay.replayed,
        )

    def _rewind(self, replay: Replay) -> None:
        safe = self._safe.get(replay.name)
        if safe is not None:
            (
                replay.cursor_time,
                replay.cursor_seq,
                replay.cursor_item,
                replay.last_replayed,
                replay.replayed,
            ) = safe

    async def _finish(self, replay: Replay, state: str, reason: str) -> None:
        # The state changes before the save: a cancel() meanwhile finds it ended.
        replay.state, replay.reason = state, reason
        replay.ended = self.host.clock.time()
        try:
            if not await self._save(replay, release=True):
                log.warning("replay %s: another runner took it over; not ended", replay.name)
        except Exception:
            log.exception("saving the end of replay %s failed", replay.name)

    def _lease(self) -> float:
        return self.host.clock.time() + LEASE

    async def _save(self, replay: Replay, *, release: bool = False) -> bool:
        """Write the replay's state if this runner owns it (renewing its lease,
        or letting it go when ``release``); whether it did."""
        lease = None if release else self._lease()
        return await self.store.save_replay(replay.row(), self.owner, lease)

    async def _progress(self, replay: Replay) -> None:
        """Write the replay's progress; ``_Lost`` if another runner took it
        over, ``_CancelledElsewhere`` if another runner cancelled it."""
        store = self.store
        if not await store.save_replay(replay.row(), self.owner, self._lease(), progress=True):
            await self._renew(replay)
            raise _Lost(replay.name)  # still ours, and not cancelled: it was taken meanwhile

    async def _renew(self, replay: Replay) -> None:
        """Extend the lease; raise as ``_progress`` when it is not ours to run."""
        state = await self.store.renew_replay(replay.name, self.owner, self._lease())
        if state is None:
            raise _Lost(replay.name)
        if state == CANCELLING:
            raise _CancelledElsewhere(replay.name)

    async def _replay(self, replay: Replay) -> None:
        store, clock = self.store, self.host.clock
        if not await store.exists(replay.archive):
            raise ResourceNotFoundError(f"Archive {replay.archive} does not exist.")
        bus = self.host.bus(replay.bus)
        if replay.state == STARTING:
            replay.total = await store.count(replay.archive, replay.start_time, replay.end_time)
            replay.state = RUNNING
            await self._progress(replay)
        addressed = frozenset(replay.rules) if replay.rules is not None else None
        if replay.cursor_time == float("-inf"):
            replay.cursor_time = replay.start_time - 1e-9  # strictly before the window
        pace = _Pace(clock.time(), replay.speed, lambda: self._renew(replay))
        self._mark_safe(replay)
        while rows := await store.read(
            replay.archive,
            (replay.cursor_time, replay.cursor_seq, replay.cursor_item),
            replay.end_time,
            CHUNK,
        ):
            events = []
            for *_, body in rows:
                event = parse_json(body)
                event["replay-name"] = replay.name
                events.append(event)
            done = 0
            since = self._since[replay.name] = bus.intake_position()
            while done < len(rows):
                due = await pace.wait(clock, rows, done)
                taken = bus.offer(events[done:due], clock.time(), addressed)
                if taken:
                    done += taken
                    moment, seq, item, _ = rows[done - 1]
                    replay.cursor_time, replay.cursor_seq, replay.cursor_item = moment, seq, item
                    replay.last_replayed = moment
                    replay.replayed += taken
                if done < due and not await bus.wait_for_room():
                    raise ResourceNotFoundError(f"Event bus {bus.name} is stopped or deleted.")
            # The position moves on only once the chunk's events are safe.
            await bus.committed(since)
            self._mark_safe(replay)
            await self._progress(replay)


class _Pace:
    """When rows may go: all at once (no speed), or at the archive's pace / speed."""

    def __init__(
        self, began: float, speed: float | None, renew: Callable[[], Awaitable[None]]
    ) -> None:
        self.began = began
        self.speed = speed
        #: Called at least every ``RENEW_EVERY`` seconds of a long wait.
        self.renew = renew
        self.first: float | None = None  # event time of the first row replayed this run

    async def wait(self, clock: Clock, rows: list[tuple[float, int, int, bytes]], done: int) -> int:
        """Sleep until row ``done`` is due; returns the end of the rows due by then."""
        if self.speed is None:
            return len(rows)
        if self.first is None:
            self.first = rows[done][0]
        offset = (rows[done][0] - self.first) / self.speed
        until = self.began + offset
        while True:
            await sleep(clock, min(until - clock.time(), RENEW_EVERY))
            if clock.time() >= until:
                break
            await self.renew()  # the owner keeps its replay through a long gap
        horizon = (clock.time() - self.began) * self.speed + self.first
        due = done + 1
        while due < len(rows) and rows[due][0] <= horizon:
            due += 1
        return due
