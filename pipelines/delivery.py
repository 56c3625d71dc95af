"""Delivering matched events to one rule target, with EventBridge's guarantees.

Each (rule, target) pair is a ``Delivery``: a bounded queue of jobs and up to
``concurrency`` worker tasks that drain it. A worker transforms the event,
calls the target, and on failure either schedules a retry (exponential
backoff with jitter, kept in the ``RetryScheduler`` and, when the runtime has
a state database, in SQLite) or hands the event to the dead-letter target.

Deliveries are independent: a failing target's events wait in the retry
scheduler, not in its queue, so they hold back neither that target's other
events nor any other target.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import logging
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines import metrics as m
from pipelines.clock import Cancellable, Clock
from pipelines.errors import DeliveryError, NotRunningError, Problems, Where
from pipelines.event import dump_json
from pipelines.settings import Number, Settings
from pipelines.targets import DeliveryContext, Target
from pipelines.targetstats import TargetStats
from pipelines.transform import Transform

if TYPE_CHECKING:
    from pipelines.pending import PendingWriter
    from pipelines.state import LoadedRow, StateDB

log = logging.getLogger("pipelines.delivery")

MAX_RETRY_ATTEMPTS = 185
MAX_EVENT_AGE = 86_400
#: A rule target's RetryPolicy, as PutTargets bounds it.
RETRY_POLICY = Settings(
    {
        "maximum_retry_attempts": Number(MAX_RETRY_ATTEMPTS, 0, MAX_RETRY_ATTEMPTS, integer=True),
        "maximum_event_age": Number(
            MAX_EVENT_AGE, 60, MAX_EVENT_AGE, integer=True, description="seconds"
        ),
    }
)

# EXHAUSTED_RETRY_CONDITION values, as EventBridge's dead letters carry them.
RETRIES_EXHAUSTED = "MaximumRetryAttempts"
AGE_EXCEEDED = "MaximumEventAgeInSeconds"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """EventBridge's per-target RetryPolicy; whichever limit is reached first ends retrying."""

    maximum_retry_attempts: int = MAX_RETRY_ATTEMPTS
    maximum_event_age: int = MAX_EVENT_AGE

    @classmethod
    def from_config(cls, where: Where, config: Mapping[str, Any]) -> RetryPolicy:
        problems = Problems()
        with problems:
            RETRY_POLICY.check_keys(where, config)
        with problems:
            attempts = RETRY_POLICY.number(where, config, "maximum_retry_attempts")
        with problems:
            age = RETRY_POLICY.number(where, config, "maximum_event_age")
        problems.raise_any()
        return cls(int(attempts), int(age))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter".

    The n-th retry waits a uniformly random time between half and all of
    ``min(cap, base * 2**(n-1))`` seconds. AWS documents only "exponential
    back off and jitter"; the base and cap are ours (see docs/delivery.md).
    Half the window is kept so a burst of failures never retries at once.
    """

    base: float = 1.0
    cap: float = 300.0

    def bounds(self, retry: int) -> tuple[float, float]:
        full = min(self.cap, self.base * 2.0 ** min(retry - 1, 64))
        return full / 2, full

    def delay(self, retry: int, rng: random.Random) -> float:
        low, high = self.bounds(retry)
        return rng.uniform(low, high)


@dataclass(eq=False, slots=True)
class Settlement:
    """An accepted event whose producer waits to hear that it is safe: every
    one of its jobs delivered, dead-lettered, dropped, or saved as a retry in
    the state database. An MQTT source acknowledges a message only then."""

    #: The producer's callback (None: no producer waits, as for an intake
    #: row whose event was resumed at start).
    callback: Callable[[], None] | None
    remaining: int = 0
    #: (rule, target id) of the deliveries already settled in an earlier run
    #: (an event resumed from the durable intake whose retry was saved).
    done: frozenset[tuple[str, str]] = frozenset()
    #: The producer holds the event's message until this settles, and its
    #: source sends it again otherwise (``Runtime.put_events``' ``held``):
    #: the durable intake writes no row for it.
    held: bool = False

    def settle(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.fire()

    def fire(self) -> None:
        """Every job is settled (or there was none): tell whoever waits.
        A subclass may do its own work first (the durable intake deletes the
        event's row: ``pipelines.intake.RowSettlement``), in this one call."""
        callback = self.callback
        if callback is not None:
            try:
                callback()
            except Exception:  # a producer's bug must not stop delivery
                log.exception("a settlement callback failed")


@dataclass(slots=True, eq=False)
class Job:
    """One event on its way to one rule target."""

    rule: str
    target_id: str
    event: dict[str, Any]
    ingested: float
    attempts: int = 0
    error: DeliveryError | None = None
    #: Key of its row in the state database, once it has one (stored as text).
    key: int | None = None
    #: Its row is committed with its current attempts: the retry heap may
    #: drop the event and read it back when the retry comes due.
    stored: bool = False
    #: The target its current attempt (or dead letter) calls: a replaced
    #: resource is stopped once no job calls it any more.
    calling: Target | None = None
    #: Its event's settlement, while its producer waits for it.
    settlement: Settlement | None = None
    #: Its attempt was started with ``Target.deliver_nowait`` and its outcome is not
    #: in yet (the target's ``done`` callback tells it).
    sent: bool = False

    def settled(self) -> None:
        """This job's outcome is final or durable: count it once."""
        settlement = self.settlement
        if settlement is not None:
            self.settlement = None
            settlement.settle()


def dead_letter_attributes(job: Job, condition: str | None) -> dict[str, str]:
    """The attributes a dead letter carries, named as EventBridge names them."""
    error = job.error
    attributes = {
        "RULE_NAME": job.rule,
        "TARGET_ID": job.target_id,
        "ERROR_CODE": error.code if error else "Unknown",
        "ERROR_MESSAGE": error.message if error else "",
        "RETRY_ATTEMPTS": str(max(job.attempts - 1, 0)),
    }
    if condition is not None:
        attributes["EXHAUSTED_RETRY_CONDITION"] = condition
    return attributes


@dataclass(slots=True, eq=False)
class Delivery:
    """A rule target at run time: its queue, its workers and its policy."""

    bus: str
    rule: str
    rule_arn: str
    target_id: str
    target: Target
    transform: Transform
    policy: RetryPolicy
    dead_letter: Target | None
    dead_letter_name: str | None
    concurrency: int
    queue_size: int
    #: The rule target's parameters for its target type (``http_parameters``).
    parameters: Mapping[str, Any] = field(default_factory=dict)
    queue: collections.deque[Job] = field(default_factory=collections.deque)
    active: int = 0
    parked: asyncio.Future[None] | None = None
    #: Set when its target is removed from the rule: jobs are dropped, not retried.
    retired: bool = False
    help_pending: bool = False
    in_flight: set[Job] = field(default_factory=set)
    #: ``Deliverer._pump`` runs for it (a target may settle within ``deliver_nowait``).
    pumping: bool = False
    space: asyncio.Event = field(default_factory=asyncio.Event)
    dims: m.Dimensions = ()
    # Hot-path counters, bound by the Deliverer.
    attempted: m.Counter = field(default_factory=m.Counter)
    succeeded: m.Counter = field(default_factory=m.Counter)
    invoked: m.Counter = field(default_factory=m.Counter)
    #: What it has done, per rule target (``pipelines top``, ``/metrics``).
    stats: TargetStats = field(default_factory=TargetStats)
    #: The name of its target's resource (for those views).
    resource: str = ""

    def __post_init__(self) -> None:
        self.space.set()
        self.dims = m.dimensions(EventBusName=self.bus, RuleName=self.rule)

    @property
    def idle(self) -> bool:
        return not self.queue and not self.in_flight


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt as the console shows it (``FailureLog.recent``)."""

    time: float
    event_id: str
    attempt: int
    code: str
    message: str


@dataclass(slots=True)
class Outcomes:
    """How the deliveries of a runtime ended, counted since it was made (the
    runner's summary line)."""

    delivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0


class FailureLog:
    """Failed attempts, logged at WARNING at most ``burst`` times per target in
    each ``window`` seconds; the rest are counted and the count is told with
    the next line that is logged, so a storm of failures neither floods the
    log nor goes unseen. The last ``kept`` failures of each target are kept,
    logged or not, for the console (``recent``)."""

    def __init__(self, clock: Clock, burst: int = 5, window: float = 10.0, kept: int = 20) -> None:
        self.clock = clock
        self.burst = burst
        self.window = window
        self.kept = kept
        # delivery -> (window start, lines logged in it, suppressed since the last line)
        self._windows: dict[Delivery, tuple[float, int, int]] = {}
        self._recent: dict[Delivery, collections.deque[Failure]] = {}

    def recent(self, delivery: Delivery) -> list[Failure]:
        """The target's last failed attempts, the newest last."""
        return list(self._recent.get(delivery, ()))

    def failed(self, delivery: Delivery, job: Job, error: BaseException) -> None:
        now = self.clock.time()
        code, message = _code_and_message(error)
        delivery.stats.failed(code, message, now)
        recent = self._recent.get(delivery)
        if recent is None:
            recent = self._recent[delivery] = collections.deque(maxlen=self.kept)
        recent.append(Failure(now, str(job.event.get("id", "")), job.attempts, code, message))
        start, logged, suppressed = self._windows.get(delivery, (now, 0, 0))
        if now - start >= self.window:
            start, logged = now, 0
        if logged >= self.burst:
            self._windows[delivery] = (start, logged, suppressed + 1)
            return
        self._windows[delivery] = (start, logged + 1, 0)
        log.warning(
            "delivery failed: rule %s target %s on bus %s, event %s, attempt %d: %s: %s%s",
            delivery.rule,
            delivery.target_id,
            delivery.bus,
            job.event.get("id"),
            job.attempts,
            code,
            message,
            f" ({suppressed} more failures of this target not logged)" if suppressed else "",
        )
        # The user's traceback, for whoever turns debugging on.
        log.debug("the failure's traceback", exc_info=error)

    def forget(self, delivery: Delivery) -> None:
        self._windows.pop(delivery, None)
        self._recent.pop(delivery, None)

    def flush(self) -> None:
        """Tell the counts not told yet (at stop: no later line would)."""
        for delivery, (start, logged, suppressed) in self._windows.items():
            if suppressed:
                log.warning(
                    "rule %s target %s on bus %s: %d more failed attempts not logged",
                    delivery.rule,
                    delivery.target_id,
                    delivery.bus,
                    suppressed,
                )
                self._windows[delivery] = (start, logged, 0)


def _code_and_message(error: BaseException) -> tuple[str, str]:
    if isinstance(error, DeliveryError):
        return error.code, error.message
    return type(error).__name__, str(error)


class Deliverer:
    """Runs every ``Delivery`` of a runtime: workers, retries, dead letters."""

    def __init__(
        self,
        clock: Clock,
        metrics: m.Metrics,
        spawn: Callable[[Any], Any],
        state: StateDB | None,
        backoff: Backoff,
        rng: random.Random,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.spawn = spawn
        self.state = state
        self.backoff = backoff
        self.rng = rng
        #: The group-commit writer of pending rows, while there is a state database.
        self.pending: PendingWriter | None = None
        self.retries = RetryScheduler(clock, self._retry_due, self._load_due)
        #: Retries due whose rows are being read back (not yet queued).
        self.loading = 0
        self.outcomes = Outcomes()
        self.failures = FailureLog(clock)

    def bind(self, delivery: Delivery) -> Delivery:
        """Attach the delivery's counters to the metrics."""
        delivery.attempted = self.metrics.counter(m.INVOCATION_ATTEMPTS, delivery.dims)
        delivery.succeeded = self.metrics.counter(m.SUCCESSFUL_INVOCATION_ATTEMPTS, delivery.dims)
        delivery.invoked = self.metrics.counter(m.INVOCATIONS, delivery.dims)
        return delivery

    # -- intake -------------------------------------------------------------

    def offer(self, delivery: Delivery, job: Job) -> bool:
        """Queue a job if its delivery's queue has room, without waiting;
        False when it has none (or its target is gone): ``submit`` then."""
        if len(delivery.queue) >= delivery.queue_size or delivery.retired:
            return False
        delivery.queue.append(job)
        self._wake(delivery)
        return True

    async def submit(self, delivery: Delivery, job: Job) -> None:
        """Queue a job; waits while the delivery's queue is full (backpressure)."""
        while len(delivery.queue) >= delivery.queue_size and not delivery.retired:
            self.metrics.add(m.THROTTLED_RULES, delivery.dims)
            delivery.space.clear()
            await delivery.space.wait()
        if delivery.retired:  # the target was removed while we waited
            log.warning(
                "target %s of rule %s removed: event %s dropped",
                delivery.target_id,
                delivery.rule,
                job.event.get("id"),
            )
            job.settled()
            return
        delivery.queue.append(job)
        self._wake(delivery)

    @property
    def idle(self) -> bool:
        """No retry that came due is still being read back from the database."""
        return self.loading == 0

    def _load_due(self, due: list[tuple[int, Delivery]]) -> None:
        """Retries came due whose events wait in the database: read them back,
        all in one SELECT, then queue them."""
        try:
            self.spawn(self._load(due))
        except (NotRunningError, RuntimeError):
            # Stopping (the task group is gone or shutting down): the rows stay
            # in the database for the next start.
            return
        self.loading += len(due)

    async def _load(self, due: list[tuple[int, Delivery]]) -> None:
        try:
            rows = await self._read_rows([key for key, _ in due])
            if rows is None:  # unreadable now: try again shortly
                for key, delivery in due:
                    self.retries.schedule_stored(delivery, key, self.clock.time() + 1.0)
                return
            for key, delivery in due:
                await self._loaded(delivery, key, rows.get(str(key)))
        finally:
            self.loading -= len(due)

    async def _read_rows(self, keys: list[int]) -> dict[str, LoadedRow] | None:
        if self.state is None:  # closed meanwhile (stopping): the rows stay for next time
            return {}
        try:
            return await self.state.load_pending([str(key) for key in keys])
        except Exception:
            log.exception("could not read %d due retries from the state database", len(keys))
            return None

    async def _loaded(self, delivery: Delivery, key: int, row: LoadedRow | None) -> None:
        if row is None:
            if self.state is not None:
                log.warning(
                    "pending delivery %s for rule %s target %s is no longer in the state "
                    "database: not retried",
                    key,
                    delivery.rule,
                    delivery.target_id,
                )
            return
        job = Job(delivery.rule, delivery.target_id, row.event, row.ingested, row.attempts)
        job.key, job.stored = key, True
        if row.error_code is not None:
            job.error = DeliveryError(row.error_code, row.error_message or "", retryable=True)
        if delivery.retired:  # its target was removed while the row was read
            await self._forget(job)
            return
        self._retry_due(delivery, job)

    def _retry_due(self, delivery: Delivery, job: Job) -> None:
        if len(delivery.queue) >= delivery.queue_size:
            # Full: try again shortly rather than block the scheduler for every target.
            self.retries.schedule(delivery, job, self.clock.time() + 1.0)
            return
        delivery.queue.append(job)
        self._wake(delivery)

    def _wake(self, delivery: Delivery) -> None:
        if delivery.target.delivers_nowait:
            self._pump(delivery)
            return
        parked = delivery.parked
        if parked is not None:
            delivery.parked = None
            parked.set_result(None)
        elif delivery.active == len(delivery.in_flight) and delivery.active < delivery.concurrency:
            # Every worker is busy with a call: add one.
            try:
                self.spawn(self._work(delivery))
            except (NotRunningError, RuntimeError):
                return  # stopping: what is queued is persisted by stop()
            delivery.active += 1

    def _help(self, delivery: Delivery) -> None:
        """One loop turn after a worker took a job with more queued behind it:
        if every worker is still in a call (waiting on I/O), add one. Calls
        that return at once never cost a task."""
        delivery.help_pending = False
        if (
            delivery.queue
            and delivery.active == len(delivery.in_flight)
            and delivery.active < delivery.concurrency
        ):
            delivery.active += 1
            self.spawn(self._work(delivery))

    # -- workers ------------------------------------------------------------

    async def _work(self, delivery: Delivery) -> None:
        """Drain the delivery's queue. The last worker parks instead of exiting,
        so a target that sees one event at a time does not pay for a new task
        per event; extra workers exit when the queue is empty."""
        queue = delivery.queue
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    if delivery.target.delivers_nowait:  # a reload made it one: no worker needed
                        self._pump(delivery)
                        break
                    job = queue.popleft()
                    if not delivery.space.is_set() and len(queue) < delivery.queue_size:
                        delivery.space.set()
                    delivery.in_flight.add(job)
                    if queue and not delivery.help_pending:
                        delivery.help_pending = True
                        loop.call_soon(self._help, delivery)
                    try:
                        await self._attempt(delivery, job)
                    except Exception:
                        # A bug or a failing dead-letter path must not take the
                        # runtime down with it: report it and go on.
                        log.exception(
                            "delivering event %s to rule %s target %s failed unexpectedly",
                            job.event.get("id"),
                            job.rule,
                            job.target_id,
                        )
                    delivery.in_flight.discard(job)
                if delivery.active > 1 or delivery.parked is not None:
                    return
                parked = delivery.parked = loop.create_future()
                await parked
        finally:
            delivery.active -= 1

    async def _attempt(self, delivery: Delivery, job: Job) -> None:
        if self._expired(delivery, job):
            await self._give_up(delivery, job, AGE_EXCEEDED)
            return
        try:
            payload, context = self._prepare(delivery, job)
            target = job.calling = delivery.target
            await target.deliver(payload, context)
        except asyncio.CancelledError:
            job.attempts -= 1  # interrupted by shutdown: not an attempt
            raise
        except Exception as exc:
            self._attempt_failed(delivery, job, exc)
        else:
            self._attempt_succeeded(delivery, job)
            if job.key is not None:
                await self._forget(job)
            job.settled()
            return
        await self._failed(delivery, job)

    def _expired(self, delivery: Delivery, job: Job) -> bool:
        return self.clock.time() - job.ingested > delivery.policy.maximum_event_age

    def _prepare(self, delivery: Delivery, job: Job) -> tuple[Any, DeliveryContext]:
        """Count the attempt; what the target gets (a transform may raise)."""
        job.attempts += 1
        delivery.attempted.add()
        if job.attempts > 1:
            self.metrics.add(m.RETRY_INVOCATION_ATTEMPTS, delivery.dims)
        payload = delivery.transform(job.event, job.rule, delivery.rule_arn, job.ingested)
        context = DeliveryContext(
            job.rule,
            job.target_id,
            job.event,
            job.attempts,
            extra=delivery.parameters,
            rule_arn=delivery.rule_arn,
        )
        return payload, context

    def _attempt_succeeded(self, delivery: Delivery, job: Job) -> None:
        delivery.succeeded.add()
        delivery.invoked.add()
        delivery.stats.delivered_after(self.clock.time() - job.ingested)
        self.outcomes.delivered += 1

    def _attempt_failed(self, delivery: Delivery, job: Job, exc: BaseException) -> None:
        if isinstance(exc, DeliveryError):
            job.error = exc
            self.failures.failed(delivery, job, exc)
            # Kept past this frame, its traceback (this frame, which holds the
            # job) would make every failed job a cycle only the garbage
            # collector frees: in an outage, a full collection every few
            # thousand failures. The log above had the traceback.
            exc.with_traceback(None)
        else:  # a target bug is a retryable failure, reported as such
            job.error = DeliveryError(type(exc).__name__, str(exc), retryable=True)
            self.failures.failed(delivery, job, exc)

    # -- targets that settle by callback (``Target.deliver_nowait``) ---------------------

    def _pump(self, delivery: Delivery) -> None:
        """Start queued jobs with ``Target.deliver_nowait`` while fewer than
        ``concurrency`` are under way: from the dispatcher as jobs come, and
        from ``done`` as attempts end, so no task waits per attempt."""
        if delivery.pumping:  # a ``done`` called within ``deliver_nowait``: the loop below goes on
            return
        delivery.pumping = True
        queue, in_flight = delivery.queue, delivery.in_flight
        try:
            while queue and len(in_flight) < delivery.concurrency:
                target = delivery.target
                if not target.delivers_nowait:  # a reload replaced it with one that does not
                    self._wake(delivery)
                    return
                job = queue.popleft()
                if not delivery.space.is_set() and len(queue) < delivery.queue_size:
                    delivery.space.set()
                in_flight.add(job)
                self._send(delivery, job, target)
        finally:
            delivery.pumping = False

    def _send(self, delivery: Delivery, job: Job, target: Target) -> None:
        if self._expired(delivery, job):
            self._conclude(delivery, job, self._give_up(delivery, job, AGE_EXCEEDED))
            return
        try:
            payload, context = self._prepare(delivery, job)
            job.calling = target
            job.sent = True
            target.deliver_nowait(payload, context, functools.partial(self._sent, delivery, job))
        except Exception as exc:
            if job.sent:  # not when ``done`` came first and then the call raised
                job.sent = False
                self._sent_failed(delivery, job, exc)

    def _sent(self, delivery: Delivery, job: Job, error: BaseException | None) -> None:
        """``Target.deliver_nowait``'s ``done``: the attempt's outcome."""
        if not job.sent:  # called twice, or the job was saved at shutdown meanwhile
            return
        job.sent = False
        if error is not None:
            self._sent_failed(delivery, job, error)
            return
        # ``_attempt_succeeded``, ``Job.settled`` and ``_release`` written out:
        # this runs once per delivered event of such a target (an MQTT
        # PUBACK), so the calls are kept to what differs.
        delivery.succeeded.add()
        delivery.invoked.add()
        delivery.stats.delivered_after(self.clock.time() - job.ingested)
        self.outcomes.delivered += 1
        if job.key is not None:  # a retry: its row goes first
            self._conclude(delivery, job, self._forget_delivered(job))
            return
        settlement = job.settlement
        if settlement is not None:
            job.settlement = None
            settlement.remaining -= 1
            if settlement.remaining <= 0:
                settlement.fire()
        delivery.in_flight.discard(job)
        if delivery.queue and not delivery.pumping:
            self._wake(delivery)

    def _sent_failed(self, delivery: Delivery, job: Job, error: BaseException) -> None:
        self._attempt_failed(delivery, job, error)
        self._conclude(delivery, job, self._failed(delivery, job))

    def _conclude(self, delivery: Delivery, job: Job, step: Coroutine[Any, Any, None]) -> None:
        """Finish a job whose end needs the database (a retry saved, a dead
        letter, a row deleted) in a task: the job stays under way until then."""
        try:
            self.spawn(self._concluded(delivery, job, step))
        except (NotRunningError, RuntimeError):
            # Stopping: the job, still under way, is saved as a retry by stop().
            step.close()

    async def _concluded(
        self, delivery: Delivery, job: Job, step: Coroutine[Any, Any, None]
    ) -> None:
        try:
            await step
        except Exception:
            log.exception(
                "delivering event %s to rule %s target %s failed unexpectedly",
                job.event.get("id"),
                job.rule,
                job.target_id,
            )
        self._release(delivery, job)

    async def _forget_delivered(self, job: Job) -> None:
        await self._forget(job)
        job.settled()

    def _release(self, delivery: Delivery, job: Job) -> None:
        """The job is no longer under way: room for the next."""
        delivery.in_flight.discard(job)
        if delivery.queue:
            self._wake(delivery)

    async def _failed(self, delivery: Delivery, job: Job) -> None:
        error = job.error
        assert error is not None
        if delivery.retired:
            await self._forget(job)  # the target was removed from its rule
            job.settled()
            return
        if not error.retryable:
            await self._give_up(delivery, job, None)
            return
        if job.attempts > delivery.policy.maximum_retry_attempts:
            await self._give_up(delivery, job, RETRIES_EXHAUSTED)
            return
        delay = self.backoff.delay(job.attempts, self.rng)
        if error.retry_after is not None:
            if error.retry_after < 0:  # the target said not to come back
                await self._give_up(delivery, job, None)
                return
            delay = max(delay, error.retry_after)  # the more patient of the two
        due = self.clock.time() + delay
        if due - job.ingested > delivery.policy.maximum_event_age:
            # The next attempt would come too late: the age limit ends retrying now.
            await self._give_up(delivery, job, AGE_EXCEEDED)
            return
        await self._persist(delivery, job, due)
        if _retired(delivery):  # its target was removed while the row was written
            await self._forget(job)
            job.settled()
            return
        self.retries.schedule(delivery, job, due)

    async def _give_up(self, delivery: Delivery, job: Job, condition: str | None) -> None:
        """The event will not reach this target: dead-letter it, or log the drop."""
        dims = delivery.dims
        if job.error is None:
            job.error = DeliveryError(
                "EventAgeExceeded", "the event's maximum age passed before delivery", retryable=True
            )
        attributes = dead_letter_attributes(job, condition)
        if delivery.dead_letter is None:
            # As EventBridge counts: a permanent failure is an Invocation and a
            # FailedInvocation unless it goes to a dead letter (DeadLetterInvocations).
            self.metrics.add(m.INVOCATIONS, dims)
            self.metrics.add(m.FAILED_INVOCATIONS, dims)
            log.error(
                "dropped event %s for rule %s target %s (no dead-letter target): %s",
                job.event.get("id"),
                job.rule,
                job.target_id,
                attributes,
            )
            self.outcomes.dropped += 1
            delivery.stats.dropped += 1
            await self._forget(job)
            job.settled()
            return
        self.metrics.add(m.DEAD_LETTER_INVOCATIONS, dims)
        context = DeliveryContext(job.rule, job.target_id, job.event, 1, attributes=attributes)
        try:
            job.calling = delivery.dead_letter
            await job.calling.deliver(job.event, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.add(m.INVOCATIONS_FAILED_TO_BE_SENT_TO_DLQ, dims)
            self.outcomes.dropped += 1
            delivery.stats.dropped += 1
            log.error(
                "dead-letter target %s failed for event %s (rule %s target %s): %s; event dropped",
                delivery.dead_letter_name,
                job.event.get("id"),
                job.rule,
                job.target_id,
                exc,
            )
        else:
            self.metrics.add(m.INVOCATIONS_SENT_TO_DLQ, dims)
            self.outcomes.dead_lettered += 1
            delivery.stats.dead_lettered += 1
        await self._forget(job)
        job.settled()

    # -- persistence --------------------------------------------------------

    async def _persist(self, delivery: Delivery, job: Job, due: float) -> None:
        """Write the job's pending row (in the writer's next group commit); on
        a database error, keep it in memory only."""
        job.stored = False
        if self.pending is None:
            return
        if job.key is None:
            job.key = self.retries.new_key()  # set before the write, so a retried write reuses it
        code, message = (job.error.code, job.error.message) if job.error else (None, None)
        row = (
            str(job.key),
            delivery.bus,
            job.rule,
            job.target_id,
            dump_json(job.event).decode(),
            job.ingested,
            job.attempts,
            due,
            code,
            message,
        )
        try:
            await self.pending.save(row)
            job.stored = True
            job.settled()  # committed now: a crash from here on retries it after restart
        except Exception:
            log.exception(
                "could not save the pending delivery of event %s (rule %s target %s) to the "
                "state database; it is kept in memory and lost if the process stops",
                job.event.get("id"),
                job.rule,
                job.target_id,
            )

    async def _forget(self, job: Job) -> None:
        job.stored = False
        if self.pending is None or job.key is None:
            return
        try:
            await self.pending.delete(str(job.key))
        except Exception:
            log.exception(
                "could not delete the finished delivery of event %s from the state database; "
                "it will be delivered again after a restart",
                job.event.get("id"),
            )
        job.key = None

    async def retire(self, delivery: Delivery) -> None:
        """Its target was removed from the rule: drop its queued and retrying jobs."""
        delivery.retired = True
        self.failures.forget(delivery)
        delivery.space.set()  # a dispatcher waiting for room must not wait forever
        dropped = [
            job if isinstance(job, Job) else self._row_only(delivery, job)
            for job in self.retries.remove(delivery)
        ]
        dropped += delivery.queue
        delivery.queue.clear()
        # Concurrently, so the deletes share the writer's group commits.
        await asyncio.gather(*(self._forget(job) for job in dropped))
        for job in dropped:
            job.settled()
        if dropped:
            log.warning(
                "target %s of rule %s removed: %d queued or retrying deliveries dropped",
                delivery.target_id,
                delivery.rule,
                len(dropped),
            )

    @staticmethod
    def _row_only(delivery: Delivery, key: int) -> Job:
        """A job standing for a retry whose event is in the database (to delete its row)."""
        job = Job(delivery.rule, delivery.target_id, {}, 0.0, key=key)
        job.stored = True
        return job

    async def persist_unfinished(self, delivery: Delivery) -> int:
        """At shutdown: keep queued and interrupted jobs as retries due now."""
        for job in delivery.in_flight:
            if job.sent:  # its outcome never came: not an attempt (its ``done`` is ignored)
                job.sent = False
                job.attempts -= 1
        jobs = [*delivery.in_flight, *delivery.queue]
        delivery.in_flight.clear()
        delivery.queue.clear()
        if self.pending is None:
            return len(jobs)
        now = self.clock.time()
        # Concurrently, so the saves share the writer's group commits.
        await asyncio.gather(*(self._persist(delivery, job, now) for job in jobs))
        return 0


#: A waiting retry in the heap: (due, key, delivery). Its event is not here:
#: with a state database it waits in its row (read back when due), otherwise
#: its job waits in ``RetryScheduler._held`` under the key. Equal due times
#: compare the keys, which are unique, so deliveries are never compared.
Waiting = tuple[float, int, Delivery]


def _retired(delivery: Delivery) -> bool:
    """Whether the delivery's target was removed: asked again after an await
    (a check before it says nothing of what happened during it)."""
    return delivery.retired


class RetryScheduler:
    """Retries waiting for their next attempt, in a heap; one timer for the earliest.

    Only what decides when and where is kept per retry (125 bytes measured):
    100,000 retries during an outage must not hold 100,000 events. Retries
    whose rows are committed are handed to ``load`` (all those due at one
    moment together) to be read back; the others (no state database, or a
    save that failed) keep their job in memory, since nothing could load it.
    """

    def __init__(
        self,
        clock: Clock,
        due: Callable[[Delivery, Job], None],
        load: Callable[[list[tuple[int, Delivery]]], None],
    ) -> None:
        self.clock = clock
        self._due = due
        self._load = load
        self._heap: list[Waiting] = []
        self._held: dict[int, Job] = {}
        self._keys = itertools.count(1)
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def new_key(self) -> int:
        """A key no row and no waiting retry has (small ints: cheap to hold)."""
        return next(self._keys)

    def keys_from(self, first: int) -> None:
        """New keys start at ``first`` (above every row's key, at start)."""
        self._keys = itertools.count(first)

    def next_due(self) -> float | None:
        """When the earliest waiting job is due, or None when none waits."""
        return self._heap[0][0] if self._heap else None

    def schedule(self, delivery: Delivery, job: Job, due: float) -> None:
        """Wait until ``due``; a stored job leaves its event to its row."""
        if job.stored and job.key is not None:
            self.schedule_stored(delivery, job.key, due)
            return
        key = job.key if job.key is not None else self.new_key()
        self._held[key] = job
        heapq.heappush(self._heap, (due, key, delivery))
        delivery.stats.waiting += 1
        self._arm()

    def schedule_stored(self, delivery: Delivery, key: int, due: float) -> None:
        """Wait until ``due`` for the retry whose row is ``key``."""
        heapq.heappush(self._heap, (due, key, delivery))
        delivery.stats.waiting += 1
        self._arm()

    def remove(self, delivery: Delivery) -> list[Job | int]:
        """Take out every retry of a delivery (its rule or target is going
        away): the jobs held in memory, and the keys of the stored ones."""
        taken: list[Job | int] = []
        for _, key, owner in self._heap:
            if owner is delivery:
                taken.append(self._held.pop(key, key))
        self._heap = [entry for entry in self._heap if entry[2] is not delivery]
        delivery.stats.waiting = 0
        heapq.heapify(self._heap)
        self._arm()
        return taken

    def waiting(self) -> list[Waiting]:
        """The heap's entries, for tests and tools (what a retry costs to hold)."""
        return list(self._heap)

    def held(self) -> int:
        """How many waiting retries keep their job (and event) in memory."""
        return len(self._held)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    def _arm(self) -> None:
        if not self._heap:
            self.close()
            return
        earliest = self._heap[0][0]
        if self._timer_at is not None and self._timer_at <= earliest:
            return
        self.close()
        self._timer_at = earliest
        self._timer = self.clock.call_later(earliest - self.clock.time(), self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        now = self.clock.time()
        stored: list[tuple[int, Delivery]] = []
        while self._heap and self._heap[0][0] <= now:
            _, key, delivery = heapq.heappop(self._heap)
            delivery.stats.waiting -= 1
            job = self._held.pop(key, None)
            if job is not None:
                self._due(delivery, job)
            else:
                stored.append((key, delivery))
        if stored:
            self._load(stored)
        self._arm()
