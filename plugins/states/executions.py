"""Executions of a runtime's state machines: started, run, kept, resumed.

One ``Executions`` per runtime (``executions_of(runtime)``), shared by its
``state_machine`` resources, runs every execution as a task of the
runtime's task group:

- a STANDARD execution is durable: its row is in the state database
  (``StatesStore``) before ``start_execution`` returns; its history events
  are written with each checkpoint, one transaction per state transition
  (``DurableLog``; after a Pass or Choice state, with the next one); a
  runner that stops (gracefully, or killed) leaves it RUNNING at its last
  checkpoint, and the next runner to start with its
  state machine resumes it there (``history.Within``: a Wait waits only
  what is left, a Task attempt under way is resumed, not called again);
- in a cluster (a PostgreSQL state) an execution runs on one runner, its
  ``owner``, for a lease of ``LEASE`` seconds it renews every
  ``RENEW_EVERY``; the other runners take over those whose lease ran out
  (their runner died) every ``LEASE`` seconds, and a graceful stop lets its
  executions go at once. A runner that lost one (another took it over)
  learns so at its next write and stops running it;
- an EXPRESS execution runs in memory (``MemoryLog``); the last
  ``KEPT_EXPRESS`` of them stay describable until the runtime stops.

Around each execution: "Step Functions Execution Status Change" events on
the default bus (source ``aws.states``, AWS's detail) when it starts and
when it ends, and the metrics ExecutionsStarted, ExecutionsSucceeded,
ExecutionsFailed, ExecutionsTimedOut, ExecutionsAborted and ExecutionTime
(milliseconds) under ``Pipelines/States`` (AWS: ``AWS/States``) with the
dimension ``StateMachineArn``.

Public functions the stepfunctions API and the CLI call: ``start_execution``,
``start_sync_execution``, ``describe_execution``, ``list_executions``,
``get_execution_history``, ``stop_execution``, ``send_task_success``,
``send_task_failure``, ``send_task_heartbeat``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.clock import sleep
from pipelines.errors import CodedError, NotRunningError, PipelinesError
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.replay import runner_name
from pipelines.targets import TargetServices
from plugins.states.definition import Program, StateMachine, parse_definition
from plugins.states.errors import PAYLOAD_LIMIT, StatesError
from plugins.states.history import (
    CHILDREN,
    HISTORY_LIMIT,
    Checkpoint,
    HistoryEvent,
    MemoryLog,
)
from plugins.states.interpreter import PURE, Execution, Interpreter, Outcome
from plugins.states.redrive import (
    KEPT_TOKENS,
    TOKEN_SECONDS,
    not_redrivable,
    redrive_point,
    resumed_at,
)
from plugins.states.store import (
    ABORTED,
    ANSWERED,
    EXPRESS,
    FAILED,
    RUNNING,
    STANDARD,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionExists,
    ExecutionRecord,
    StatesStore,
)
from plugins.states.tasks import TaskRunner

log = logging.getLogger("plugins.states")

#: Seconds a runner holds an execution without renewing it; another runner
#: of the cluster takes over one whose owner has not renewed it for that long.
LEASE = 60.0
RENEW_EVERY = LEASE / 3
#: How often a runner waiting for task tokens looks for answers given to
#: another runner (or written by another process) in the state database.
TOKEN_POLL = 1.0
#: How often a ``.sync`` parent looks for the end of a child run elsewhere.
CHILD_POLL = 1.0
#: Checkpoints after Pass and Choice states left to the next one, at most in a row.
PURE_RUN = 100
#: EXPRESS executions kept in memory for DescribeExecution.
KEPT_EXPRESS = 1000
#: AWS publishes these under AWS/States; like the bus's own metrics (Pipelines/Events)
#: they go under the project's namespace, PutMetricData reserving AWS/.
METRICS_NAMESPACE = "Pipelines/States"
STATUS_CHANGE = "Step Functions Execution Status Change"
_NAME = re.compile(r"^[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]{1,80}$")
_METRIC_OF_STATUS = {
    SUCCEEDED: "ExecutionsSucceeded",
    FAILED: "ExecutionsFailed",
    TIMED_OUT: "ExecutionsTimedOut",
    ABORTED: "ExecutionsAborted",
}


class ExecutionError(CodedError):
    """A request Step Functions would refuse, with its error code
    (``StateMachineDoesNotExist``, ``ExecutionDoesNotExist``,
    ``ExecutionAlreadyExists``, ``InvalidName``, ``InvalidExecutionInput``,
    ``TaskDoesNotExist``, ``InvalidToken``, ``InvalidOutput``, ...)."""


class _Lost(Exception):
    """This runner no longer owns the execution: another runner took it over."""


class _Unborn(Exception):
    """An execution to start here found its ARN taken when its start was written."""


class _Aborted(Exception):
    """StopExecution reached the runner running the execution."""

    def __init__(self, error: str | None, cause: str | None) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


@dataclass(slots=True)
class Machine:
    """A state machine this runtime runs (a ``state_machine`` resource)."""

    name: str
    arn: str
    machine_type: str
    role_arn: str
    definition: str
    program: StateMachine
    revision: int = 1
    #: What its executions' Task states call: given the runtime's runner,
    #: the one to use (a config test's mocked responses); None: the runtime's.
    tasks: Callable[[TaskRunner], TaskRunner] | None = None


@dataclass(slots=True)
class _Run:
    """An execution running in this runner."""

    execution: Execution
    machine: Machine
    interpreter: Interpreter
    log: DurableLog | MemoryLog
    task: asyncio.Task[None] | None = None
    #: StopExecution's error and cause, once asked
    abort: tuple[str | None, str | None] | None = None
    #: another runner took it over (learnt inside a Parallel or Map)
    lost: bool = False
    done: asyncio.Future[ExecutionRecord] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: a redrive's run: announced RUNNING again when it starts
    redriven: bool = False


class DurableLog:
    """A STANDARD execution's ``ExecutionLog``: events kept until the next
    checkpoint, then written with it in one transaction by the owner.

    The checkpoint after a Pass or Choice state (``PURE``: no effect, no
    wait) is written with the next one, up to ``PURE_RUN`` in a row: a
    runner that stops meanwhile resumes at the checkpoint before the run,
    and those states are done again (nothing of them was durable, nothing
    outside saw them).

    Inside a top-level Parallel or Map it takes checkpoints too (``nested``):
    those its branches and iterations ask for at once share one write, whose
    snapshot of the whole execution is taken when it is written; the
    branches and iterations ended meanwhile (``child_done``) go with it, and
    are cleared by the first write once the state has ended."""

    nested = True

    def __init__(
        self,
        engine: Executions,
        arn: str,
        program: Program | None = None,
        at: str = "",
        *,
        resumed: bool = False,
        birth: ExecutionRecord | None = None,
    ) -> None:
        self.engine = engine
        self.arn = arn
        #: a new execution's row, written with its first write (``born`` then)
        self.birth = birth
        self.born: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if birth is None:
            self.born.set_result(None)
        self.pending: list[HistoryEvent] = []
        self.last_id = 0
        #: the last checkpoint written
        self.point: Checkpoint | None = None
        #: the top-level program and the state under way (after the last checkpoint)
        self.program = program
        self.at = at
        self.deferred = 0
        #: branches and iterations ended since the last write (``child_done``)
        self.children: list[tuple[str, int, bool, Any]] = []
        #: whether some may be kept in the store (written, or left by the run before a resume)
        self.kept = resumed
        #: whether it may have task tokens recorded (their rows go at its end)
        self.tokens = resumed
        #: the write inside a Parallel or Map that callers may still join, and its snapshot
        self._inside: asyncio.Future[None] | None = None
        self._snapshot: Callable[[], Checkpoint | None] | None = None

    def append(self, event: HistoryEvent) -> None:
        self.pending.append(event)
        self.last_id = event.id

    def _after_pure(self, point: Checkpoint) -> bool:
        """Whether ``point`` follows a top-level Pass or Choice state."""
        done, self.at = self.at, point.next_state
        if point.within is not None or self.program is None:
            return False
        return isinstance(self.program.states.get(done), PURE)

    async def checkpoint(self, point: Checkpoint) -> None:
        if self._after_pure(point) and self.deferred < PURE_RUN:
            self.deferred += 1
            return
        self.deferred = 0
        store = self.engine.store
        assert store is not None
        events, self.pending = self.pending, []
        children: list[tuple[str, int, bool, Any]] = []
        clear = False
        if point.within is not None and point.within.phase == CHILDREN:
            children, self.children = self.children, []
            self.kept = self.kept or bool(children)
        else:  # no Parallel or Map under way: what its branches left is of no use
            self.children = []
            clear, self.kept = self.kept, False
        self.engine.writing += 1
        lease = self.engine.lease()
        checkpoint = point.to_json()
        birth = self.birth
        owner = self.engine.owner
        transition = store.transition(
            self.arn, owner, lease, events, checkpoint, children, clear=clear, create=birth
        )
        write = asyncio.ensure_future(transition)
        write.add_done_callback(self.engine.written)
        try:
            stop = await asyncio.shield(write)
        except asyncio.CancelledError:
            # stopped (or aborted) mid-write: know whether it was written,
            # so what follows (an ExecutionAborted event) numbers on from it
            with contextlib.suppress(Exception):
                await asyncio.wait([write])
            done = write.done() and not write.cancelled() and write.exception() is None
            if done and write.result() is not None:
                self.point = point
                self.was_born()
            else:
                self.pending = events + self.pending
            raise
        except Exception as exc:
            if birth is not None:  # the start was not written: tell start_execution why
                self.not_born(exc)
                raise _Unborn(self.arn) from None
            raise
        if stop is None:
            raise _Lost(self.arn)
        self.point = point
        if birth is not None:
            self.was_born()
            await self.engine.started(self.arn)
        if stop:
            asked = orjson.loads(stop)
            raise _Aborted(asked.get("error"), asked.get("cause"))

    def was_born(self) -> None:
        self.birth = None
        if not self.born.done():
            self.born.set_result(None)

    def not_born(self, exc: BaseException) -> None:
        self.birth = None
        if not self.born.done():
            self.born.set_exception(exc)
            self.born.add_done_callback(_retrieve)

    def child_done(self, fork: str, index: int, failed: bool, result: Any) -> None:
        self.children.append((fork, index, failed, result))

    async def checkpoint_inside(self, snapshot: Callable[[], Checkpoint | None]) -> None:
        """A checkpoint a branch or iteration asks for: written with those
        asked for at the same moment, the snapshot taken as it is written."""
        self._snapshot = snapshot
        if self._inside is None:
            self._inside = asyncio.ensure_future(self._write_inside())
            # its error reaches every caller; retrieved even if all were cancelled
            self._inside.add_done_callback(_retrieve)
        try:
            await asyncio.shield(self._inside)
        except (_Lost, _Aborted) as stop:
            # met in a branch or an iteration: the execution's own task ends it
            self.engine.stopped(self.arn, stop)
            raise asyncio.CancelledError from None

    async def _write_inside(self) -> None:
        self._inside = None  # from here, callers wait for the next write
        point = None if self._snapshot is None else self._snapshot()
        if point is not None:
            await self.checkpoint(point)

    async def submitted(self, token: str) -> None:
        """Write the TaskSubmitted event of a top-level ``.waitForTaskToken``
        attempt under way at once (resumed, the attempt is not submitted
        again): its checkpoint moved past it. Inside a Parallel or Map
        (no checkpoint inside them) it waits for the next transition."""
        point = self.point
        within = None if point is None else point.within
        if point is None or within is None or within.task_token != token or not self.pending:
            return
        moved = Checkpoint(
            point.next_state, point.input, self.last_id, self.last_id, within, point.variables
        )
        await self.checkpoint(moved)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _TokenWait:
    """A ``.waitForTaskToken`` attempt waiting in this runner."""

    answer: asyncio.Future[tuple[str | None, str | None, str | None]]
    beat: Callable[[], None]
    last_beat: float


_ENGINES: weakref.WeakKeyDictionary[Any, Executions] = weakref.WeakKeyDictionary()


def executions_of(services: Any) -> Executions:
    """The runtime's executions (its ``state_machine`` resources have started);
    ``ExecutionError`` when it runs no state machine."""
    engine = _ENGINES.get(services)
    if engine is None:
        raise ExecutionError(
            "StateMachineDoesNotExist", "this runtime has no state machine resource running"
        )
    return engine


def execution_arn(machine_arn: str, name: str, machine_type: str = STANDARD) -> str:
    kind = "express" if machine_type == EXPRESS else "execution"
    return machine_arn.replace(":stateMachine:", f":{kind}:", 1) + f":{name}"


def machine_arn(name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:states:{region}:{account}:stateMachine:{name}"


def name_of_arn(arn: str) -> str:
    """A state machine's name from its ARN (or the name itself)."""
    if arn.startswith("arn:"):
        parts = arn.split(":")
        if len(parts) >= 7 and parts[5] == "stateMachine":
            return parts[6]
    return arn


