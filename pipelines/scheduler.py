"""The scheduler: one task that fires every scheduled rule on time.

Each scheduled rule's next firing waits in one heap, ordered by time; the task
sleeps on the runtime's clock until the earliest (or until a rule is added,
changed or removed), fires what is due, works out each rule's next firing and
writes the marks of the rules that fired (``ScheduleMark``: the last firing) to
the state database in one transaction. Nothing polls: 10,000 idle schedules
cost one timer.

Runs are fired in batches, not one wake-up each: after a turn that fired
something, the next turn comes ``window`` seconds later at the earliest
(``COALESCE_WINDOW``, 1 s), and fires every run due by then. So 10,000
``rate(1 minute)`` schedules spread over the minute cost one wake-up and
one commit a second, not 167 of each: the marks of a turn's runs ride in
the durable intake's transaction of the runs' events (``DurableIntake.ride``). A run
that has no other run in the window before it fires on time; a run in a busy
second fires at most ``window`` late, never early. EventBridge promises only
that a scheduled rule fires within its minute, and every schedule has at
least a minute's granularity, so a second is well inside that. The event's
``time`` is always the run's scheduled time.

A firing puts EventBridge's scheduled event onto the rule's bus, addressed to
that rule only, so it goes through the rule's targets with their transformers,
retries and dead letters like any matched event.

Missed runs: a run the scheduler could not fire within ``LATE_GRACE`` seconds
of its time (plus the schedule's flexible window), because the process was
down or the machine was asleep, follows the rule's ``missed_runs`` policy:
``skip`` drops it, ``fire_once`` fires one event for the latest missed run, at
once, however many were missed (if it is no older than the schedule's
``late_limit``, when it has one).

A flexible window's moment is ``schedule.flexible_delay`` of the schedule's
identity and the run's time: the same in every runner and after a restart.

A schedule that will never fire again once its last run is marked (a
one-time ``at()`` run, a run at its end date) is *complete*: the callables
given to ``on_complete`` hear of it (EventBridge Scheduler's
``ActionAfterCompletion: DELETE`` deletes such a schedule).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pipelines.clock import Cancellable, Clock
from pipelines.errors import StateError
from pipelines.event import make_event
from pipelines.intake import DurableIntake
from pipelines.schedule import FIRE_ONCE, Schedule, flexible_delay
from pipelines.state import MarkRow, ScheduleMark, StateDB


class ScheduledBus(Protocol):
    """What the scheduler uses of a bus (``pipelines.bus.Bus``)."""

    @property
    def name(self) -> str: ...

    def scheduled_rule(self, name: str) -> object | None:
        """The enabled scheduled rule ``name``, or None (a run then passes)."""
        ...

    def rule_arn(self, name: str) -> str: ...

    def fire(self, rule_name: str, event: dict[str, Any], ingested: float) -> bool: ...


log = logging.getLogger("pipelines.scheduler")

#: How late (in seconds) a run may still fire before it counts as missed.
LATE_GRACE = 60.0
SCHEDULED_SOURCE = "aws.events"
SCHEDULED_DETAIL_TYPE = "Scheduled Event"
#: After a turn that fired runs, the next one waits this long at the earliest
#: (seconds): the runs due meanwhile fire together. See the module's docstring.
COALESCE_WINDOW = 1.0
_EPSILON = 1e-6
_BURST = 256


@dataclass(eq=False, slots=True)
class _Entry:
    bus: ScheduledBus
    rule: str
    schedule: Schedule
    anchor: float = 0.0
    last_due: float | None = None
    active: bool = True
    #: The rule's ARN (the event's resource), worked out once.
    arn: str = ""
    #: Placed in the heap (its anchor and last run are known).
    admitted: bool = False
    #: Its runs in the heap (none once fired: the schedule is complete).
    pending: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.bus.name, self.rule)

    def mark(self) -> MarkRow:
        """Its mark, as saved (a plain tuple: one is made per run fired)."""
        return (self.bus.name, self.rule, self.schedule.fingerprint, self.anchor, self.last_due)


# (fire at, tie-breaker, scheduled time, whether the next firing follows it);
# the tie-breaker also finds the run's entry in ``Scheduler._waiting``. Only
# numbers, so the garbage collector stops tracking the tuple: 10,000 rules'
# runs, each waiting a minute, would otherwise reach the oldest generation
# and bring a full collection (50-70 ms) every 100 s or so.
_Item = tuple[float, int, float, bool]


class Scheduler:
    """Fires the scheduled rules of a runtime's buses. ``run()`` is its task."""

    def __init__(
        self, clock: Clock, rng: random.Random, *, window: float = COALESCE_WINDOW
    ) -> None:
        self.clock = clock
        self.rng = rng
        #: Runs due within this many seconds of a turn's end fire together
        #: in the next turn (0: each at its time).
        self.window = window
        self.state: StateDB | None = None
        #: The runtime's durable intake, while it runs with one.
        self.intake: DurableIntake | None = None
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._heap: list[_Item] = []
        self._order = itertools.count()
        #: The entry of each run in the heap, by its tie-breaker.
        self._waiting: dict[int, _Entry] = {}
        self._joining: list[_Entry] = []
        self._leaving: list[tuple[str, str]] = []
        #: Saved marks of rules not yet placed (loaded at the first turn); a
        #: placed rule's mark is its entry's anchor and last run.
        self._marks: dict[tuple[str, str], ScheduleMark] | None = None
        #: While rules are being placed, their first runs wait here, to join
        #: the heap together.
        self._placing: list[_Item] | None = None
        self._wake = asyncio.Event()
        #: Scheduled events put onto buses; missed runs skipped; loop turns.
        self.fired = 0
        self.skipped = 0
        self.wakeups = 0
        self._sleeping = False
        #: When the last turn that fired runs ended: the next waits for the window.
        self._quiet_until = -math.inf
        #: Told (bus name, rule) of each schedule that has no run left once
        #: its last run is marked; they must not block (queue the work).
        self.on_complete: list[Callable[[str, str], None]] = []
        self._complete: list[_Entry] = []

    def register(self, bus: ScheduledBus, rule: str, schedule: Schedule) -> None:
        """Schedule ``rule`` (new, or with a changed schedule)."""
        old = self._entries.get((bus.name, rule))
        if old is not None:
            old.active = False
            if old.admitted and self._marks is not None:
                # The new entry resumes from where the old one got to, if
                # the schedule's times did not change.
                self._marks[old.key] = ScheduleMark(*old.mark())
        entry = _Entry(bus, rule, schedule, arn=bus.rule_arn(rule))
        self._entries[entry.key] = entry
        self._joining.append(entry)
        self._wake.set()

    def unregister(self, bus: ScheduledBus, rule: str) -> None:
        """Stop scheduling ``rule`` and forget its marks (a rule deleted, or no
        longer scheduled)."""
        entry = self._entries.pop((bus.name, rule), None)
        if entry is not None:
            entry.active = False
            if self._marks is not None:
                self._marks.pop(entry.key, None)  # a rule added again starts afresh
            self._leaving.append(entry.key)
            self._wake.set()

    @property
    def idle(self) -> bool:
        """Waiting for the next firing with nothing to do before it."""
        return self._sleeping and not self._wake.is_set()

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self) -> None:
        """The scheduler task: runs until cancelled."""
        while True:
            self.wakeups += 1
            self._wake.clear()
            await self._admit()
            since = self.intake.reserved if self.intake is not None else 0
            fired = await self._fire_due()
            if fired:
                self._quiet_until = self.clock.time() + self.window
                if await self._marked(since, [entry.mark() for entry in fired]):
                    self._tell_complete()
            elif self._complete:  # missed to the last, nothing fired
                self._tell_complete()
            if not self._wake.is_set():
                await self._sleep()

    async def _admit(self) -> None:
        """Place newly registered rules (loading their marks) and forget removed ones."""
        if self._marks is None:
            self._marks = await self.state.schedule_marks() if self.state is not None else {}
        leaving, self._leaving = self._leaving, []
        for key in leaving:
            self._marks.pop(key, None)
            if self.state is not None:
                await self.state.delete_schedule_mark(*key)
        joining, self._joining = [e for e in self._joining if e.active], []
        if not joining:
            return
        now = self.clock.time()
        fresh: list[_Entry] = []
        self._placing = []
        try:
            for entry in joining:
                entry.admitted = True
                mark = self._marks.pop(entry.key, None)
                if mark is None or mark.fingerprint != entry.schedule.fingerprint:
                    fresh.append(entry)
                    # New (or changed): runs before now are not missed, they were
                    # never due. A rate without a start date fires at once.
                    start = entry.schedule.start
                    entry.anchor = start if start is not None else now
                    # Runs before now (a start date in the past) count as done,
                    # so a restart does not take them for missed ones.
                    entry.last_due = entry.schedule.latest_before(now, entry.anchor)
                    self._advance(entry, now - _EPSILON, now)
                else:
                    entry.anchor, entry.last_due = mark.anchor, mark.last_due
                    since = mark.last_due if mark.last_due is not None else mark.anchor - _EPSILON
                    self._advance(entry, since, now)
                    if not entry.pending and mark.last_due is not None:
                        # Its last run was marked before a stop: complete.
                        self._complete.append(entry)
        finally:
            placed, self._placing = self._placing, None
            self._place(placed)
        if fresh:  # a known schedule's mark is unchanged until it fires
            await self._save([entry.mark() for entry in fresh])
        self._tell_complete()

    def _tell_complete(self) -> None:
        """Tell ``on_complete`` of the schedules whose last run is marked."""
        complete, self._complete = self._complete, []
        for entry in complete:
            if entry.active:
                for listener in self.on_complete:
                    listener(entry.bus.name, entry.rule)

    def _place(self, items: list[_Item]) -> None:
        """Put runs into the heap: many at once (the runtime's start, 10,000
        rules) by one O(n) heapify, a few by a push each."""
        if len(items) > len(self._heap) // 4:
            self._heap.extend(items)
            heapq.heapify(self._heap)
        else:
            for item in items:
                heapq.heappush(self._heap, item)

    def _advance(self, entry: _Entry, since: float, now: float) -> None:
        """Queue the entry's first run after ``since``; runs already too late to
        fire follow the missed-run policy."""
        schedule = entry.schedule
        upcoming = schedule.next_after(since, entry.anchor)
        overdue = _cutoff(schedule, now)
        if upcoming is not None and upcoming < overdue:
            latest = schedule.latest_before(now + _EPSILON, entry.anchor)
            limit = schedule.late_limit
            if schedule.missed_runs == FIRE_ONCE and (
                limit is None or (latest is not None and latest >= now - limit)
            ):
                # One event for the latest run due by now, late ones included.
                assert latest is not None  # ``upcoming`` is one
                self._push(now, entry, latest, chain=False)
                self._missed(entry, upcoming, latest, "firing once for the latest")
                upcoming = schedule.next_after(latest, entry.anchor)
            else:
                latest = schedule.latest_before(overdue, entry.anchor)
                self.skipped += 1
                self._missed(entry, upcoming, latest or upcoming, "skipped (missed_runs: skip)")
                upcoming = schedule.at_or_after(overdue, entry.anchor)
        if upcoming is not None:
            delay = flexible_delay(
                schedule.identity or entry.arn, upcoming, schedule.flexible_window
            )
            self._push(upcoming + delay, entry, upcoming, chain=True)

    @staticmethod
    def _missed(entry: _Entry, first: float, last: float, outcome: str) -> None:
        log.warning(
            "rule %s on bus %s missed its runs from %s to %s: %s",
            entry.rule,
            entry.bus.name,
            _iso(first),
            _iso(last),
            outcome,
        )

    def _push(self, fire_at: float, entry: _Entry, due: float, *, chain: bool) -> None:
        order = next(self._order)
        self._waiting[order] = entry
        entry.pending += 1
        item = (fire_at, order, due, chain)
        if self._placing is not None:
            self._placing.append(item)
        else:
            heapq.heappush(self._heap, item)

    async def _fire_due(self) -> list[_Entry]:
        """Fire every run due by now, earliest first; the entries that fired."""
        fired: list[_Entry] = []
        heap = self._heap
        now = self.clock.time()
        while heap and heap[0][0] <= now:
            _, order, due, chain = heapq.heappop(heap)
            entry = self._waiting.pop(order)
            entry.pending -= 1
            if not entry.active:
                continue
            if chain and due < _cutoff(entry.schedule, now):
                # Too late (the machine slept, the clock jumped): a missed run.
                self._advance(entry, due - _EPSILON, now)
                if not entry.pending:
                    self._complete.append(entry)
                continue
            self._fire(entry, due, now)
            if len(fired) % _BURST == _BURST - 1:
                await asyncio.sleep(0)  # a burst of runs must not hold the loop
                now = self.clock.time()
            if entry.last_due is None or due > entry.last_due:
                entry.last_due = due
            fired.append(entry)
            if chain:
                self._advance(entry, due, now)
            if not entry.pending:
                self._complete.append(entry)
        return fired

    def _fire(self, entry: _Entry, due: float, now: float) -> None:
        bus = entry.bus
        if bus.scheduled_rule(entry.rule) is None:  # disabled: the run passes
            return
        event = make_event(
            SCHEDULED_SOURCE,
            SCHEDULED_DETAIL_TYPE,
            resources=(entry.arn,),
            time=datetime.fromtimestamp(due, UTC),
        )
        if bus.fire(entry.rule, event, now):
            self.fired += 1

    async def _marked(self, since: int, marks: list[MarkRow]) -> bool:
        """Save the marks of the runs fired after intake number ``since``;
        whether they were saved. With a durable intake they ride in the
        transaction of the runs' events (``DurableIntake.ride``): one commit
        a turn, and a run is never marked without its event. When that write
        failed neither was written, so a restart fires those runs again
        rather than never (the error is logged by the intake)."""
        intake, state = self.intake, self.state
        if intake is None or state is None:
            await self._save(marks)
            return True
        number = intake.ride(state.schedule_marks_step(marks))
        try:
            await intake.committed(number, since + 1)
        except StateError:
            return False
        return True

    async def _save(self, marks: list[MarkRow]) -> None:
        if self.state is not None:
            await self.state.save_schedule_marks(marks)

    async def _sleep(self) -> None:
        heap = self._heap
        while heap and not self._waiting[heap[0][1]].active:
            del self._waiting[heapq.heappop(heap)[1]]
        timer: Cancellable | None = None
        if heap:
            # Not before the window after the last firing ends: what comes due
            # meanwhile fires in one turn.
            wake_at = max(heap[0][0], self._quiet_until)
            timer = self.clock.call_later(wake_at - self.clock.time(), self._wake.set)
        self._sleeping = True
        try:
            await self._wake.wait()
        finally:
            self._sleeping = False
            if timer is not None:
                timer.cancel()


def _cutoff(schedule: Schedule, now: float) -> float:
    """Runs due before this moment are missed, not late: too late to fire."""
    return now - LATE_GRACE - schedule.flexible_window


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
