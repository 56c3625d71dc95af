"""An execution's history: AWS's event types, ids and previousEventId.

Every event goes through an ``ExecutionLog``. The in-memory ``MemoryLog``
serves EXPRESS executions and tests; a durable log (``plugins.states.executions``) keeps
STANDARD executions in the state database: ``checkpoint`` is awaited at each
transition of the top-level program with what resuming there needs (and
inside a top-level state that waits or calls a resource: ``Within``), and
the execution may go on only once it returns. A log that is ``nested`` is
also given checkpoints from inside Parallel branches and Map iterations
(``checkpoint_inside``: a snapshot of every one under way, ``Within.fork``)
and the ends of those that finished (``child_done``).

``previousEventId`` follows how AWS numbers it: each thread of an execution
(the top level, each Parallel branch, each Map iteration) is a ``Flow`` whose
events point at the flow's last event; some events point back without moving
the flow on ("side" events: ExecutionStarted, MapIterationSucceeded, ...),
as the recorded histories show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugins.states.errors import RUNTIME, StatesError

Json = Any

#: A STANDARD execution's history holds at most this many events (AWS's hard
#: quota; an EXPRESS execution's is unlimited): the last one must be its end.
HISTORY_LIMIT = 25_000
#: The events that may be the last one allowed (``History.limit``).
_ENDS = frozenset(
    {"ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"}
)


class HistoryFull(StatesError):
    """The execution's next event would be the last one its history may
    hold, and it is not the execution's end: the execution fails (AWS writes
    ExecutionFailed as that event). States.Runtime: no Retry or Catch takes it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            RUNTIME,
            f"The execution reached the maximum number of events its history may hold ({limit})",
        )


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    id: int
    previous_event_id: int
    #: seconds since the epoch, from the execution's clock
    timestamp: float
    type: str
    #: the ``...EventDetails`` member, None for events without one
    details: dict[str, Json] | None = None

    @property
    def details_key(self) -> str:
        if self.type.endswith("StateEntered"):
            return "stateEnteredEventDetails"
        if self.type.endswith("StateExited"):
            return "stateExitedEventDetails"
        return self.type[0].lower() + self.type[1:] + "EventDetails"

    def to_aws(self) -> dict[str, Json]:
        """The event as GetExecutionHistory answers it (the timestamp left as seconds)."""
        out: dict[str, Json] = {
            "id": self.id,
            "previousEventId": self.previous_event_id,
            "timestamp": self.timestamp,
            "type": self.type,
        }
        if self.details is not None:
            out[self.details_key] = self.details
        return out


#: A top-level state's phases a checkpoint may be taken in (``Within.phase``).
WAITING = "waiting"  # a Wait state, until ``until``
BACKING_OFF = "backing-off"  # a Task, Parallel or Map between attempts: the next at ``until``
CALLING = "calling"  # a Task's attempt under way: its resource was called
CHILDREN = "children"  # a Parallel's branches or a Map's iterations under way: ``Within.fork``