class Executions:
    """The executions of one runtime's state machines (see the module's doc)."""

    def __init__(self, services: TargetServices, store: StatesStore | None) -> None:
        self.services = services
        self.clock = services.clock
        #: None without a state database: EXPRESS machines only.
        self.store = store
        self.owner = services.runner or runner_name()
        self.machines: dict[str, Machine] = {}
        self.runs: dict[str, _Run] = {}
        self.express: collections.OrderedDict[str, tuple[ExecutionRecord, list[HistoryEvent]]] = (
            collections.OrderedDict()
        )
        self.tokens: dict[str, _TokenWait] = {}
        #: the events a STANDARD execution's history may hold (AWS's hard quota);
        #: None lifts it (a benchmark measuring what AWS would fail)
        self.history_limit: int | None = HISTORY_LIMIT
        self.users = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._resumed = False
        #: checkpoints and ends being written, tasks' calls under way (``activity``)
        self.writing = 0
        self.calling = 0
        #: RedriveExecution's last client tokens per execution: (token, redriveDate, when)
        self.redrive_tokens: dict[str, list[tuple[str, float, float]]] = {}

    def written(self, _: object = None) -> None:
        self.writing -= 1

    def activity(self) -> tuple[bool, Any]:
        """(busy, progress), for config tests: busy while a checkpoint is
        being written or a task's call is under way; progress changes as
        executions move (their events so far, those that ended). Not busy
        and the same progress over a pause: each running execution waits
        (for a timer, a task token, a child) or none runs."""
        progress = (
            len(self.express),
            tuple(
                (arn, run.log.last_id if isinstance(run.log, DurableLog) else len(run.log.events))
                for arn, run in self.runs.items()
            ),
        )
        return self.writing + self.calling > 0, progress

    # -- lifetime: one per runtime, shared by its state machines --------------------

    @classmethod
    async def attach(cls, services: TargetServices, *, durable: bool) -> Executions:
        engine = _ENGINES.get(services)
        if engine is None:
            store = None
            if services.state_path is not None:
                store = await services.open_store(StatesStore, where="state machines")
            elif durable:
                raise PipelinesError(
                    "a STANDARD state machine keeps its executions in the state database;"
                    " give the runtime a state_path (a config always has one),"
                    " or make it EXPRESS (run in memory)"
                )
            engine = cls(services, store)
            _ENGINES[services] = engine
            engine._tasks.append(services.spawn(engine._keep()))
        engine.users += 1
        return engine

    async def detach(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        _ENGINES.pop(self.services, None)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        if self.store is not None:
            await self.store.close()
            self.store = None

    def lease(self) -> float:
        return self.clock.time() + LEASE

    async def add_machine(self, machine: Machine) -> None:
        """Run ``machine`` here: record it (a new revision if it changed) and
        resume its executions that no runner runs."""
        if self.store is not None:
            record = await self.store.put_machine(
                machine.name, machine.arn, machine.definition, machine.machine_type,
                machine.role_arn,
            )  # fmt: skip
            machine.revision = record.revision
        self.machines[machine.name] = machine
        if self.store is not None and machine.machine_type == STANDARD:
            self._tasks.append(self.services.spawn(self._resume([machine.name])))

    async def remove_machine(self, machine: Machine, timeout: float = 0.0) -> None:
        """Stop running ``machine``'s executions here (a graceful stop): each
        stays RUNNING at its last checkpoint and is let go, for this or
        another runner to resume. A machine already replaced under its name
        (a reload) leaves them to its successor."""
        if self.machines.get(machine.name) is not machine:
            return
        del self.machines[machine.name]
        runs = [run for run in self.runs.values() if run.machine.name == machine.name]
        tasks = [run.task for run in runs if run.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout or None)

    # -- starting ---------------------------------------------------------------------

    def _machine(self, name_or_arn: str) -> Machine:
        name = name_of_arn(name_or_arn)
        machine = self.machines.get(name)
        if machine is None:
            raise ExecutionError(
                "StateMachineDoesNotExist", f"State Machine Does Not Exist: '{name_or_arn}'"
            )
        return machine

    async def start_execution(
        self,
        machine_name: str,
        input_text: str | None = None,
        name: str | None = None,
        *,
        parent: str | None = None,
    ) -> dict[str, Any]:
        """StartExecution: ``{"executionArn", "startDate"}``. A STANDARD
        execution is in the state database when this returns. A name in use
        by an execution with the same input is that execution (AWS's
        idempotence); with another input, ``ExecutionAlreadyExists``."""
        machine = self._machine(machine_name)
        input_text = _checked_input(input_text)
        name = _checked_name(name)
        arn = execution_arn(machine.arn, name, machine.machine_type)
        if machine.machine_type == EXPRESS:  # AWS: express:MACHINE:NAME:ID, a name used again
            arn += f":{uuid.uuid4()}"
        now = self.clock.time()
        execution = Execution(
            arn, name, machine.arn, machine.name, input_text, machine.role_arn, now, 0
        )
        if machine.machine_type == EXPRESS or self.store is None:
            if arn in self.runs or arn in self.express:
                raise ExecutionError("ExecutionAlreadyExists", f"Execution Already Exists: '{arn}'")
            self._launch(execution, machine, None)
            return {"executionArn": arn, "startDate": now}
        record = ExecutionRecord(
            arn, machine.name, name, RUNNING, input_text, None, None, None, now, None, 0,
            machine.revision, machine.role_arn, parent, None, 0,
        )  # fmt: skip
        local = self.runs.get(arn)
        if local is not None:  # running here: the same one if the same input
            if local.execution.input_text == input_text:
                return {"executionArn": arn, "startDate": local.execution.start_time}
            raise ExecutionError("ExecutionAlreadyExists", f"Execution Already Exists: '{arn}'")
        # Its row is written with its first write (a checkpoint, or its end):
        # the Pass and Choice states it may start with run meanwhile, and a
        # chain of them is one transaction, start and end, instead of two.
        # Nothing of it has an effect before (a Task's call, a Wait, comes
        # after a checkpoint), and it answers once that write is durable.
        run = self._launch(execution, machine, None, birth=record)
        assert isinstance(run.log, DurableLog)
        try:
            await asyncio.shield(run.log.born)
        except ExecutionExists:
            found = await self.store.execution(arn)
            if found is not None and found.input == input_text and found.status == RUNNING:
                return {"executionArn": arn, "startDate": found.started}
            raise ExecutionError(
                "ExecutionAlreadyExists", f"Execution Already Exists: '{arn}'"
            ) from None
        return {"executionArn": arn, "startDate": now}

    async def start_sync_execution(
        self, machine_name: str, input_text: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """StartSyncExecution (EXPRESS machines): run it and answer how it ended."""
        machine = self._machine(machine_name)
        if machine.machine_type != EXPRESS:
            raise ExecutionError(
                "StateMachineTypeNotSupported",
                "This operation is not supported by this type of state machine",
            )
        started = await self.start_execution(machine.name, input_text, name)
        run = self.runs.get(started["executionArn"])
        record = await run.done if run is not None else self.express[started["executionArn"]][0]
        out = record.describe(machine.arn)
        out.pop("redriveCount", None)
        return out

    def _launch(
        self,
        execution: Execution,
        machine: Machine,
        resume: Checkpoint | None,
        birth: ExecutionRecord | None = None,
    ) -> _Run:
        durable = machine.machine_type == STANDARD and self.store is not None
        execution_log: DurableLog | MemoryLog = (
            DurableLog(
                self,
                execution.arn,
                machine.program.program,
                resume.next_state if resume is not None else machine.program.program.start_at,
                resumed=resume is not None,
                birth=birth,
            )
            if durable
            else MemoryLog()
        )
        from plugins.states.integrations import RuntimeTasks

        tasks: TaskRunner = RuntimeTasks(self, execution)
        if machine.tasks is not None:
            tasks = machine.tasks(tasks)
        from plugins.states.buckets import RuntimeItems  # sfnitems: Map's ItemReader/ResultWriter

        interpreter = Interpreter(
            machine.program,
            log=execution_log,
            tasks=tasks,
            clock=self.clock,
            region=DEFAULT_REGION,
            items=RuntimeItems(self.services),
        )
        if machine.machine_type == STANDARD:  # AWS caps a STANDARD execution's history
            interpreter.history.limit = self.history_limit
        run = _Run(execution, machine, interpreter, execution_log)
        self.runs[execution.arn] = run
        run.task = self.services.spawn(self._drive(run, resume))
        return run

    # -- running ----------------------------------------------------------------------

    async def _drive(self, run: _Run, resume: Checkpoint | None) -> None:
        """One execution's task: nothing it meets ends the runtime."""
        execution, machine = run.execution, run.machine
        try:
            unborn = isinstance(run.log, DurableLog) and run.log.birth is not None
            if (resume is None or resume.last_event_id == 0) and not unborn:
                self._metric(machine, "ExecutionsStarted", 1.0, "Count")
                await self._announce(run, RUNNING, None)
            elif run.redriven:
                await self._announce(run, RUNNING, None)
            try:
                if resume is not None and isinstance(run.log, DurableLog) and self.store:
                    # the branches and iterations that had ended in a Parallel or Map under way
                    run.interpreter.finished = await self.store.children(execution.arn)
                outcome = await run.interpreter.run(execution, resume)
            except _Aborted as asked:
                outcome = self._aborted(run, asked.error, asked.cause)
            except asyncio.CancelledError:
                if run.abort is None:  # the runner stops: resumed later, here or elsewhere
                    if run.lost:
                        task = asyncio.current_task()
                        if task is not None:
                            task.uncancel()
                        raise _Lost(execution.arn) from None
                    await self._let_go(run)
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                outcome = self._aborted(run, *run.abort)
            await self._finish(run, outcome)
        except _Unborn:
            pass  # its ARN was taken: start_execution answers
        except _Lost:
            log.warning(
                "execution %s: another runner took it over; this one stops running it",
                execution.arn,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("execution %s failed in its runner", execution.arn)
        finally:
            self.runs.pop(execution.arn, None)
            if not run.done.done():
                run.done.cancel()
            if isinstance(run.log, DurableLog):
                run.log.not_born(
                    NotRunningError("the runtime stopped before the execution started")
                )

    def _aborted(self, run: _Run, error: str | None, cause: str | None) -> Outcome:
        details: dict[str, Any] = {}
        if error is not None:
            details["error"] = error
        if cause is not None:
            details["cause"] = cause
        history = run.interpreter.history
        event_id = history.next_id
        history.next_id += 1
        # AWS's ExecutionAborted points at no event (recorded: previousEventId 0)
        run.log.append(HistoryEvent(event_id, 0, self.clock.time(), "ExecutionAborted", details))
        return Outcome(ABORTED, error=error, cause=cause)

    async def _let_go(self, run: _Run) -> None:
        if self.store is None or not isinstance(run.log, DurableLog):
            log.warning(
                "EXPRESS execution %s was under way at shutdown and is lost", run.execution.arn
            )
            return
        try:
            await asyncio.shield(self.store.release(self.owner, [run.execution.arn]))
        except Exception:
            log.exception("letting go of execution %s failed", run.execution.arn)

    async def _finish(self, run: _Run, outcome: Outcome) -> None:
        execution, machine = run.execution, run.machine
        now = self.clock.time()
        output = outcome.output_text
        if output is not None and len(output.encode()) > PAYLOAD_LIMIT:
            output = None
        record = ExecutionRecord(
            execution.arn, machine.name, execution.name, outcome.status, execution.input_text,
            output, outcome.error, outcome.cause, execution.start_time, now,
            execution.redrive_count, machine.revision, execution.role_arn, None, None, 0,
        )  # fmt: skip
        if isinstance(run.log, DurableLog):
            assert self.store is not None
            events, run.log.pending = run.log.pending, []
            birth = run.log.birth
            self.writing += 1
            # an execution that did not succeed keeps where a redrive would start
            point = (
                None if outcome.status == SUCCEEDED else redrive_point(run.interpreter.under_way)
            )
            try:
                written = await self.store.finish(
                    execution.arn, self.owner, events, outcome.status, output, outcome.error,
                    outcome.cause, now, point, clear=run.log.kept, tokens=run.log.tokens,
                    create=birth,
                )  # fmt: skip
            except Exception as exc:
                if birth is None:
                    raise
                run.log.not_born(exc)
                raise _Unborn(execution.arn) from None
            finally:
                self.writing -= 1
            if not written:
                raise _Lost(execution.arn)
            if birth is not None:  # started and ended in one write
                run.log.was_born()
                await self.started(execution.arn)
        else:
            self.express[execution.arn] = (record, list(run.log.events))
            while len(self.express) > KEPT_EXPRESS:
                self.express.popitem(last=False)
        if not run.done.done():
            run.done.set_result(record)
        self._metric(machine, _METRIC_OF_STATUS[outcome.status], 1.0, "Count")
        self._metric(machine, "ExecutionTime", (now - execution.start_time) * 1000, "Milliseconds")
        await self._announce(run, outcome.status, record)

    async def _announce(self, run: _Run, status: str, record: ExecutionRecord | None) -> None:
        """The execution's "Step Functions Execution Status Change" event on the default bus."""
        execution = run.execution
        detail: dict[str, Any] = {
            "executionArn": execution.arn,
            "stateMachineArn": execution.state_machine_arn,
            "name": execution.name,
            "status": status,
            "startDate": int(execution.start_time * 1000),
            "stopDate": None,
            "input": execution.input_text,
            "output": None,
            "inputDetails": {"included": True},
            "outputDetails": None,
            "error": None,
            "cause": None,
        }
        if record is not None:
            detail["stopDate"] = int((record.stopped or 0.0) * 1000)
            if record.output is not None:
                detail["output"] = record.output
                detail["outputDetails"] = {"included": True}
            detail["error"] = record.error
            detail["cause"] = record.cause
        entry = {
            "Source": "aws.states",
            "DetailType": STATUS_CHANGE,
            "Detail": orjson.dumps(detail).decode(),
            "Resources": [execution.arn],
        }
        try:
            result = await self.services.put_events([entry])
        except NotRunningError:
            log.info("execution %s is %s; the runtime stopped taking events", execution.arn, status)
            return
        if result.get("FailedEntryCount"):
            log.error("the status change of execution %s was not put: %s", execution.arn, result)

    def _metric(self, machine: Machine, name: str, value: float, unit: str) -> None:
        with contextlib.suppress(NotRunningError):
            self.services.put_metric_data(
                METRICS_NAMESPACE, name, {"StateMachineArn": machine.arn}, value=value, unit=unit
            )

    # -- resuming and keeping --------------------------------------------------------

    async def _resume(self, machines: list[str]) -> None:
        """Claim and run the executions of ``machines`` that no runner runs."""
        waiting = getattr(self.services, "wait_running", None)
        if waiting is not None:  # tasks call other resources: once all have started
            try:
                await waiting()
            except NotRunningError:
                return
        store = self.store
        assert store is not None
        for arn in await store.claimable(machines, self.owner, self.clock.time()):
            if arn in self.runs:
                continue
            if not await store.claim(arn, self.owner, self.clock.time(), self.lease()):
                continue
            record = await store.execution(arn)
            machine = None if record is None else self.machines.get(record.machine)
            if record is None or machine is None or record.status != RUNNING:
                continue
            if arn in self.runs:  # started here meanwhile
                continue
            if record.revision != machine.revision:
                machine = await self._revision(machine, record.revision)
            resume = None if record.checkpoint is None else Checkpoint.from_json(record.checkpoint)
            redriven = None
            if record.redrive_count:  # its time limit counts from the last redrive
                redriven = (await store.redrive_dates([arn])).get(arn)
            execution = Execution(
                record.arn, record.name, machine.arn, machine.name, record.input,
                record.role_arn, record.started, record.redrive_count, redriven,
            )  # fmt: skip
            log.info(
                "resuming execution %s at %s", arn, resume.next_state if resume else "its start"
            )
            self._launch(execution, machine, resume)

    async def _revision(self, machine: Machine, revision: int) -> Machine:
        """The machine as it was at ``revision`` (started before the config changed)."""
        assert self.store is not None
        text = await self.store.definition(machine.name, revision)
        if text is None:
            return machine
        return Machine(
            machine.name, machine.arn, machine.machine_type, machine.role_arn, text,
            parse_definition(text), revision, machine.tasks,
        )  # fmt: skip

    async def _keep(self) -> None:
        """Renew this runner's leases, look for answers to its task tokens,
        and (in a cluster) take over the executions of runners that died."""
        turns = 0
        while True:
            await sleep(self.clock, TOKEN_POLL)
            turns += 1
            try:
                if self.tokens:
                    await self._poll_tokens()
                if self.store is None:
                    continue
                if turns % int(RENEW_EVERY / TOKEN_POLL) == 0:
                    # A new execution's row is written with its first write:
                    # one not written when the renewal began (or started
                    # since) is not held yet, nor lost: that write leases it.
                    born = {
                        arn
                        for arn, run in self.runs.items()
                        if isinstance(run.log, DurableLog) and run.log.birth is None
                    }
                    held = await self.store.renew(self.owner, self.lease())
                    for arn, run in list(self.runs.items()):
                        if arn not in born:
                            continue
                        if arn not in held and run.task is not None:
                            log.warning("execution %s: lease lost; this runner stops it", arn)
                            run.task.cancel()
                        elif held.get(arn) and run.abort is None:
                            asked = orjson.loads(held[arn])
                            self._abort_local(run, asked.get("error"), asked.get("cause"))
                if turns % int(LEASE / TOKEN_POLL) == 0:
                    standard = [
                        m.name for m in self.machines.values() if m.machine_type == STANDARD
                    ]
                    await self._resume(standard)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("keeping the state machines' executions failed; trying again")

    # -- stopping an execution -------------------------------------------------------

    async def started(self, arn: str) -> None:
        """A new execution's start was written: counted and announced."""
        run = self.runs.get(arn)
        if run is None:
            return
        self._metric(run.machine, "ExecutionsStarted", 1.0, "Count")
        await self._announce(run, RUNNING, None)

    def stopped(self, arn: str, stop: Exception) -> None:
        """A write inside a Parallel or Map learnt that another runner took
        the execution over, or that StopExecution asked to stop it: its task
        ends it (``_drive``)."""
        run = self.runs.get(arn)
        if run is None or run.abort is not None or run.lost:
            return
        if isinstance(stop, _Aborted):
            self._abort_local(run, stop.error, stop.cause)
        else:
            run.lost = True
            if run.task is not None:
                run.task.cancel()

    def _abort_local(self, run: _Run, error: str | None, cause: str | None) -> None:
        run.abort = (error, cause)
        if run.task is not None:
            run.task.cancel()

    async def stop_execution(
        self, arn: str, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        """StopExecution: ``{"stopDate"}``. The execution ends ABORTED
        (with an ExecutionAborted event): at once when it runs here or no
        runner runs it, at the owner's next step when another runner does."""
        now = self.clock.time()
        run = self.runs.get(arn)
        if run is not None:
            self._abort_local(run, error, cause)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(run.done)
            return {"stopDate": now}
        record = await self._record(arn)
        if record.status != RUNNING:  # ended already: nothing to stop
            return {"stopDate": record.stopped if record.stopped is not None else now}
        store = self.store
        assert store is not None
        if await store.claim(arn, self.owner, now, self.lease()):
            # no live runner ran it: end it here
            details = {k: v for k, v in (("error", error), ("cause", cause)) if v is not None}
            last = record.last_event
            event = HistoryEvent(last + 1, 0, now, "ExecutionAborted", details)
            # its last checkpoint stays: a redrive starts at the state it names
            await store.finish(
                arn, self.owner, [event], ABORTED, None, error, cause, now, record.checkpoint
            )
        else:
            await store.request_abort(arn, error, cause)
        return {"stopDate": now}

    # -- redriving an execution (plugins.states.redrive) ------------------------------

    async def redrive_execution(self, arn: str, client_token: str | None = None) -> dict[str, Any]:
        """RedriveExecution: ``{"redriveDate"}``. The ended execution runs again here
        from the state under way when it ended; ``ExecutionNotRedrivable`` with AWS's
        reason when it cannot. A client token used for one of its last 10 redrives, in
        the last 15 minutes, answers that redrive again."""
        now = self.clock.time()
        if ":express:" in arn:  # AWS redrives STANDARD executions only
            raise ExecutionError(
                "InvalidArn", "Invalid Arn: 'Resource type not valid in this context: express'"
            )
        record = await self._record(arn)
        kept = [t for t in self.redrive_tokens.get(arn, []) if now - t[2] < TOKEN_SECONDS]
        for token, date, _ in kept:
            if client_token is not None and token == client_token:
                return {"redriveDate": date}
        reason = not_redrivable(record, now, record.last_event)
        if reason is not None:
            raise ExecutionError("ExecutionNotRedrivable", reason)
        machine = self.machines.get(record.machine)
        if machine is None or self.store is None:
            raise ExecutionError("ExecutionNotRedrivable", "State machine is in DELETING status")
        if record.revision != machine.revision:
            machine = await self._revision(machine, record.revision)
        count = record.redrive_count + 1
        event = HistoryEvent(
            record.last_event + 1, record.last_event, now, "ExecutionRedriven",
            {"redriveCount": count},
        )  # fmt: skip
        start_at = machine.program.program.start_at
        resume = resumed_at(record.checkpoint, start_at, orjson.loads(record.input), event.id)
        written = await self.store.redrive(
            arn, self.owner, self.lease(), count, event, resume.to_json()
        )
        if not written:  # another redrive (or runner) was first
            raise ExecutionError(
                "ExecutionNotRedrivable", "Execution is RUNNING and cannot be redriven"
            )
        execution = Execution(
            record.arn, record.name, machine.arn, machine.name, record.input, record.role_arn,
            record.started, count, now,
        )  # fmt: skip
        run = self._launch(execution, machine, resume)
        run.redriven = True
        if client_token is not None:
            self.redrive_tokens[arn] = [*kept, (client_token, now, now)][-KEPT_TOKENS:]
        return {"redriveDate": now}

    # -- reading -----------------------------------------------------------------------

    async def _record(self, arn: str) -> ExecutionRecord:
        kept = self.express.get(arn)
        if kept is not None:
            return kept[0]
        run = self.runs.get(arn)
        if run is not None and not isinstance(run.log, DurableLog):
            ex = run.execution
            return ExecutionRecord(
                ex.arn, run.machine.name, ex.name, RUNNING, ex.input_text, None, None, None,
                ex.start_time, None, 0, run.machine.revision, ex.role_arn, None, None, 0,
            )  # fmt: skip
        record = None if self.store is None else await self.store.execution(arn)
        if record is None:
            raise ExecutionError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
        return record

    async def describe_execution(self, arn: str) -> dict[str, Any]:
        """DescribeExecution (dates as epoch seconds)."""
        record = await self._record(arn)
        return record.describe(machine_arn(record.machine))

    async def list_executions(
        self, machine_name: str, status: str | None = None
    ) -> list[dict[str, Any]]:
        """ListExecutions' items, newest first."""
        name = name_of_arn(machine_name)
        records: list[ExecutionRecord] = []
        if self.store is not None:
            records = await self.store.executions(name, status)
        records += [r for r, _ in self.express.values() if r.machine == name]
        out: list[dict[str, Any]] = []
        for record in sorted(records, key=lambda r: r.started, reverse=True):
            if status is not None and record.status != status:
                continue
            item: dict[str, Any] = {
                "executionArn": record.arn,
                "stateMachineArn": machine_arn(record.machine),
                "name": record.name,
                "status": record.status,
                "startDate": record.started,
            }
            if record.stopped is not None:
                item["stopDate"] = record.stopped
            item["redriveCount"] = record.redrive_count
            out.append(item)
        redriven = [item["executionArn"] for item in out if item["redriveCount"]]
        if redriven and self.store is not None:
            dates = await self.store.redrive_dates(redriven)
            for item in out:
                if item["executionArn"] in dates:
                    item["redriveDate"] = dates[item["executionArn"]]
        return out

    async def get_execution_history(self, arn: str) -> list[dict[str, Any]]:
        """GetExecutionHistory's events (timestamps as epoch seconds): what
        is durable so far for a STANDARD execution (up to its last
        checkpoint), everything for an EXPRESS one."""
        kept = self.express.get(arn)
        if kept is not None:
            return [event.to_aws() for event in kept[1]]
        run = self.runs.get(arn)
        if run is not None and isinstance(run.log, MemoryLog):
            return [event.to_aws() for event in run.log.events]
        await self._record(arn)
        assert self.store is not None
        return [event.to_aws() for event in await self.store.history(arn)]

    async def wait_for(self, arn: str) -> ExecutionRecord:
        """The record of an execution once it has ended (a ``.sync`` parent)."""
        while True:
            run = self.runs.get(arn)
            if run is not None:
                try:
                    return await asyncio.shield(run.done)
                except asyncio.CancelledError:
                    if not run.done.cancelled():
                        raise  # this waiter is cancelled
                    # the run ended here without an end (the runner stops): look in the store
            record = await self._record(arn)
            if record.status != RUNNING:
                return record
            await sleep(self.clock, CHILD_POLL)

    # -- task tokens ---------------------------------------------------------------------

    async def add_token(self, token: str, execution: str, state: str) -> None:
        """Record a ``.waitForTaskToken`` attempt's token before its resource
        is called: whoever gets it may answer at once, through any runner."""
        if self.store is None:
            raise StatesError(
                "States.TaskFailed",
                ".waitForTaskToken is for STANDARD state machines (kept in the state database)",
            )
        run = self.runs.get(execution)
        if run is not None and isinstance(run.log, DurableLog):
            run.log.tokens = True
        await self.store.add_token(token, execution, state)

    async def submitted(self, execution: str, token: str) -> None:
        """A ``.waitForTaskToken`` call was answered: its TaskSubmitted event made durable."""
        run = self.runs.get(execution)
        if run is not None and isinstance(run.log, DurableLog):
            await run.log.submitted(token)

    async def await_token(
        self, token: str, beat: Callable[[], None]
    ) -> tuple[str | None, str | None, str | None]:
        """Wait for the answer to ``token``: SendTaskSuccess (output, None,
        None) or SendTaskFailure (None, error, cause); SendTaskHeartbeat
        calls ``beat``. An answer given before (or while this runner was
        stopped) is found in the state database."""
        store = self.store
        if store is None:
            raise StatesError("States.TaskFailed", f"task token {token} is not known")
        answer: asyncio.Future[tuple[str | None, str | None, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self.tokens[token] = _TokenWait(answer, beat, self.clock.time())
        try:
            found = await store.token(token)
            if found is None:  # a resumed attempt whose token was never recorded
                raise StatesError("States.TaskFailed", f"task token {token} is not known")
            if found.status == ANSWERED:
                result = (found.output, found.error, found.cause)
            else:
                result = await answer
        except asyncio.CancelledError:
            # the runner stops, or the attempt timed out: the token stays
            # recorded (a resumed attempt waits on it) until its execution ends
            self.tokens.pop(token, None)
            raise
        except BaseException:
            self.tokens.pop(token, None)
            raise
        self.tokens.pop(token, None)
        with contextlib.suppress(Exception):
            await store.drop_token(token)
        return result

    async def _poll_tokens(self) -> None:
        if self.store is None:
            return
        for found in await self.store.tokens(list(self.tokens)):
            wait = self.tokens.get(found.token)
            if wait is None:
                continue
            if found.status == ANSWERED and not wait.answer.done():
                wait.answer.set_result((found.output, found.error, found.cause))
            elif found.beat > wait.last_beat:
                wait.last_beat = found.beat
                wait.beat()

    async def _answer(
        self, token: str, output: str | None, error: str | None, cause: str | None
    ) -> None:
        _checked_token(token)
        wait = self.tokens.get(token)
        if self.store is None or not await self.store.answer_token(token, output, error, cause):
            raise _token_gone(token)
        if wait is not None and not wait.answer.done():
            wait.answer.set_result((output, error, cause))

    async def send_task_success(self, token: str, output: str) -> dict[str, Any]:
        """SendTaskSuccess: the waiting task succeeds with ``output`` (JSON text)."""
        try:
            orjson.loads(output)
        except (orjson.JSONDecodeError, TypeError):
            raise ExecutionError(
                "InvalidOutput", "Invalid Output: the output is not JSON"
            ) from None
        await self._answer(token, output, None, None)
        return {}

    async def send_task_failure(
        self, token: str, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        """SendTaskFailure: the waiting task fails with ``error`` and ``cause``."""
        await self._answer(token, None, error or "", cause)
        return {}

    async def send_task_heartbeat(self, token: str) -> dict[str, Any]:
        """SendTaskHeartbeat: the waiting task's HeartbeatSeconds start again."""
        _checked_token(token)
        wait = self.tokens.get(token)
        if self.store is None or not await self.store.beat_token(token):
            raise _token_gone(token)
        if wait is not None:
            wait.last_beat = self.clock.time()
            wait.beat()
        return {}


def _token_gone(token: str) -> ExecutionError:
    return ExecutionError("TaskTimedOut", f"Task Timed Out: '{token}'")


def _checked_token(token: Any) -> None:
    if not isinstance(token, str) or not 1 <= len(token) <= 2048:
        raise ExecutionError("InvalidToken", "Invalid Token: a task token is 1 to 2048 characters")


def valid_name(name: str) -> bool:
    """Whether ``name`` may name an execution or a state machine (1 to 80
    characters, none of AWS's refused ones)."""
    return _NAME.match(name) is not None


def _checked_name(name: str | None) -> str:
    if name is None:
        return str(uuid.uuid4())
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExecutionError("InvalidName", f"Invalid Name: '{name}'")
    return name


def _checked_input(input_text: str | None) -> str:
    if input_text is None:
        return "{}"
    if len(input_text.encode("utf-8", "surrogatepass")) > PAYLOAD_LIMIT:
        raise ExecutionError(
            "InvalidExecutionInput", "Invalid Execution Input: larger than 262144 bytes"
        )
    try:
        orjson.loads(input_text)
    except orjson.JSONDecodeError:
        raise ExecutionError(
            "InvalidExecutionInput", f"Invalid State Machine Execution Input: '{_why(input_text)}'"
        ) from None
    return input_text


_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")
_OBJECT_KEY = re.compile(r"\s*\{\s*([^\s\"}])")


def _why(text: str) -> str:
    """Why an input is not JSON, worded as Step Functions' parser words the
    cases AWS recorded (a bare word, an object key without double quotes,
    nothing at all); the text itself otherwise."""
    if not text.strip():
        return "Invalid execution input."
    word = _TOKEN.match(text)
    if word and word.group(1) not in ("true", "false", "null"):
        return (
            f"Unrecognized token '{word.group(1)}': was expecting (JSON String, Number, Array,"
            " Object or token 'null', 'true' or 'false')"
        )
    key = _OBJECT_KEY.match(text)
    if key:
        char = key.group(1)
        return (
            f"Unexpected character ('{char}' (code {ord(char)})): was expecting double-quote"
            " to start field name"
        )
    return text


def outcome_json(record: ExecutionRecord) -> Mapping[str, Any]:
    """An ended execution as a ``.sync`` parent's result (DescribeExecution's fields)."""
    return record.describe(machine_arn(record.machine))
