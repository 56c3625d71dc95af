"""The durable intake: an accepted event is in the state database before its
producer hears so, and leaves it only once every delivery of it is settled.

Every event a bus takes in (from ``put_events``, a schedule, a replay, an
alarm, a source) gets a sequence number and a row in ``intake``. The row is
written by one writer task in group commit: the events reserved while one
transaction commits go into the next ones (the older half of the callers
waiting at a time, so producers do not fall in step), so the transaction
grows with the load and a producer waits for one commit, not one per event. ``put_events`` answers
only once the rows of its events are committed (``committed``); the event is
dispatched meanwhile, from memory, so the write adds no latency to delivery.

When every job of an event is delivered, dead-lettered, dropped or saved as a
retry (its ``Settlement`` reaches zero) the row's number joins the next
transaction's deletes. At start, every row left is an event whose deliveries
were not all settled when the runner stopped or died: it is dispatched again,
to every rule target it matches except those whose retry was saved
(``pending_deliveries``), which resume on their own.

So delivery is at least once: a crash between a delivery and the delete of
its event's row delivers that event again (to the targets it matches then).

The archives' rows of the events ``put_events`` takes in ride along
(``attach``): each write is ONE transaction holding the new intake rows, the
archive rows and the deletes of what settled, run in one trip to the
database's thread. So a durable put costs one commit, and an event's archive
rows are committed with its intake row (after it, when the bus made the put
wait for room), never before, and before the put is answered: a crash cannot
leave an event archived but unacknowledged (then archived again by the put
that follows).

Other writes that must not land without the rows reserved before them ride
along too (``ride``): the scheduler's marks of the runs it fired go in the
same transaction as the runs' events, so a run is never marked done without
its event, and a turn of the scheduler costs one commit, not two.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from pipelines.delivery import Settlement
from pipelines.errors import StateError
from pipelines.event import dump_json, parse_json
from pipelines.state import StateDB
from pipelines.store import Dialect, Step

log = logging.getLogger("pipelines.intake")

#: The most turns of the event loop a write waits for the rows it would
#: write to settle (``DurableIntake._settle_first``). A ``function`` target
#: whose function is ``async def`` and does not wait settles an event put
#: alone in the third turn after its put (its bus's dispatcher, its
#: target's worker, its call; a plain function runs in a worker thread and
#: takes longer): measured with
#: bench/bench_archive.py (100 rules, each with a function target, durable
#: intake), one producer went from about 15,000 to 19,000 events/s, its
#: puts committing their archive rows alone, and 100 producers did not move.
SETTLE_TURNS = 3

#: An intake row: [seq, bus, event as stored (JSON text), ingested, addressed
#: as stored: None for every rule the event matches, else JSON: a scheduled
#: rule's name or the sorted names a replay is for].
Row = tuple[int, str, str, float, str | None]


# One statement each, so each is its own transaction and one trip to the
# database's thread: the rows go as one JSON array (the event's text as a
# JSON string, so it is stored exactly as written). A row an interrupted
# write may have committed already is skipped.
def insert_statement(dialect: Dialect) -> str:
    kinds = ("integer", "text", "blob", "real", "text")
    items = ", ".join(dialect.json_item("r", n, kind) for n, kind in enumerate(kinds))
    return (
        f"INSERT INTO intake (runner, seq, bus, event, ingested, addressed) SELECT ?, {items}"
        f" FROM {dialect.json_rows('r')} WHERE true ON CONFLICT (runner, seq) DO NOTHING"
    )


def delete_statement(dialect: Dialect) -> str:
    seq = dialect.json_value("k", "integer")
    return (
        "DELETE FROM intake WHERE runner = ?"
        f" AND seq IN (SELECT {seq} FROM {dialect.json_values('k')})"
    )


#: Archive rows: (archive name, event time in epoch seconds, event JSON), as
#: ``pipelines.archive`` makes them (``Archiver.rows``).
ArchiveRows = list[tuple[str, float, bytes]]


Numbered = TypeVar("Numbered", bound=tuple[Any, ...])


def _split(items: list[Numbered], last: int) -> tuple[list[Numbered], list[Numbered]]:
    """Items (in number order, the number first) up to ``last``, and the rest."""
    cut = bisect.bisect_right(items, last, key=operator.itemgetter(0))
    return items[:cut], items[cut:]


def _unwritten(rows: list[Row], settled: list[int]) -> tuple[list[Row], list[int]]:
    """The rows to insert and the numbers to delete, without the events
    settled before their row was written: inserting and deleting such a row
    in one transaction leaves the table as it was, so neither goes to the
    database. (Most events of a target that answers at once, an MQTT publish
    at QoS 0, settle before the commit that would write them.)"""
    done = set(settled)
    kept = [row for row in rows if row[0] not in done]
    if len(kept) == len(rows):
        return rows, settled
    taken = {row[0] for row in rows}
    return kept, [seq for seq in settled if seq not in taken]


@dataclass(frozen=True, slots=True)
class Unsettled:
    """An intake row found at start: an event not settled when the runner stopped."""

    seq: int
    bus: str
    event: dict[str, Any]
    ingested: float
    addressed: str | frozenset[str] | None


@dataclass(eq=False, slots=True)
class RowSettlement(Settlement):
    """The settlement of an event with a row in the durable intake: settled,
    it queues the row's delete, then tells the producer (if one waits). The
    row and the producer are fields, not a closure: one is made per event."""

    seq: int = 0
    intake: DurableIntake | None = None

    def fire(self) -> None:
        intake = self.intake
        if intake is not None:
            self.intake = None  # fired twice: the row is deleted once
            intake._settled.append(self.seq)
            intake._wake.set()
        Settlement.fire(self)


def _stored(addressed: str | frozenset[str] | None) -> str | None:
    if addressed is None:
        return None
    return orjson.dumps(addressed if isinstance(addressed, str) else sorted(addressed)).decode()


def _address(stored: str | None) -> str | frozenset[str] | None:
    if stored is None:
        return None
    value = orjson.loads(stored)
    return value if isinstance(value, str) else frozenset(value)


def unsettled(rows: Iterable[tuple[int, str, Any, float, str | None]]) -> list[Unsettled]:
    """Intake rows as stored, read back as events to dispatch again."""
    return [
        Unsettled(seq, bus, parse_json(body), ingested, _address(addressed))
        for seq, bus, body, ingested, addressed in rows
    ]


class DurableIntake:
    """Intake rows of one state database: reserve, commit, settle, recover.

    ``run()`` is the writer task (owned by the runtime); ``close()`` tells it
    to write what is left, the last deletes of a stop, and return."""

    def __init__(self, store: StateDB) -> None:
        self.store = store
        # The rows go as one JSON array, the deleted numbers as another, in
        # the spelling of the store's engine.
        self._insert = insert_statement(store.dialect)
        self._delete = delete_statement(store.dialect)
        self._next = 1
        #: Rows reserved and not yet written: (seq, bus, body, ingested, addressed).
        self._rows: list[Row] = []
        #: Sequence numbers whose events are settled, to delete.
        self._settled: list[int] = []
        self._committed = 0  # every seq up to this one is written (or failed)
        #: Callers waiting for a seq to be committed, in seq order.
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        #: Ranges of seqs whose write failed (the last few: failures are rare).
        self._lost: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        #: Archive rows to write with the intake rows, each group under the
        #: number it took, and whether one of them belongs to a ``strict``
        #: archive (the commit holding it syncs to disk).
        self._archived: list[tuple[int, ArchiveRows, bool]] = []
        #: How the archive rows go into their table (``ArchiveStore.insert``).
        self.archive_insert: Callable[[ArchiveRows], list[Step]] | None = None
        #: Statements to run with the rows reserved before them (``ride``),
        #: each under the number it took.
        self._riders: list[tuple[int, Step]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.written = 0  # rows written, for tests and the metrics
        self.archived = 0  # archive rows written

    async def open(self) -> list[Unsettled]:
        """The rows a previous run left, in the order they were taken in; new
        numbers continue after them."""
        rows = await self.store.rows(
            "SELECT seq, bus, event, ingested, addressed FROM intake WHERE runner = ? ORDER BY seq",
            (self.store.runner,),
        )
        # Numbers only need to be unique among the rows there are.
        self._committed = rows[-1][0] if rows else 0
        self._next = self._committed + 1
        return unsettled(rows)

    # -- on the hot path: no await ---------------------------------------------------

    def reserve(
        self,
        bus: str,
        event: dict[str, Any],
        ingested: float,
        addressed: str | frozenset[str] | None,
        producer: Settlement | None,
    ) -> Settlement:
        """Number the event, queue its row for the next commit, and return the
        settlement its jobs share: settling it deletes the row (then tells the
        producer, if one waits). An event its producer holds
        (``Settlement.held``: its source sends it again if the runner stops
        before it settles) gets no row: its own settlement is returned."""
        if producer is not None and producer.held:
            return producer
        seq = self._next
        self._next = seq + 1
        self._rows.append((seq, bus, dump_json(event).decode(), ingested, _stored(addressed)))
        self._wake.set()
        return self.settlement(seq, producer)

    def settlement(self, seq: int, producer: Settlement | None = None) -> Settlement:
        callback = producer.callback if producer is not None else None
        return RowSettlement(callback, seq=seq, intake=self)

    def attach(self, rows: ArchiveRows, *, strict: bool) -> None:
        """Write archive rows in the same transaction as the intake rows
        reserved last (call it with no await since their ``reserve``). They
        take a number of their own, so ``committed(reserved)`` waits for
        them even when their events' rows went in an earlier write."""
        if self.archive_insert is None:
            raise StateError("the durable intake was not given the archive table")
        self._archived.append((self._next, rows, strict))
        self._next += 1
        self._wake.set()

    def ride(self, step: Step) -> int:
        """Run ``step`` in the same transaction as the rows reserved so far
        (or a later one, never an earlier one). It takes a number of its
        own: ``committed(number)`` returns once it is committed, and raises
        ``StateError`` when its write failed (then none of it was written)."""
        number = self._next
        self._next += 1
        self._riders.append((number, step))
        self._wake.set()
        return number

    def numbers(self, count: int) -> range:
        """``count`` new sequence numbers for rows already in the table under
        another runner's name (adopted: ``StateDB.take_over`` renumbers them),
        which settle and are deleted as this runner's own."""
        first = self._next
        self._next += count
        return range(first, first + count)

    @property
    def reserved(self) -> int:
        """The last sequence number given out."""
        return self._next - 1

    # -- durability --------------------------------------------------------------------

    async def committed(self, last: int, first: int = 1) -> None:
        """Return once every row up to ``last`` is committed; ``StateError`` when
        a write that held one of ``first``..``last`` failed (the producer should
        put again). A caller passes the range its events fell in (other
        producers' may be in it too: a failure near them refuses it as well,
        and a put again delivers twice rather than never)."""
        if last > self._committed:
            done = asyncio.get_running_loop().create_future()
            self._waiting.append((last, done))
            await done
        if any(lo <= last and first <= hi for lo, hi in self._lost):
            raise StateError(
                f"the intake write to {self.store.path} failed (with its events' archive rows)"
            )

    def close(self) -> None:
        """Tell the writer to write what is left and return (at stop, once
        nothing more is taken in or settled)."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """The writer task: commit what gathered, wake who waits, repeat, until
        ``close()``."""
        try:
            while not self._closing:
                await self._wake.wait()
                self._wake.clear()
                while not self.idle:
                    await self._settle_first()
                    await self._write()
        finally:
            for _, done in self._waiting:
                if not done.done():
                    done.set_exception(StateError("the intake writer stopped before this write"))
            self._waiting.clear()

    async def _settle_first(self) -> None:
        """The turns of the event loop a write lets go by first: one, then
        more, up to ``SETTLE_TURNS`` in all, while rows are reserved and
        not all settled.

        One turn: when there are only deletes, which nobody waits for, a
        producer just answered adds its next rows and both share one commit
        (else a lone producer waits for a commit of deletes, then its own).
        More: meanwhile the reserved rows' bus dispatches their events and
        targets that answer at once deliver them, and a row settled before
        its write is never written (nor deleted by a commit after). A lone
        producer then commits its archive rows alone, or nothing. The wait
        ends as soon as every row is settled; a target that takes longer
        (a trip to a database, over the network or to a worker thread)
        leaves its rows to be written up to two turns later than one turn
        would (on a busy loop a turn runs every callback ready)."""
        await asyncio.sleep(0)
        for _ in range(SETTLE_TURNS - 1):
            # (Fewer settled numbers than rows: some row is not settled.)
            if len(self._settled) >= len(self._rows) and self._all_settled():
                return
            await asyncio.sleep(0)

    def _all_settled(self) -> bool:
        """Every reserved row's number is among the settled ones (true when
        none is reserved)."""
        settled = set(self._settled)
        return all(row[0] in settled for row in self._rows)

    async def _write(self) -> None:
        """Write what is reserved and attached (then tell who waits) and delete
        what is settled, all as it was when this write began, in one
        transaction: inserts first, so a number settled meanwhile whose row
        was reserved meanwhile waits for the next write (its DELETE would find
        nothing and the row, inserted next, would stay behind)."""
        last = self._cut()
        rows, self._rows = _split(self._rows, last)
        settled = [seq for seq in self._settled if seq <= last]
        self._settled = [seq for seq in self._settled if seq > last]
        groups, self._archived = _split(self._archived, last)
        archived = [row for _, group, _ in groups for row in group]
        strict = any(strict for _, _, strict in groups)
        riding, self._riders = _split(self._riders, last)
        if rows and settled:
            rows, settled = _unwritten(rows, settled)
        statements = self._statements(rows, archived, [step for _, step in riding], settled)
        if not statements:  # every row taken settled already: nothing to wait for
            self._wrote([], [], [], last, None, awaited=False)
            return
        awaited = bool(rows or archived or riding)
        try:
            # strict: this commit is synced to disk before the puts answer.
            await self.store.batch(statements, synced=strict)
        except asyncio.CancelledError:
            # Cancelled mid-write (the loop torn down without stop()): whether
            # it committed is unknown, so it is not written again (its archive
            # rows would be twice); who waits hears the writer stopped.
            raise
        except Exception as exc:  # the database refused the write (disk full, I/O)
            self._wrote(rows, archived, settled, last, exc, awaited=awaited)
        else:
            self._wrote(rows, archived, settled, last, None, awaited=awaited)

    def _cut(self) -> int:
        """The last number this write takes: that of the older half of the
        callers waiting (all when one or none waits). Taking everything
        would keep many producers in step (all validate while the database
        idles, then all wait for one commit); taking half lets one half's
        commit run on the database's thread while the other half is taken
        in on the event loop. A caller's numbers are never split from its
        archive rows: they go under its last number, so in its last write."""
        waiting = len(self._waiting)
        if waiting < 2:
            return self._next - 1
        return self._waiting[(waiting + 1) // 2 - 1][0]

    def _statements(
        self, rows: list[Row], archived: ArchiveRows, riding: list[Step], settled: list[int]
    ) -> list[Step]:
        statements: list[Step] = []
        if rows:
            statements.append(Step(self._insert, (self.store.runner, orjson.dumps(rows))))
        if archived:
            assert self.archive_insert is not None  # attach() checked
            statements.extend(self.archive_insert(archived))
        statements.extend(riding)  # after the rows they ride with
        if settled:
            statements.append(Step(self._delete, (self.store.runner, orjson.dumps(settled))))
        return statements

    def _wrote(
        self,
        rows: list[Row],
        archived: ArchiveRows,
        settled: list[int],
        last: int,
        exc: Exception | None,
        *,
        awaited: bool,
    ) -> None:
        """Account for a finished write: who waits learns its outcome
        (``awaited``: it held rows, archive rows or riders, which someone waits for)."""
        if exc is None:
            self.written += len(rows)
            self.archived += len(archived)
        elif awaited:
            self._failed(rows, archived, exc, last)
            # The refusal may be theirs (an archive table gone): the deletes
            # go again with the next write.
            self._settled[:0] = settled
        elif settled:
            # Left in the intake: delivered again after a restart (at least once).
            log.error("intake delete of %d settled events failed: %s", len(settled), exc)
        if last > self._committed:
            self._committed = last
            self._release()

    def _failed(self, rows: list[Row], archived: ArchiveRows, exc: Exception, last: int) -> None:
        """A write the database refused (disk full, I/O, a table gone): none
        of it is kept, and who waits for a number in it hears so."""
        log.error(
            "intake and archive write of %d events (%d archive rows) failed: %s",
            len(rows),
            len(archived),
            exc,
        )
        # Every number after the last write's is in this one.
        self._lost.append((self._committed + 1, last))

    def _release(self) -> None:
        while self._waiting and self._waiting[0][0] <= self._committed:
            _, done = self._waiting.popleft()
            if not done.done():
                done.set_result(None)

    @property
    def idle(self) -> bool:
        return not self._rows and not self._settled and not self._archived and not self._riders

    async def flush(self) -> None:
        """Write what is reserved or settled now (at stop, the writer stopped)."""
        while not self.idle:
            await self._write()