@dataclass(frozen=True, slots=True)
class Within:
    """A top-level state entered and under way when its checkpoint was taken.

    A resumed execution does not enter the state again: it goes on where it
    was. A Wait waits only until ``until``; a state between attempts waits
    until ``until`` for its next one, its retriers' counters (``attempts``)
    and ``retry_count`` kept; a Task whose attempt was under way (``CALLING``)
    does not call its resource again: the task runner is asked to resume the
    attempt (``TaskRequest.resumed``), so each attempt's effect happens at
    most once. ``until`` is then the attempt's TimeoutSeconds deadline.

    A Parallel or Map whose branches or iterations were under way
    (``CHILDREN``) has them in ``fork``: ``key`` (the attempt's: its entered
    event and retry count; the results of the finished ones are kept under
    it, ``ExecutionLog.child_done``), ``lastEnd`` (the event its end points
    back to) and ``threads``, each one under way by its index: where it
    stands (``nextState``, ``input``, ``flowLast``, ``variables`` and its own
    ``within``, nested Parallel and Map states in turn). Resumed, the finished
    ones are not run again, those under way go on where they stood, the
    others start.
    """

    phase: str
    entered_id: int
    entered_at: float
    until: float | None = None
    attempts: tuple[int, ...] = ()
    retry_count: int = 0
    task_token: str | None = None
    fork: dict[str, Json] | None = None

    def to_json(self) -> dict[str, Json]:
        out = {
            "phase": self.phase,
            "enteredId": self.entered_id,
            "enteredAt": self.entered_at,
            "until": self.until,
            "attempts": list(self.attempts),
            "retryCount": self.retry_count,
            "taskToken": self.task_token,
        }
        if self.fork is not None:
            out["fork"] = self.fork
        return out

    @classmethod
    def from_json(cls, data: dict[str, Json]) -> Within:
        return cls(
            data["phase"],
            data["enteredId"],
            data["enteredAt"],
            data.get("until"),
            tuple(data.get("attempts") or ()),
            data.get("retryCount", 0),
            data.get("taskToken"),
            data.get("fork"),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a top-level program stands: enough to resume there.

    ``next_state`` is the state to run with ``input`` (its raw input);
    ``last_event_id`` is the highest event id written, ``flow_last`` the
    top-level flow's last event (the next event's previousEventId). Between
    two states ``within`` is None; inside a state (a Wait, a retry's
    backoff, a Task attempt under way) it says where (``Within``).
    ``variables`` are the workflow variables bound so far.
    """

    next_state: str
    input: Json
    last_event_id: int
    flow_last: int
    within: Within | None = None
    #: the workflow variables in scope (the execution's top level): a resumed
    #: execution must see what the states before the checkpoint assigned
    variables: dict[str, Json] = field(default_factory=dict)

    def to_json(self) -> dict[str, Json]:
        """The checkpoint as JSON-ready values (a durable log stores it)."""
        return {
            "nextState": self.next_state,
            "input": self.input,
            "lastEventId": self.last_event_id,
            "flowLast": self.flow_last,
            "within": None if self.within is None else self.within.to_json(),
            "variables": self.variables,
        }

    @classmethod
    def from_json(cls, data: dict[str, Json]) -> Checkpoint:
        within = data.get("within")
        return cls(
            data["nextState"],
            data["input"],
            data["lastEventId"],
            data["flowLast"],
            None if within is None else Within.from_json(within),
            dict(data.get("variables") or {}),
        )


class ExecutionLog(Protocol):
    def append(self, event: HistoryEvent) -> None:
        """Record ``event`` (in order; a durable log may buffer until ``checkpoint``)."""
        ...

    async def checkpoint(self, point: Checkpoint) -> None:
        """Make everything appended so far, and ``point``, durable before returning."""
        ...

    #: Whether the log takes checkpoints inside Parallel branches and Map
    #: iterations (``checkpoint_inside``, ``child_done``): a durable log does.
    nested: bool

    async def checkpoint_inside(self, snapshot: Callable[[], Checkpoint | None]) -> None:
        """Make everything appended so far durable with ``snapshot()``, taken
        when it is written (several threads asking at once share one write;
        None: the Parallel or Map has ended meanwhile, nothing to write)."""
        ...

    def child_done(self, fork: str, index: int, failed: bool, result: Json) -> None:
        """A branch or iteration of the Parallel or Map attempt ``fork`` ended
        with ``result`` (its error output when ``failed``): kept with the
        next ``checkpoint_inside``, so that a resumed run does not run it again."""
        ...


@dataclass
class MemoryLog:
    """The history kept in memory (EXPRESS executions, tests)."""

    events: list[HistoryEvent] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: checkpoints inside Parallel and Map too (tests; EXPRESS does without)
    nested: bool = False
    #: ``child_done``'s kept by a ``checkpoint_inside``, by fork and index, as
    #: a durable log keeps them (those after the last one are not)
    children: dict[str, dict[int, tuple[bool, Json]]] = field(default_factory=dict)
    _ended: list[tuple[str, int, bool, Json]] = field(default_factory=list)

    def append(self, event: HistoryEvent) -> None:
        self.events.append(event)

    async def checkpoint(self, point: Checkpoint) -> None:
        self.checkpoints.append(point)
        self._ended.clear()

    async def checkpoint_inside(self, snapshot: Callable[[], Checkpoint | None]) -> None:
        point = snapshot()
        if point is None:
            return
        self.checkpoints.append(point)
        for fork, index, failed, result in self._ended:
            self.children.setdefault(fork, {})[index] = (failed, result)
        self._ended.clear()

    def child_done(self, fork: str, index: int, failed: bool, result: Json) -> None:
        self._ended.append((fork, index, failed, result))


@dataclass(slots=True)
class Flow:
    """One thread of an execution: the id its next event points back to."""

    last: int = 0

    def fork(self) -> Flow:
        return Flow(self.last)


class History:
    """Numbers events and writes them to the log; with a ``limit`` (a
    STANDARD execution's ``HISTORY_LIMIT``), event ``limit`` is the
    execution's end or ``HistoryFull`` is raised instead (and again at each
    event but an end, so that no branch or iteration goes on)."""

    def __init__(
        self, log: ExecutionLog, clock_time: Any, next_id: int = 1, limit: int | None = None
    ) -> None:
        self.log = log
        self._time = clock_time
        self.next_id = next_id
        self.limit = limit

    def emit(
        self,
        flow: Flow,
        type: str,
        details: dict[str, Json] | None = None,
        *,
        advance: bool = True,
        previous: int | None = None,
    ) -> int:
        event_id = self.next_id
        if self.limit is not None and event_id >= self.limit and type not in _ENDS:
            raise HistoryFull(self.limit)
        self.next_id += 1
        prev = flow.last if previous is None else previous
        self.log.append(HistoryEvent(event_id, prev, self._time(), type, details))
        if advance:
            flow.last = event_id
        return event_id
