"""Runs an execution of a state machine, state by state (JSONPath mode).

``Interpreter(machine, log=..., tasks=..., clock=...)`` runs executions of
one machine: ``await interpreter.run(execution)`` returns an ``Outcome`` and
writes the history through the log. Everything an execution needs besides
the definition is in ``Execution`` (its identity and input) and in the
``Checkpoint``s the log receives between top-level states, so a durable log
can resume a STANDARD execution with ``run(execution, resume=checkpoint)``:
the next state runs with the recorded input, and event ids continue. A
top-level Wait, a retry's backoff and a Task attempt under way are
checkpointed inside their state too (``history.Within``): resumed, a Wait
waits only what is left and a Task attempt is resumed, not called again.
With a log that takes them (``ExecutionLog.nested``: a durable one), the
branches of a Parallel and the iterations of an inline Map are checkpointed
the same way inside (``_Fork``, ``_Thread``): resumed, the finished ones
are not run again and those under way go on from their last checkpoint (a
Distributed Map's iterations run again). The execution's TimeoutSeconds
counts from its start time, across resumes.

Time comes from the injected ``Clock`` (Wait, retry intervals, timeouts);
Tasks go through the injected ``TaskRunner``. Parallel branches and Map
iterations run concurrently as tasks of one ``asyncio.TaskGroup`` owned by
their state, so a failure cancels its siblings and nothing outlives the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.clock import Clock, SystemClock, sleep
from plugins.states import choice, itemio, jsonata_mode, paths, templates
from plugins.states.definition import (
    Catcher,
    ChoiceState,
    Condition,
    FailState,
    HandlingState,
    MapState,
    ParallelState,
    PassState,
    Program,
    Retrier,
    State,
    StateMachine,
    SucceedState,
    TaskState,
    WaitState,
    is_timestamp,
)
from plugins.states.errors import (
    DATA_LIMIT_EXCEEDED,
    EXCEED_TOLERATED_FAILURE_THRESHOLD,
    HEARTBEAT_TIMEOUT,
    NO_CHOICE_MATCHED,
    PAYLOAD_LIMIT,
    QUERY_EVALUATION_ERROR,
    TIMEOUT,
    UNCATCHABLE,
    StateFault,
    StatesError,
    matches,
    state_failure,
)
from plugins.states.history import (
    BACKING_OFF,
    CALLING,
    CHILDREN,
    WAITING,
    Checkpoint,
    ExecutionLog,
    Flow,
    History,
    HistoryFull,
    MemoryLog,
    Within,
)
from plugins.states.inspection import CAUGHT_ERROR, Inspector, Retriable
from plugins.states.tasks import NoTaskRunner, Resource, TaskRequest, TaskRunner, parse_resource
from plugins.states.variables import Scope, assigned_details

Json = Any
dump = templates.dump

#: AWS runs at most 40 iterations of an inline Map at once, whatever MaxConcurrency says.
INLINE_MAP_CONCURRENCY = 40
#: States without effect that wait for nothing: the checkpoint after one may
#: be left to the next (done again when resumed from the one before).
PURE = (PassState, ChoiceState)


@dataclass(frozen=True, slots=True)
class Execution:
    """Who an execution is and what it was given (the context object's Execution, StateMachine)."""

    arn: str
    name: str
    state_machine_arn: str
    state_machine_name: str
    #: the input as the caller wrote it (history shows this text)
    input_text: str = "{}"
    role_arn: str = ""
    #: seconds since the epoch
    start_time: float = 0.0
    redrive_count: int = 0
    #: when it was last redriven (seconds since the epoch): its TimeoutSeconds counts from there
    redrive_time: float | None = None

    @property
    def input(self) -> Json:
        return json.loads(self.input_text)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an execution ended: ``status`` is DescribeExecution's."""

    status: str
    output: Json = None
    error: str | None = None
    cause: str | None = None

    @property
    def output_text(self) -> str | None:
        return None if self.status != "SUCCEEDED" else dump(self.output)


def iso_time(seconds: float) -> str:
    """The context object's times: ISO 8601 in UTC with milliseconds and a Z."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class _Scope:
    """What a running state sees besides its input: its thread and the history it writes to
    (the execution's, or a Distributed Map's child execution's)."""

    flow: Flow
    history: History
    #: the workflow variables this thread sees (a branch's or iteration's own child scope)
    variables: Scope = field(default_factory=Scope)
    #: where this branch or iteration stands, when checkpointed inside (``_Fork``)
    thread: _Thread | None = None

    def child(self, flow: Flow, history: History | None = None) -> _Scope:
        """A Parallel branch's or Map iteration's scope: outer variables read-only."""
        return _Scope(flow, history or self.history, self.variables.child())


# -- checkpoints inside Parallel and Map (a durable log's) ---------------------------------


@dataclass(slots=True)
class _Thread:
    """Where a branch or an iteration stands: the state it is in (or goes to
    next) and that state's input; inside it, ``within`` (a Wait, a Task
    attempt, a backoff) or ``fork`` (a nested Parallel or Map under way)."""

    scope: _Scope
    next_state: str
    input: Json
    within: Within | None = None
    fork: _Fork | None = None
    #: whether its last state had an effect or waited (not ``PURE``): its
    #: end is then written at once, not with the next checkpoint
    effect: bool = False

    def to_json(self) -> dict[str, Json]:
        within = self.fork.within() if self.fork is not None else self.within
        return {
            "nextState": self.next_state,
            "input": self.input,
            "flowLast": self.scope.flow.last,
            "variables": dict(self.scope.variables.own),
            "within": None if within is None else within.to_json(),
        }


@dataclass(slots=True)
class _Fork:
    """A Parallel or inline Map attempt under way, its branches or iterations
    checkpointed inside: ``key`` names the attempt (its entered event and
    retry count), ``threads`` are those under way by index, ``last_end`` the
    event the state's end points back to."""

    run: _StateRun
    key: str
    last_end: int
    threads: dict[int, _Thread] = field(default_factory=dict)
    #: the branches or iterations that had ended when it was resumed
    finished: dict[int, tuple[bool, Json]] = field(default_factory=dict)
    #: where those under way stood when it was resumed, by index
    resumed: dict[int, dict[str, Json]] = field(default_factory=dict)

    def within(self) -> Within:
        run = self.run
        fork = {
            "key": self.key,
            "lastEnd": self.last_end,
            "threads": {str(index): thread.to_json() for index, thread in self.threads.items()},
        }
        return Within(
            CHILDREN, run.entered, run.entered_at, None, tuple(run.attempts), run.retry_count,
            None, fork,
        )  # fmt: skip

    def start(
        self, index: int, child: _Scope, program: Program, data: Json
    ) -> dict[str, Json] | None:
        """Register ``index``'s thread (its scope ``child``); where it stood when resumed."""
        at = self.resumed.pop(index, None)
        thread = _Thread(child, program.start_at, data)
        if at is not None:
            child.flow.last = at["flowLast"]
            child.variables.own.update(at.get("variables") or {})
        child.thread = thread
        self.threads[index] = thread
        return at


@dataclass(slots=True)
class _Abort(Exception):
    """Raised inside a TaskGroup to cancel the siblings of a failed branch or iteration."""

    failure: StatesError = field(default_factory=lambda: StatesError("States.Runtime"))


class Interpreter:
    def __init__(
        self,
        machine: StateMachine,
        *,
        log: ExecutionLog | None = None,
        tasks: TaskRunner | None = None,
        clock: Clock | None = None,
        region: str = "us-east-1",
        rng: random.Random | None = None,
        items: itemio.ItemSource | None = None,
    ) -> None:
        self.machine = machine
        self.log = log if log is not None else MemoryLog()
        self.tasks = tasks if tasks is not None else NoTaskRunner()
        #: where a Distributed Map's ItemReader reads and ResultWriter writes
        self.items: itemio.ItemSource = items if items is not None else itemio.NoItemSource()
        self.clock = clock if clock is not None else SystemClock()
        self.region = region
        # FULL jitter's draws; injectable so a test can predict them
        self.rng = rng if rng is not None else random.Random()
        self.history = History(self.log, self.clock.time)
        self.execution: Execution | None = None
        #: TestState's (``run_state``): the state under test notes its data flow there
        self.inspector: Inspector | None = None
        #: the top-level state under way, as it was entered (where a redrive starts again)
        self.under_way: Checkpoint | None = None
        #: the top-level Parallel or Map under way, checkpointed inside
        self._root: _Fork | None = None
        #: the branches and iterations ended before a resume, by fork and index
        #: (a durable log's ``child_done``, read back)
        self.finished: dict[str, dict[int, tuple[bool, Json]]] = {}

    @property
    def nested(self) -> bool:
        """Whether branches and iterations are checkpointed inside (a durable log)."""
        return bool(getattr(self.log, "nested", False))

    def _snapshot(self) -> Checkpoint | None:
        """The whole execution where it stands now: the top-level state, its
        branches or iterations, theirs in turn (None once the state has ended)."""
        fork = self._root
        if fork is None:
            return None
        run = fork.run
        return Checkpoint(
            run.state.name, run.raw, self.history.next_id - 1, run.scope.flow.last,
            fork.within(), dict(run.scope.variables.own),
        )  # fmt: skip

    async def _inside(self) -> None:
        """A checkpoint inside the top-level Parallel or Map."""
        if self._root is not None:
            await self.log.checkpoint_inside(self._snapshot)

    # -- an execution -----------------------------------------------------------

    async def run(self, execution: Execution, resume: Checkpoint | None = None) -> Outcome:
        self.execution = execution
        flow = Flow()
        within: Within | None = None
        if resume is None:
            self.history.emit(
                flow,
                "ExecutionStarted",
                {
                    "input": execution.input_text,
                    "inputDetails": {"truncated": False},
                    "roleArn": execution.role_arn,
                },
                advance=False,
            )
            start, data = self.machine.program.start_at, execution.input
        else:
            self.history.next_id = resume.last_event_id + 1
            flow.last = resume.flow_last
            start, data, within = resume.next_state, resume.input, resume.within
        variables = Scope(resume.variables if resume is not None else None)
        try:
            try:
                top = self._top(start, data, _Scope(flow, self.history, variables), within)
                output = await self._with_timeout(top, resumed=resume is not None)
            except BaseExceptionGroup as group:
                # the history filled up inside branches or iterations, each
                # failing with it: the execution fails, as for one alone
                if group.subgroup(HistoryFull) is None:
                    raise
                assert self.history.limit is not None
                raise HistoryFull(self.history.limit) from None
        except _ExecutionTimedOut:
            self.history.emit(flow, "ExecutionTimedOut", {"error": TIMEOUT}, advance=True)
            return Outcome("TIMED_OUT", error=TIMEOUT)
        except StatesError as failure:
            details = {}
            if failure.cause is not None:
                details["cause"] = failure.cause
            if failure.error:
                details["error"] = failure.error
            self.history.emit(flow, "ExecutionFailed", details)
            return Outcome("FAILED", error=failure.error or None, cause=failure.cause)
        self.history.emit(
            flow,
            "ExecutionSucceeded",
            {"output": dump(output), "outputDetails": {"truncated": False}},
        )
        return Outcome("SUCCEEDED", output=output)

    async def run_state(
        self, execution: Execution, state: State, data: Json, variables: dict[str, Json]
    ) -> tuple[Json, str | None]:
        """TestState: ``state`` alone, as a top-level state, with ``self.inspector``
        noting its data flow: its output and the next state's name (``StatesError``
        when it fails, ``inspection.Retriable`` when a retrier takes the failure)."""
        self.execution = execution
        scope = _Scope(Flow(), self.history, Scope(variables))
        return await self._state(state, data, scope, top=True)

    async def _with_timeout(self, work: Awaitable[Json], *, resumed: bool = False) -> Json:
        limit: float | None = self.machine.timeout_seconds
        if limit is None:
            return await work
        if resumed:  # the time limit counts from the execution's start (or last redrive)
            assert self.execution is not None
            since = self.execution.redrive_time or self.execution.start_time
            limit -= self.clock.time() - since
        return await _deadline(self.clock, limit, work, _ExecutionTimedOut)

    async def _top(self, start: str, data: Json, scope: _Scope, within: Within | None) -> Json:
        """The top-level program, with a checkpoint before each state
        (``within``: the first state was under way when the run was resumed)."""
        program = self.machine.program
        name: str | None = start
        while name is not None:
            state = program.states[name]
            self.under_way = Checkpoint(name, data, 0, 0, variables=dict(scope.variables.own))
            data, name = await self._state(state, data, scope, top=True, within=within)
            within = None
            if name is not None:
                await self.log.checkpoint(
                    Checkpoint(
                        name,
                        data,
                        self.history.next_id - 1,
                        scope.flow.last,
                        variables=dict(scope.variables.own),
                    )
                )
        return data

    async def _program(
        self, program: Program, data: Json, scope: _Scope, at: dict[str, Json] | None = None
    ) -> Json:
        """A branch or iteration (from ``at`` when resumed: ``_Thread.to_json``);
        checkpointed after each state that is not ``PURE`` when it has a thread."""
        name: str | None = program.start_at
        within: Within | None = None
        if at is not None:
            name, data = at["nextState"], at["input"]
            within = None if at.get("within") is None else Within.from_json(at["within"])
        thread = scope.thread
        while name is not None:
            state = program.states[name]
            if thread is None:
                data, name = await self._state(state, data, scope)
                continue
            thread.next_state, thread.input, thread.within, thread.fork = name, data, within, None
            data, name = await self._state(state, data, scope, within=within)
            within = None
            thread.effect = not isinstance(state, PURE)
            if name is not None:
                thread.next_state, thread.input, thread.within = name, data, None
                if thread.effect:
                    await self._inside()
        return data

    # -- one state -----------------------------------------------------------------

    async def _state(
        self,
        state: State,
        data: Json,
        scope: _Scope,
        *,
        top: bool = False,
        within: Within | None = None,
    ) -> tuple[Json, str | None]:
        before = scope.flow.last
        if within is None:
            entered_at = self.clock.time()
            entered = scope.history.emit(
                scope.flow,
                f"{state.type}StateEntered",
                {"input": dump(data), "inputDetails": {"truncated": False}, "name": state.name},
            )
        else:  # resumed inside the state: it was entered before
            entered_at, entered = within.entered_at, within.entered_id
        run = _StateRun(self, state, data, scope, entered, entered_at, top=top, within=within)
        if within is None:
            run.before = before
        try:
            output, nxt = await run.execute()
        except StateFault as fault:
            raise state_failure(state.name, entered, fault.message, fault.error) from None
        except jsonata_mode.QueryFailure as failure:
            raise run.evaluation_failed(failure) from None
        return output, nxt

    def context(self, state: State, entered_at: float, retry_count: int | None = None) -> Json:
        execution = self.execution
        assert execution is not None
        state_context: dict[str, Json] = {"Name": state.name, "EnteredTime": iso_time(entered_at)}
        if retry_count is not None:
            state_context["RetryCount"] = retry_count
        context: dict[str, Json] = {
            "Execution": {
                "Id": execution.arn,
                "Input": execution.input,
                "StartTime": iso_time(execution.start_time),
                "Name": execution.name,
                "RoleArn": execution.role_arn,
                "RedriveCount": execution.redrive_count,
                **(
                    {}
                    if execution.redrive_time is None
                    else {"RedriveTime": iso_time(execution.redrive_time)}
                ),
            },
            "StateMachine": {
                "Id": execution.state_machine_arn,
                "Name": execution.state_machine_name,
            },
            "State": state_context,
        }
        return context


class _ExecutionTimedOut(Exception):
    pass


class _TaskTimedOut(Exception):
    pass


async def _deadline(
    clock: Clock, seconds: float, work: Awaitable[Json], error: type[Exception]
) -> Json:
    """``work``'s result, or ``error`` raised once ``seconds`` of clock time pass first."""
    task = asyncio.ensure_future(work)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = clock.call_later(seconds, expire)
    try:
        return await task
    except asyncio.CancelledError:
        if expired:
            raise error() from None
        raise
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _StateRun:
    """One state's run: its data flow, its work, its retries and catchers."""

    def __init__(
        self,
        interpreter: Interpreter,
        state: State,
        data: Json,
        scope: _Scope,
        entered: int,
        entered_at: float,
        *,
        top: bool = False,
        within: Within | None = None,
    ) -> None:
        self.it = interpreter
        self.state = state
        self.raw = data
        self.scope = scope
        self.entered = entered
        self.entered_at = entered_at
        self.retry_count = 0
        #: ``$$.Task.Token`` of a ``.waitForTaskToken`` attempt
        self.task_token: str | None = None
        #: the bindings of the Assign that applies, bound when the state exits
        self.assigned: dict[str, Json] | None = None
        #: the event before the state's entered event (an EvaluationFailed event points there)
        self.before = entered - 1
        #: a state of the top-level program: checkpointed while it waits or calls
        self.top = top
        #: where a resumed run of the state was when it was checkpointed
        self.within = within
        #: the retriers' counters (a Task, Parallel or Map)
        self.attempts: Sequence[int] = ()
        #: TestState's inspector, for the state under test only
        self.inspector = interpreter.inspector if top else None

    @property
    def history(self) -> History:
        return self.scope.history

    async def hold(self, phase: str, until: float | None, attempts: Sequence[int] = ()) -> None:
        """Checkpoint a state under way: a top-level one, or one inside a
        branch or an iteration checkpointed inside (``_Thread``)."""
        thread = self.scope.thread
        if not self.top:
            if thread is not None:
                thread.within = Within(
                    phase, self.entered, self.entered_at, until, tuple(attempts),
                    self.retry_count, self.task_token,
                )  # fmt: skip
                await self.it._inside()
            return
        within = Within(
            phase,
            self.entered,
            self.entered_at,
            until,
            tuple(attempts),
            self.retry_count,
            self.task_token,
        )
        point = Checkpoint(
            self.state.name,
            self.raw,
            self.history.next_id - 1,
            self.scope.flow.last,
            within,
            dict(self.scope.variables.own),
        )
        await self.it.log.checkpoint(point)

    def emit(self, type: str, details: dict[str, Json] | None = None, **kw: Any) -> int:
        return self.scope.history.emit(self.scope.flow, type, details, **kw)

    def fork(self, resumed: Within | None) -> _Fork | None:
        """This Parallel or inline Map attempt, checkpointed inside when the
        log takes such checkpoints (and the state is at the top level or in
        a thread that is); resumed as ``resumed.fork`` left it."""
        thread = self.scope.thread
        if not self.it.nested or not (self.top or thread is not None):
            return None
        fork = _Fork(self, f"{self.entered}:{self.retry_count}", self.scope.flow.last)
        if resumed is not None and resumed.fork is not None:
            fork.last_end = resumed.fork["lastEnd"]
            fork.resumed = {int(i): at for i, at in resumed.fork["threads"].items()}
            fork.finished = dict(self.it.finished.get(fork.key, {}))
        if thread is None:
            self.it._root = fork
        else:
            thread.fork = fork
        return fork

    def unfork(self, fork: _Fork | None) -> None:
        if fork is None:
            return
        thread = self.scope.thread
        if thread is None:
            self.it._root = None
        elif thread.fork is fork:
            thread.fork = None

    async def ended(
        self, fork: _Fork, index: int, failed: bool, result: Json, end: int | None
    ) -> None:
        """A branch or iteration of ``fork`` ended: kept, and written at once
        when its last state had an effect (or it failed)."""
        thread = fork.threads.pop(index)
        if end is not None:
            fork.last_end = end
        self.it.log.child_done(fork.key, index, failed, result)
        if thread.effect or failed:
            await self.it._inside()

    def note(self, key: str, value: Json) -> Json:
        """TestState's inspectionData: ``value`` is the data after step ``key``."""
        if self.inspector is not None:
            self.inspector.note(key, value)
        return value

    def context(self) -> Json:
        retries = self.retry_count if isinstance(self.state, HandlingState) else None
        context = self.it.context(self.state, self.entered_at, retries)
        if self.task_token is not None:
            context["Task"] = {"Token": self.task_token}
        if self.inspector is not None:
            return self.inspector.context_object(context)
        return context

    @property
    def variables(self) -> Scope:
        return self.scope.variables

    def exited(self, output: Json) -> None:
        text = dump(output)
        if len(text.encode("utf-8", "surrogatepass")) > PAYLOAD_LIMIT:
            raise StatesError(
                DATA_LIMIT_EXCEEDED,
                f"The state/task '{self.state.name}' returned a result with a size exceeding "
                "the maximum number of bytes service limit.",
            )
        details: dict[str, Json] = {"name": self.state.name, "output": text}
        if self.assigned:
            # an empty Assign binds nothing and AWS records nothing
            self.variables.bind(self.assigned)
            details.update(assigned_details(self.assigned))
        details["outputDetails"] = {"truncated": False}
        self.emit(f"{self.state.type}StateExited", details)

    # -- variables and JSONata ----------------------------------------------------------

    def assign(self, assign: dict[str, Json] | None, data: Json, states: Json = None) -> None:
        """Evaluate ``assign`` (None: no Assign) against ``data`` (JSONPath: its ``$``) or
        ``states`` (JSONata: ``$states``); bound once the state exits."""
        if assign is None:
            self.assigned = None
        elif self.state.jsonata:
            self.assigned = jsonata_mode.resolve(
                assign, "Assign", states, self.variables, self.it.clock.time()
            )
        else:
            self.assigned = self.resolve(assign, data)

    def states(self, **more: Json) -> dict[str, Json]:
        """JSONata's ``$states``: the state's input, its context and what ``more`` adds."""
        return {"input": self.raw, "context": self.context(), **more}

    def query(self, template: Json, location: str, states: Json) -> Json:
        return jsonata_mode.resolve(
            template, location, states, self.variables, self.it.clock.time()
        )

    def evaluation_failed(self, failure: jsonata_mode.QueryFailure) -> StatesError:
        """An evaluation that failed: AWS's EvaluationFailed event, then the state's failure
        (States.QueryEvaluationError, which Retry and Catch may take)."""
        error = state_failure(self.state.name, self.entered, failure.message, failure.error)
        details: dict[str, Json] = {"cause": error.cause, "error": QUERY_EVALUATION_ERROR}
        if failure.location is not None:
            details["location"] = failure.location
        details["state"] = self.state.name
        previous = self.entered if failure.after_entered else self.before
        self.history.emit(self.scope.flow, "EvaluationFailed", details, previous=previous)
        return error

    # -- the data flow ---------------------------------------------------------------

    def input_path(self) -> Json:
        path = self.state.input_path
        if path is None:
            return {}
        return self.select(path, self.raw, "InputPath")

    def output_path(self, data: Json) -> Json:
        path = self.state.output_path
        if path is None:
            return {}
        return self.select(path, data, "OutputPath")

    def select(self, path: str, data: Json, field_name: str) -> Json:
        parsed = paths.parse(path)
        # the context object is built only for a path into it: it holds the
        # execution's input, parsed again for each (a Map's iterations would
        # otherwise each read the whole execution input, twice a state)
        context = self.context() if parsed.context else None
        try:
            return parsed.find_in(data, context, self.variables)
        except paths.PathError as error:
            raise StateFault(f"Invalid path '{path}' : {error.message}") from None

    def result_path(self, path: str | None, raw: Json, result: Json) -> Json:
        if path is None:
            return raw
        try:
            return paths.set_path(path, raw, result)
        except paths.PathError as error:
            raise StateFault(error.message, "States.ResultPathMatchFailure") from None

    def resolve(self, template: Json, data: Json, map_item: tuple[int, Json] | None = None) -> Json:
        if not templates.uses_context(template):
            return templates.resolve(template, data, None, self.variables)
        context = self.context()
        if map_item is not None:
            context["Map"] = {"Item": {"Index": map_item[0], "Value": map_item[1]}}
        return templates.resolve(template, data, context, self.variables)

    # -- dispatch ----------------------------------------------------------------------

    async def execute(self) -> tuple[Json, str | None]:
        state = self.state
        if isinstance(state, PassState):
            return self.run_pass(state)
        if isinstance(state, ChoiceState):
            return self.run_choice(state)
        if isinstance(state, WaitState):
            return await self.run_wait(state)
        if isinstance(state, SucceedState):
            if state.jsonata:
                output = self.jsonata_output(self.raw, self.states())
            else:
                effective = self.note("afterInputPath", self.input_path())
                self.assign(state.assign, effective)
                output = self.output_path(effective)
            self.exited(output)
            return output, None
        if isinstance(state, FailState):
            if not state.jsonata:
                self.note("afterInputPath", self.raw)
            raise self.fail_error(state)
        assert isinstance(state, HandlingState)
        return await self.run_handling(state)

    def jsonata_output(self, default: Json, states: Json) -> Json:
        """A JSONata state's Assign and Output (``default`` when it has no Output)."""
        self.assign(self.state.assign, None, states)
        if not self.state.has_output:
            return default
        return self.query(self.state.output, "Output", states)

    def run_pass(self, state: PassState) -> tuple[Json, str | None]:
        if state.jsonata:
            output = self.jsonata_output(self.raw, self.states())
            self.exited(output)
            return output, state.next
        effective = self.input_path()
        if not state.has_result:  # AWS shows the input's steps only when no Result replaces them
            self.note("afterInputPath", effective)
        if state.has_parameters:
            effective = self.resolve(state.parameters, effective)
        if state.has_result:
            result = self.note("result", state.result)
        else:
            result = self.note("afterParameters", effective)
        self.note("afterResultSelector", result)
        self.assign(state.assign, result)
        after = self.note("afterResultPath", self.result_path(state.result_path, self.raw, result))
        output = self.output_path(after)
        self.exited(output)
        return output, state.next

    def choose(self, state: ChoiceState, effective: Json) -> Json:
        """The rule taken (its Assign and Output apply), or None for the Default."""
        if not state.jsonata:
            return choice.first_match(state.choices, effective, self.context(), self.variables)
        states = self.states()
        for index, rule in enumerate(state.choices):
            assert isinstance(rule, Condition)
            held = rule.condition
            if jsonata_mode.is_expression(held):
                held = self.query(held, f"Choices/{index}/Condition", states)
            if not isinstance(held, bool):
                raise jsonata_mode.expression_failure(
                    jsonata_mode.body(str(rule.condition)),
                    f"Choices/{index}/Condition",
                    f"returned an unexpected result type. Expected 'boolean', but was "
                    f"'{_json_type(held)}' for value: {dump(held)}",
                )
            if held:
                return rule
        return None

    def run_choice(self, state: ChoiceState) -> tuple[Json, str | None]:
        effective = self.raw if state.jsonata else self.note("afterInputPath", self.input_path())
        rule = self.choose(state, effective)
        nxt = rule.next if rule is not None else state.default
        if state.jsonata:
            states = self.states()
            taken = rule if rule is not None else state
            self.assign(taken.assign, None, states)
            if taken.has_output:
                effective = self.query(taken.output, "Output", states)
        else:
            self.assign(rule.assign if rule is not None else state.assign, effective)
        if nxt is None:
            raise StatesError(
                NO_CHOICE_MATCHED,
                f"An error occurred while executing the state '{state.name}' (entered at the "
                f"event id #{self.entered}). Failed to transition out of the state. The state "
                "does not point to a next state.",
            )
        output = effective if state.jsonata else self.output_path(effective)
        self.exited(output)
        return output, nxt

    def number(self, expression: str, location: str, states: Json, integer: bool = True) -> Json:
        """A JSONata numeric field's value (an integer unless ``integer`` is false)."""
        value = self.query(expression, location, states)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (integer and not float(value).is_integer()):
            kind = "integer" if integer else "number"
            raise jsonata_mode.expression_failure(
                jsonata_mode.body(expression),
                location,
                f"returned an unexpected result type. Expected '{kind}', but was "
                f"'{_json_type(value)}' for value: {dump(value)}",
            )
        return int(value) if integer else value

    async def run_wait(self, state: WaitState) -> tuple[Json, str | None]:
        if state.jsonata:
            return await self.run_wait_jsonata(state)
        effective = self.note("afterInputPath", self.input_path())
        self.assign(state.assign, effective)
        now = self.it.clock.time()
        if state.seconds is not None:
            delay = float(state.seconds)
        elif state.timestamp is not None:
            delay = _until(state.timestamp, now)
        elif state.seconds_path is not None:
            delay = self.seconds_at(state.seconds_path, effective)
        else:
            assert state.timestamp_path is not None
            value = self.waited_value(state.timestamp_path, effective, "TimestampPath")
            moment = choice.parse_timestamp(value)
            if moment is None:
                raise StateFault(
                    "The TimestampPath parameter does not reference a valid ISO-8601 extended "
                    f"offset date-time format string: {state.timestamp_path} == {value}"
                )
            delay = moment.timestamp() - now
        if self.within is not None and self.within.until is not None:
            until = self.within.until  # resumed: only what is left
        else:
            until = now + delay
            await self.hold(WAITING, until)
        if self.inspector is None:  # TestState does not wait
            await sleep(self.it.clock, until - self.it.clock.time())
        output = self.output_path(effective)
        self.exited(output)
        return output, state.next

    async def run_wait_jsonata(self, state: WaitState) -> tuple[Json, str | None]:
        states = self.states()
        now = self.it.clock.time()
        if state.seconds_expression is not None:
            delay = float(self.number(state.seconds_expression, "Seconds", states))
            if delay < 0:
                raise StateFault(f"The Seconds field references a negative value: {int(delay)}")
        elif state.timestamp_expression is not None:
            value = self.query(state.timestamp_expression, "Timestamp", states)
            if not isinstance(value, str) or not is_timestamp(value):
                raise jsonata_mode.QueryFailure(
                    "The Timestamp field cannot be parsed as an ISO-8601 extended offset "
                    f"date-time format string: {_plain(value)}",
                    "Timestamp",
                    after_entered=True,
                )
            delay = _until(value, now)
        elif state.seconds is not None:
            delay = float(state.seconds)
        else:
            assert state.timestamp is not None
            delay = _until(state.timestamp, now)
        output = self.jsonata_output(self.raw, states)
        if self.within is not None and self.within.until is not None:
            until = self.within.until  # resumed: only what is left
        else:
            until = now + delay
            await self.hold(WAITING, until)
        if self.inspector is None:  # TestState does not wait
            await sleep(self.it.clock, until - self.it.clock.time())
        self.exited(output)
        return output, state.next

    def waited_value(self, path: str, data: Json, field_name: str) -> Json:
        parsed = paths.parse(path)
        context = self.context() if parsed.context else None
        try:
            return parsed.find_in(data, context, self.variables)
        except paths.PathError:
            raise StateFault(
                f"The {field_name} parameter does not reference an input value: {path}"
            ) from None

    def seconds_at(self, path: str, data: Json) -> float:
        value = self.waited_value(path, data, "SecondsPath")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StateFault(f"The SecondsPath parameter cannot be parsed as a long value: {path}")
        if isinstance(value, float) and not value.is_integer():
            raise StateFault(
                f"The SecondsPath parameter cannot be parsed as a long value: {path} == {value}"
            )
        if value < 0:
            raise StateFault(
                f"The SecondsPath parameter references a negative value: {path} == {int(value)}"
            )
        return float(value)

    def fail_error(self, state: FailState) -> StatesError:
        error, cause = state.error, state.cause
        if state.jsonata:
            states = self.states()
            if jsonata_mode.is_expression(error):
                error = _plain(self.query(error, "Error", states))
            if jsonata_mode.is_expression(cause):
                cause = _plain(self.query(cause, "Cause", states))
            return StatesError(error or "", cause)
        data = self.raw
        if state.error_path is not None:
            error = self.reference(state.error_path, "ErrorPath", data)
        if state.cause_path is not None:
            cause = self.reference(state.cause_path, "CausePath", data)
        return StatesError(error or "", cause)

    def reference(self, expression: str, field_name: str, data: Json) -> Json:
        value = templates.reference(expression, field_name, data, self.context(), self.variables)
        return value if isinstance(value, str) else dump(value)

    # -- Task, Parallel and Map: retries and catchers ---------------------------------------

    async def run_handling(self, state: HandlingState) -> tuple[Json, str | None]:
        if self.inspector is not None:
            return await self.inspected_handling(state, self.inspector)
        attempts = [0] * len(state.retry)
        within, self.within = self.within, None
        if within is not None:  # resumed inside the state: its counters as they were
            attempts = list(within.attempts) or attempts
            self.retry_count = within.retry_count
            if within.phase == BACKING_OFF and within.until is not None:
                await sleep(self.it.clock, within.until - self.it.clock.time())
        resumed = within if within is not None and within.phase in (CALLING, CHILDREN) else None
        self.attempts = attempts
        while True:
            try:
                try:
                    output = await self.attempt(state, attempts, resumed)
                except jsonata_mode.QueryFailure as query_failure:
                    raise self.evaluation_failed(query_failure) from None
            except StatesError as failure:
                resumed = None
                if failure.error in UNCATCHABLE:
                    raise
                retrier = _first(state.retry, failure.error)
                if retrier is not None:
                    index, rule = retrier
                    if attempts[index] < rule.max_attempts:
                        delay = self.backoff(rule, attempts[index])
                        attempts[index] += 1
                        self.retry_count += 1
                        until = self.it.clock.time() + delay
                        await self.hold(BACKING_OFF, until, attempts)
                        await sleep(self.it.clock, until - self.it.clock.time())
                        continue
                if isinstance(state, ParallelState | MapState):
                    # only a failure no retrier takes ends the state: one Failed event
                    self.emit(f"{state.type}StateFailed")
                for catcher in state.catch:
                    if matches(catcher.error_equals, failure.error):
                        output = self.caught(catcher, failure)
                        self.exited(output)
                        return output, catcher.next
                raise
            self.exited(output)
            return output, state.next

    async def inspected_handling(
        self, state: HandlingState, inspector: Inspector
    ) -> tuple[Json, str | None]:
        """TestState's one attempt: a retrier taking the failure answers RETRIABLE (with
        the backoff the retry would wait), a catcher CAUGHT_ERROR; nothing is retried."""
        self.retry_count = inspector.retrier_retry_count
        try:
            try:
                output = await self.attempt(state)
            except jsonata_mode.QueryFailure as query_failure:
                raise self.evaluation_failed(query_failure) from None
        except StatesError as failure:
            if failure.error in UNCATCHABLE:
                raise
            retrier = _first(state.retry, failure.error)
            if retrier is not None:
                index, rule = retrier
                if inspector.retrier_retry_count < rule.max_attempts:
                    backoff = self.backoff(rule, inspector.retrier_retry_count)
                    inspector.error_details(
                        retryBackoffIntervalSeconds=int(backoff), retryIndex=index
                    )
                    raise Retriable(failure.error, failure.cause) from None
                inspector.error_details(retryIndex=index)
            for index, catcher in enumerate(state.catch):
                if matches(catcher.error_equals, failure.error):
                    inspector.error_details(catchIndex=index)
                    inspector.status = CAUGHT_ERROR
                    inspector.caught = failure
                    output = self.caught(catcher, failure)
                    self.exited(output)
                    return output, catcher.next
            raise
        self.exited(output)
        return output, state.next

    def caught(self, catcher: Catcher, failure: StatesError) -> Json:
        """A catcher's output (and its Assign, in place of the state's)."""
        error_output = failure.output()
        if self.state.jsonata:
            states = self.states(errorOutput=error_output)
            self.assign(catcher.assign, None, states)
            if catcher.has_output:
                return self.query(catcher.output, "Output", states)
            return error_output
        self.assign(catcher.assign, error_output)
        return self.result_path(catcher.result_path, self.raw, error_output)

    def backoff(self, rule: Retrier, attempt: int) -> float:
        """The wait before retry ``attempt + 1``: IntervalSeconds x BackoffRate^attempt,
        capped by MaxDelaySeconds, drawn from [0, that] under FULL jitter."""
        delay = rule.interval_seconds * rule.backoff_rate**attempt
        if rule.max_delay_seconds is not None:
            delay = min(delay, rule.max_delay_seconds)
        if rule.jitter_strategy == "FULL":
            delay = self.it.rng.uniform(0, delay)
        return float(delay)

    async def attempt(
        self, state: HandlingState, attempts: Sequence[int] = (), resumed: Within | None = None
    ) -> Json:
        if isinstance(state, TaskState) and ".waitForTaskToken" in state.resource:
            # each attempt has its own token, in the context before Parameters are filled
            self.task_token = resumed.task_token if resumed is not None else str(uuid.uuid4())
        if state.jsonata:
            effective = self.raw
            if state.has_arguments:
                effective = self.query(state.arguments, "Arguments", self.states())
                if isinstance(state, TaskState):  # AWS shows it for a Task only
                    self.note("afterArguments", effective)
        else:
            effective = self.input_path()
            if not isinstance(state, ParallelState):  # AWS shows neither for a Parallel
                self.note("afterInputPath", effective)
            if state.has_parameters:
                effective = self.resolve(state.parameters, effective)
            if isinstance(state, TaskState):
                self.note("afterParameters", effective)
        if isinstance(state, TaskState):
            result = self.note("result", await self.run_task(state, effective, attempts, resumed))
        elif self.inspector is not None and isinstance(state, ParallelState | MapState):
            result = self.mocked_flow(state, effective, self.inspector)
        elif isinstance(state, ParallelState):
            result = await self.run_parallel(state, effective, resumed)
        else:
            assert isinstance(state, MapState)
            result = await self.run_map(state, effective, resumed)
        if state.jsonata:
            return self.jsonata_output(result, self.states(result=result))
        if state.has_result_selector:
            result = self.resolve(state.result_selector, result)
        self.note("afterResultSelector", result)
        self.assign(state.assign, result)
        after = self.note("afterResultPath", self.result_path(state.result_path, self.raw, result))
        return self.output_path(after)

    def mocked_flow(
        self, state: ParallelState | MapState, effective: Json, inspector: Inspector
    ) -> Json:
        """TestState's Parallel or Map: its fields evaluated as the state would, its
        result the mock's (TestState requires one)."""
        if isinstance(state, ParallelState):
            return inspector.map_result(None, None)
        if not state.jsonata:
            items = self.select(state.items_path, effective, "ItemsPath")
            if not isinstance(items, list):
                path = state.items_path  # AWS names a context path with one $ less
                path = path[1:] if path.startswith("$$") else path
                raise StatesError("States.Runtime", f'Reference path "{path}" must point to array.')
            self.note("afterItemsPath", items)
        inspector.note_number("maxConcurrency", self.max_concurrency(state))
        count, percentage = self.tolerance(state)
        if count is not None and (
            state.tolerated_failure_count is not None
            or state.tolerated_failure_count_path is not None
            or state.tolerated_failure_count_expression is not None
        ):
            inspector.note_number("toleratedFailureCount", count)
        if percentage is not None:
            inspector.note_number("toleratedFailurePercentage", percentage)
        return inspector.map_result(count, percentage)

    # -- Task ----------------------------------------------------------------------------------

    def seconds_field(self, value: int | None, path: str | None, data: Json) -> int | None:
        if path is None:
            return value
        found = self.select(path, data, path)
        if isinstance(found, bool) or not isinstance(found, int) or found <= 0:
            raise StateFault(
                f"The value at '{path}' must be a positive integer, but was {dump(found)}"
            )
        return found

    async def run_task(
        self,
        state: TaskState,
        effective: Json,
        attempts: Sequence[int] = (),
        resumed: Within | None = None,
    ) -> Json:
        resource = parse_resource(state.resource, self.it.region)
        timeout = self.seconds_field(state.timeout_seconds, state.timeout_seconds_path, self.raw)
        heartbeat = self.seconds_field(
            state.heartbeat_seconds, state.heartbeat_seconds_path, self.raw
        )
        if state.timeout_seconds_expression is not None:
            timeout = self.number(state.timeout_seconds_expression, "TimeoutSeconds", self.states())
        if state.heartbeat_seconds_expression is not None:
            heartbeat = self.number(
                state.heartbeat_seconds_expression, "HeartbeatSeconds", self.states()
            )
        context = self.context()
        token = self.task_token
        events = _TaskEvents(self, resource)
        clock = self.it.clock
        if resumed is None:
            events.scheduled(effective, timeout, heartbeat)
        beat: _Heartbeat | None = None
        request = TaskRequest(
            resource=resource,
            input=effective,
            context=context,
            timeout_seconds=timeout,
            heartbeat_seconds=heartbeat,
            credentials=state.credentials,
            task_token=token,
            submitted=events.submitted,
            resumed=resumed is not None,
        )
        if heartbeat is not None:
            beat = _Heartbeat(clock, heartbeat)
            request.heartbeat = beat.beat
        if resumed is None:
            events.started()
            due = None if timeout is None else clock.time() + timeout
            # the call is recorded before it is made: resumed, it is not made again
            await self.hold(CALLING, due, attempts)
        else:
            due = resumed.until
        try:
            if self.inspector is not None and self.inspector.mocked:
                work = self.inspector.task_result()  # TestState's mock answers
            else:
                work = self.it.tasks.run(request)
            if beat is not None:
                work = beat.guard(work)
            if due is not None:
                result = await _deadline(clock, due - clock.time(), work, _TaskTimedOut)
            else:
                result = await work
        except _TaskTimedOut:
            events.timed_out(TIMEOUT)
            raise StatesError(TIMEOUT) from None
        except _HeartbeatMissed:
            events.timed_out(HEARTBEAT_TIMEOUT)
            raise StatesError(HEARTBEAT_TIMEOUT) from None
        except StatesError as failure:
            events.failed(failure)
            raise
        if len(dump(result).encode("utf-8", "surrogatepass")) > PAYLOAD_LIMIT:
            too_big = StatesError(
                DATA_LIMIT_EXCEEDED,
                f"The state/task '{resource.arn}' returned a result with a size exceeding the "
                "maximum number of bytes service limit.",
            )
            events.failed(too_big)
            raise too_big
        events.succeeded(result)
        return result

    # -- Parallel ----------------------------------------------------------------------------

    async def run_parallel(
        self, state: ParallelState, effective: Json, resumed: Within | None = None
    ) -> Json:
        if resumed is None:
            self.emit("ParallelStateStarted")
        flow = self.scope.flow
        results: list[Json] = [None] * len(state.branches)
        ends: list[int] = []
        fork = self.fork(resumed)

        async def branch(index: int, program: Program) -> None:
            child = self.scope.child(flow.fork())
            at = None if fork is None else fork.start(index, child, program, effective)
            try:
                results[index] = await self.it._program(program, effective, child, at)
            except StatesError as failure:
                flow.last = child.flow.last
                raise _Abort(failure) from None
            ends.append(child.flow.last)
            if fork is not None:
                await self.ended(fork, index, False, results[index], child.flow.last)

        try:
            async with asyncio.TaskGroup() as group:
                for index, program in enumerate(state.branches):
                    if fork is not None and index in fork.finished:
                        results[index] = fork.finished[index][1]  # ended before a resume
                        continue
                    group.create_task(branch(index, program))
        except* _Abort as aborted:
            raise _first_abort(aborted) from None
        finally:
            self.unfork(fork)
        # ParallelStateSucceeded points at the branch that finished last, without moving on
        if fork is not None:
            flow.last = fork.last_end
        elif ends:
            flow.last = ends[-1]
        self.emit("ParallelStateSucceeded", advance=False)
        return results

    # -- Map ---------------------------------------------------------------------------------

    def integer_at(self, path: str, data: Json, field_name: str, kind: str = "integer") -> Json:
        value = self.select(path, data, field_name)
        if isinstance(value, str):
            # a numeric string is read as its number (AWS accepts "1" from a variable)
            with contextlib.suppress(ValueError):
                value = int(value) if kind == "integer" else float(value)
        valid = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (kind == "float" or float(value).is_integer())
        )
        if not valid:
            raise StateFault(
                f'The {field_name} field refers to value "{_plain(value)}" which is not a '
                f"valid {kind}: {path}"
            )
        return value

    def max_concurrency(self, state: MapState) -> int:
        if state.max_concurrency_expression is not None:
            concurrency = self.number(
                state.max_concurrency_expression, "MaxConcurrency", self.states()
            )
            if concurrency < 0:
                raise StateFault("MaxConcurrency cannot be negative.")
            return int(concurrency)
        concurrency = state.max_concurrency
        if state.max_concurrency_path is not None:
            concurrency = int(
                self.integer_at(state.max_concurrency_path, self.raw, "MaxConcurrencyPath")
            )
            if concurrency < 0:
                raise StateFault("MaxConcurrency cannot be negative.")
        return concurrency

    def tolerance(self, state: MapState) -> tuple[int | None, float | None]:
        """ToleratedFailureCount and ...Percentage (AWS reads them once the Map has started)."""
        count = state.tolerated_failure_count
        if state.tolerated_failure_count_expression is not None:
            count = self.number(
                state.tolerated_failure_count_expression, "ToleratedFailureCount", self.states()
            )
        if state.tolerated_failure_count_path is not None:
            count = int(
                self.integer_at(
                    state.tolerated_failure_count_path, self.raw, "ToleratedFailureCountPath"
                )
            )
        if count is not None and count < 0:
            raise StateFault("ToleratedFailureCount cannot be negative.")
        percentage = state.tolerated_failure_percentage
        if state.tolerated_failure_percentage_expression is not None:
            percentage = float(
                self.number(
                    state.tolerated_failure_percentage_expression,
                    "ToleratedFailurePercentage",
                    self.states(),
                    integer=False,
                )
            )
        if state.tolerated_failure_percentage_path is not None:
            percentage = float(
                self.integer_at(
                    state.tolerated_failure_percentage_path,
                    self.raw,
                    "ToleratedFailurePercentagePath",
                    "float",
                )
            )
        if percentage is not None and not 0 <= percentage <= 100:
            raise StateFault("ToleratedFailurePercentage must be between 0 and 100.")
        return count, percentage

    def jsonata_items(self, state: MapState, effective: Json) -> list[Json]:
        """A JSONata Map's items: Items (an array or an expression), or its input."""
        if not state.has_items:
            items = effective
            if not isinstance(items, list):
                raise jsonata_mode.QueryFailure(
                    f"Map state input must be an array but was: {dump(items)}"
                )
            return items
        items = self.query(state.items, "Items", self.states())
        if not isinstance(items, list):
            assert isinstance(state.items, str)
            raise jsonata_mode.expression_failure(
                jsonata_mode.body(state.items),
                "Items",
                f"returned an unexpected result type. Expected 'array', but was "
                f"'{_json_type(items)}' for value: {dump(items)}",
            )
        return items

    def jsonata_item_selector(self, state: MapState, index: int, item: Json) -> Json:
        context = self.context()
        context["Map"] = {"Item": {"Index": index, "Value": item}}
        states = {"input": self.raw, "context": context}
        return self.query(state.item_selector, "ItemSelector", states)

    def map_inputs(self, state: MapState, items: Json, effective: Json) -> list[Json]:
        """The iterations' inputs: the items through ItemSelector and ItemBatcher."""
        if not isinstance(items, list):
            raise StateFault(f"Map state input must be an array but was: {dump(items)}")
        if state.has_item_selector and state.jsonata:
            inputs = [
                self.jsonata_item_selector(state, index, item) for index, item in enumerate(items)
            ]
        elif state.has_item_selector:
            inputs = [
                self.resolve(state.item_selector, effective, (index, item))
                for index, item in enumerate(items)
            ]
        else:
            inputs = list(items)
        if state.item_batcher is not None:
            inputs = self.batches(state, inputs, effective)
        return inputs

    def max_items(self, config: dict[str, Json]) -> Json:
        """ReaderConfig's MaxItems (or MaxItemsPath, or its JSONata expression), as
        given: a value that is no integer is a States.Runtime before the Map Run."""
        if "MaxItemsPath" in config:
            return self.integer_at(config["MaxItemsPath"], self.raw, "MaxItemsPath")
        most = config.get("MaxItems", 0)
        if self.state.jsonata and jsonata_mode.is_expression(most):
            return self.number(most, "MaxItems", self.states())
        return most

    def reader_parameters(self, state: MapState, effective: Json) -> Json:
        reader = state.item_reader
        if state.jsonata:
            return self.query(reader.get("Arguments", {}), "Arguments", self.states())
        return self.resolve(reader.get("Parameters", {}), effective)

    async def read_items(self, state: MapState, parameters: Json, most: Json) -> list[Json]:
        """The ItemReader's items (ItemsPath does not apply to them: AWS's recordings)."""
        reader = state.item_reader
        limit = itemio.max_items(most)
        items = await itemio.read_items(
            self.it.items, reader["Resource"], parameters, reader.get("ReaderConfig", {}), limit
        )
        return items[:limit]

    async def run_map(
        self, state: MapState, effective: Json, resumed: Within | None = None
    ) -> Json:
        concurrency = self.max_concurrency(state)
        reading = state.item_reader is not None
        inputs: list[Json] = []
        most: Json = 0
        if reading:
            # AWS does not know the length before its Map Run reads the items
            self.emit("MapStateStarted", {"length": 0})
            most = self.max_items(state.item_reader.get("ReaderConfig", {}))
        else:
            if state.jsonata:
                items = self.jsonata_items(state, effective)
            else:
                items = self.select(state.items_path, effective, "ItemsPath")
            inputs = self.map_inputs(state, items, effective)
            if resumed is None:
                self.emit("MapStateStarted", {"length": len(inputs)})
        tolerated_count, tolerated_percentage = self.tolerance(state)
        distributed = state.mode == "DISTRIBUTED"
        # a Distributed Map's iterations (child executions) are not checkpointed inside
        fork = None if distributed else self.fork(resumed)
        run_arn = ""
        if distributed:
            run_arn = self.map_run_arn(state)
            self.emit("MapRunStarted", {"mapRunArn": run_arn})
        read: list[Json] = []
        parameters: Json = None
        if reading:
            try:
                parameters = self.reader_parameters(state, effective)
                read = await self.read_items(state, parameters, most)
                inputs = self.map_inputs(state, read, effective)
            except StatesError as unread:
                self.emit("MapRunFailed", {"error": unread.error, "cause": unread.cause or ""})
                raise
        processor = state.processor
        assert processor is not None
        flow = self.scope.flow
        results: list[Json] = [None] * len(inputs)
        #: which iterations succeeded (a queue reader deletes their messages)
        succeeded = [False] * len(inputs)
        #: each iteration as the child execution AWS runs (a ResultWriter's records)
        children: list[itemio.ChildRun | None] = [None] * len(inputs)
        limit = concurrency if concurrency > 0 else len(inputs) or 1
        if state.mode == "INLINE":
            limit = min(limit, INLINE_MAP_CONCURRENCY)
        slots = asyncio.Semaphore(limit)
        tolerating = tolerated_count is not None or tolerated_percentage is not None
        failures = 0
        last_end = [flow.last]
        running: dict[int, _Scope] = {}

        def over_threshold() -> bool:
            if tolerated_count is not None and failures > tolerated_count:
                return True
            if tolerated_percentage is not None and inputs:
                return failures * 100 / len(inputs) > tolerated_percentage
            return not tolerating and failures > 0

        def mark(child: _Scope, kind: str, index: int, advance: bool = False) -> int:
            # a Distributed Map's iterations are child executions: not in this history
            if distributed:
                return flow.last
            details = {"index": index, "name": state.name}
            return child.history.emit(child.flow, kind, details, advance=advance)

        async def iteration(index: int, item: Json) -> None:
            nonlocal failures
            try:
                if distributed:
                    child = self.scope.child(Flow(), History(MemoryLog(), self.it.clock.time))
                    children[index] = itemio.ChildRun(str(uuid.uuid4()), item, self.it.clock.time())
                else:
                    child = self.scope.child(flow.fork())
                running[index] = child
                at = None if fork is None else fork.start(index, child, processor, item)
                if at is None:
                    mark(child, "MapIterationStarted", index, advance=True)
                try:
                    results[index] = await self.it._program(processor, item, child, at)
                except StatesError as failure:
                    running.pop(index, None)
                    mark(child, "MapIterationFailed", index)
                    if not distributed:
                        flow.last = child.flow.last
                    failures += 1
                    results[index] = failure.output()
                    ended = children[index]
                    if ended is not None:
                        ended.stop, ended.error = self.it.clock.time(), failure.error
                        ended.cause = failure.cause
                    if over_threshold():
                        raise _Abort(failure) from None
                    if fork is not None:
                        await self.ended(fork, index, True, results[index], None)
                    return
                running.pop(index, None)
                succeeded[index] = True
                ended = children[index]
                if ended is not None:
                    ended.stop, ended.output = self.it.clock.time(), results[index]
                end = mark(child, "MapIterationSucceeded", index)
                if not distributed:
                    flow.last = child.flow.last
                last_end[0] = end
                if fork is not None:
                    await self.ended(fork, index, False, results[index], end)
            finally:
                slots.release()

        async def settle() -> None:
            # a queue reader's messages go once their iterations succeeded (not when
            # the execution is stopped: those are received again, as SQS would)
            if reading and state.item_reader["Resource"] == itemio.RECEIVE_MESSAGE:
                done = self.processed(state, inputs, read, succeeded)
                await itemio.delete_messages(self.it.items, parameters, done)

        try:
            async with asyncio.TaskGroup() as group:
                for index, item in enumerate(inputs):
                    if fork is not None and index in fork.finished:  # ended before a resume
                        failed, results[index] = fork.finished[index]
                        failures += failed
                        continue
                    await slots.acquire()
                    if failures and over_threshold():
                        slots.release()
                        break
                    group.create_task(iteration(index, item))
        except* _Abort as aborted:
            await settle()
            failure = _first_abort(aborted)
            for index, child in sorted(running.items()):
                mark(child, "MapIterationAborted", index, advance=True)
            if tolerating:
                failure = StatesError(
                    EXCEED_TOLERATED_FAILURE_THRESHOLD,
                    "The specified tolerance threshold was exceeded",
                )
            if distributed:
                self.emit("MapRunFailed", {"error": failure.error, "cause": failure.cause or ""})
            raise failure from None
        finally:
            self.unfork(fork)
        if distributed:
            try:
                await settle()
                if state.result_writer is not None:
                    results = await self.write_results(state, run_arn, children, effective)
            except StatesError as unwritten:
                self.emit(
                    "MapRunFailed", {"error": unwritten.error, "cause": unwritten.cause or ""}
                )
                raise
            # as AWS has recorded since November 2024: the run's end and the state's
            # success point back without moving on; MapStateExited follows MapRunStarted
            run_end = self.emit("MapRunSucceeded", advance=False)
            self.emit("MapStateSucceeded", advance=False, previous=run_end)
            return results
        flow.last = last_end[0] if fork is None else fork.last_end
        self.emit("MapStateSucceeded", advance=False)
        return results

    def processed(
        self, state: MapState, inputs: list[Json], read: list[Json], succeeded: list[bool]
    ) -> list[Json]:
        """The items read whose iteration succeeded (a batch's items together)."""
        sizes = (
            [len(batch["Items"]) for batch in inputs] if state.item_batcher else [1] * len(inputs)
        )
        done: list[Json] = []
        start = 0
        for size, ok in zip(sizes, succeeded, strict=True):
            if ok:
                done.extend(read[start : start + size])
            start += size
        return done

    async def write_results(
        self,
        state: MapState,
        run_arn: str,
        children: Sequence[itemio.ChildRun | None],
        effective: Json,
    ) -> Json:
        """ResultWriter: the results transformed (WriterConfig) and, with a
        Resource, exported (``itemio.write_results``)."""
        writer = state.result_writer
        config = writer.get("WriterConfig", {})
        runs = [run for run in children if run is not None]  # stopped early: never started
        # the children's ARNs as AWS names them: the run's machine/label and the child's name
        prefix = run_arn.rsplit(":", 1)[0].replace(":mapRun:", ":execution:", 1)
        machine = run_arn.rsplit(":", 1)[0].replace(":mapRun:", ":stateMachine:", 1)
        records = [run.record(f"{prefix}:{run.name}", machine) for run in runs]
        if "Resource" not in writer:
            return itemio.transformed(config, runs, records, exporting=False)
        if state.jsonata:
            parameters = self.query(writer.get("Arguments", {}), "Arguments", self.states())
        else:
            parameters = self.resolve(writer.get("Parameters", {}), effective)
        return await itemio.write_results(self.it.items, parameters, config, run_arn, runs, records)

    def map_run_arn(self, state: MapState) -> str:
        execution = self.it.execution
        assert execution is not None
        prefix = execution.state_machine_arn.replace(":stateMachine:", ":mapRun:", 1)
        return f"{prefix}/{state.label or uuid.uuid4()}:{uuid.uuid4()}"

    def batches(self, state: MapState, inputs: list[Json], effective: Json) -> list[Json]:
        """ItemBatcher: items grouped ``{"BatchInput": {...}, "Items": [...]}`` (AWS's
        recorded shape; BatchInput only when given). In JSONata mode its fields
        may be expressions."""
        batcher = state.item_batcher if isinstance(state.item_batcher, dict) else {}
        states = self.states() if state.jsonata else None
        most = batcher.get("MaxItemsPerBatch")
        most_bytes = batcher.get("MaxInputBytesPerBatch")
        if state.jsonata:
            if isinstance(most, str) and jsonata_mode.is_expression(most):
                most = self.number(most, "MaxItemsPerBatch", states)
            if isinstance(most_bytes, str) and jsonata_mode.is_expression(most_bytes):
                most_bytes = self.number(most_bytes, "MaxInputBytesPerBatch", states)
        if "MaxItemsPerBatchPath" in batcher:
            most = int(
                self.integer_at(batcher["MaxItemsPerBatchPath"], self.raw, "MaxItemsPerBatchPath")
            )
        if "MaxInputBytesPerBatchPath" in batcher:
            most_bytes = int(
                self.integer_at(
                    batcher["MaxInputBytesPerBatchPath"], self.raw, "MaxInputBytesPerBatchPath"
                )
            )
        given = "BatchInput" in batcher
        extra = batcher.get("BatchInput", {})
        if state.jsonata and given:
            extra = self.query(extra, "BatchInput", states)
        elif isinstance(extra, dict):
            extra = self.resolve(extra, effective)

        def batch_of(items: list[Json]) -> Json:
            return {"BatchInput": extra, "Items": items} if given else {"Items": items}

        out: list[Json] = []
        batch: list[Json] = []
        size = 0
        for item in inputs:
            item_size = len(dump(item).encode("utf-8", "surrogatepass"))
            full = most is not None and len(batch) >= most
            too_big = most_bytes is not None and batch and size + item_size > most_bytes
            if full or too_big:
                out.append(batch_of(batch))
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            out.append(batch_of(batch))
        return out


class _TaskEvents:
    """A Task attempt's events: TaskScheduled ... or LambdaFunctionScheduled ..., by resource."""

    def __init__(self, run: _StateRun, resource: Resource) -> None:
        self.run = run
        self.resource = resource
        self.lambda_kind = resource.kind == "lambda"
        self.activity = resource.kind == "activity"

    def _ids(self) -> dict[str, Json]:
        return {"resourceType": self.resource.resource_type, "resource": self.resource.resource}

    def scheduled(self, effective: Json, timeout: int | None, heartbeat: int | None) -> None:
        if self.lambda_kind or self.activity:
            prefix = "LambdaFunction" if self.lambda_kind else "Activity"
            details: dict[str, Json] = {
                "resource": self.resource.arn,
                "input": dump(effective),
                "inputDetails": {"truncated": False},
            }
            if timeout is not None:
                details["timeoutInSeconds"] = timeout
            if heartbeat is not None and self.activity:
                details["heartbeatInSeconds"] = heartbeat
            self.run.emit(f"{prefix}Scheduled", details)
            return
        details = {
            **self._ids(),
            "region": self.resource.region,
            "parameters": dump(effective),
        }
        if timeout is not None:
            details["timeoutInSeconds"] = timeout
        if heartbeat is not None:
            details["heartbeatInSeconds"] = heartbeat
        self.run.emit("TaskScheduled", details)

    def started(self) -> None:
        if self.lambda_kind:
            self.run.emit("LambdaFunctionStarted")
        elif self.activity:
            self.run.emit("ActivityStarted", {})
        else:
            self.run.emit("TaskStarted", self._ids())

    def submitted(self, output: Json) -> None:
        self.run.emit(
            "TaskSubmitted",
            {**self._ids(), "output": dump(output), "outputDetails": {"truncated": False}},
        )

    def succeeded(self, result: Json) -> None:
        body = {"output": dump(result), "outputDetails": {"truncated": False}}
        if self.lambda_kind:
            self.run.emit("LambdaFunctionSucceeded", body)
        elif self.activity:
            self.run.emit("ActivitySucceeded", body)
        else:
            self.run.emit("TaskSucceeded", {**self._ids(), **body})

    def failed(self, failure: StatesError) -> None:
        body: dict[str, Json] = {}
        if failure.cause is not None:
            body["cause"] = failure.cause
        body["error"] = failure.error
        if self.lambda_kind:
            self.run.emit("LambdaFunctionFailed", body)
        elif self.activity:
            self.run.emit("ActivityFailed", body)
        else:
            self.run.emit("TaskFailed", {**body, **self._ids()})

    def timed_out(self, error: str) -> None:
        body = {"error": error}
        if self.lambda_kind:
            self.run.emit("LambdaFunctionTimedOut", body)
        elif self.activity:
            self.run.emit("ActivityTimedOut", body)
        else:
            self.run.emit("TaskTimedOut", {**body, **self._ids()})


class _HeartbeatMissed(Exception):
    pass


class _Heartbeat:
    """HeartbeatSeconds: the task fails unless ``beat`` is called within each interval."""

    def __init__(self, clock: Clock, seconds: int) -> None:
        self.clock = clock
        self.seconds = seconds
        self.task: asyncio.Future[Json] | None = None
        self.missed = False
        self.timer: Any = None

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.clock.call_later(self.seconds, self._expire)

    def _expire(self) -> None:
        self.missed = True
        if self.task is not None:
            self.task.cancel()

    def beat(self) -> None:
        if not self.missed:
            self._arm()

    async def guard(self, work: Awaitable[Json]) -> Json:
        self.task = asyncio.ensure_future(work)
        self._arm()
        try:
            return await self.task
        except asyncio.CancelledError:
            if self.missed:
                raise _HeartbeatMissed() from None
            raise
        finally:
            if self.timer is not None:
                self.timer.cancel()


def _first(retriers: tuple[Retrier, ...], error: str) -> tuple[int, Retrier] | None:
    """The first retrier naming ``error``: only it applies, even once its attempts are spent."""
    for index, rule in enumerate(retriers):
        if matches(rule.error_equals, error):
            return index, rule
    return None


def _first_abort(group: BaseExceptionGroup[_Abort]) -> StatesError:
    for error in group.exceptions:
        if isinstance(error, _Abort):
            return error.failure
        if isinstance(error, BaseExceptionGroup):
            return _first_abort(error)
    raise group


def _plain(value: Json) -> str:
    return value if isinstance(value, str) else dump(value)


def _json_type(value: Json) -> str:
    """JSONata's name of a value's type, as AWS's messages use it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _until(timestamp: str, now: float) -> float:
    moment = choice.parse_timestamp(timestamp)
    if moment is None:
        raise StateFault(
            "The Timestamp field cannot be parsed as an ISO-8601 extended offset date-time "
            f"format string: {timestamp}"
        )
    return moment.timestamp() - now


async def run_machine(
    machine: StateMachine,
    input_text: str = "{}",
    *,
    clock: Clock | None = None,
    tasks: TaskRunner | None = None,
    name: str | None = None,
    machine_name: str = "machine",
    account: str = "000000000000",
    region: str = "us-east-1",
    role_arn: str | None = None,
    items: itemio.ItemSource | None = None,
) -> tuple[Outcome, MemoryLog]:
    """Run one execution in memory (an EXPRESS execution, a test): its outcome and history."""
    clock = clock if clock is not None else SystemClock()
    name = name or str(uuid.uuid4())
    machine_arn = f"arn:aws:states:{region}:{account}:stateMachine:{machine_name}"
    execution = Execution(
        arn=f"arn:aws:states:{region}:{account}:execution:{machine_name}:{name}",
        name=name,
        state_machine_arn=machine_arn,
        state_machine_name=machine_name,
        input_text=input_text,
        role_arn=role_arn or f"arn:aws:iam::{account}:role/{machine_name}-role",
        start_time=clock.time(),
    )
    log = MemoryLog()
    interpreter = Interpreter(
        machine, log=log, tasks=tasks, clock=clock, region=region, items=items
    )
    outcome = await interpreter.run(execution)
    return outcome, log


#: A coroutine function a test's task runner may be written as.
TaskFunction = Callable[[TaskRequest], Awaitable[Json]]
