"""The ``function`` target: invoke a Python callable, Lambda-style.

Settings:

- ``function`` (required): ``"package.module:callable"``. The callable takes
  ``(payload)`` or, like a Lambda handler, ``(payload, context)`` where
  context is the ``DeliveryContext``. It may be ``async``; a plain function
  runs in this target's own worker threads so it never blocks the event loop.
- ``timeout`` (seconds, 1 to 900, default 3 as Lambda's): a call that takes
  longer fails with the retryable error ``Timeout``. A thread cannot be
  killed, so a timed-out plain function finishes in the background; its
  result is discarded.
- ``max_concurrency`` (1 to 1000, default 10): calls beyond it wait for a
  free slot and are counted in ``throttles``.

- ``async_invoke`` (optional): Lambda's asynchronous invocation. The target
  then accepts each event into the function's own queue (as Lambda answers
  202) and runs it from there: a failed call is retried after one minute,
  then two (``maximum_retry_attempts`` 0 to 2, default 2), for at most
  ``maximum_event_age`` seconds (60 to 21,600, default 21,600), and the
  outcome goes as Lambda's invocation record to ``on_success`` /
  ``on_failure`` (any target resource). ``queue_size`` (default 10,000)
  bounds the queue: a full queue is a retryable ``TooManyRequestsException``,
  so the rule's retry policy applies on top. The queue is in memory: what is
  still in it at shutdown after the drain limit is logged as lost.

An exception from the callable is the retryable error ``FunctionError``; a
``DeliveryError`` it raises is passed on as it is, so a function can declare
a payload it will never accept (``retryable=False``).
"""

from __future__ import annotations

import ast
import asyncio
import collections
import concurrent.futures
import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import pkgutil
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.clock import Cancellable
from pipelines.errors import ConfigError, DeliveryError, Problems, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, format_time_ms
from pipelines.hookspecs import hookimpl
from pipelines.settings import Number, Section, Settings, Shape
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    started,
)
from plugins.modulenames import top_level_names

_RESOURCE_NAME = Shape({"type": "string", "minLength": 1}, "a resource name")
#: Lambda's asynchronous invocation (PutFunctionEventInvokeConfig's limits).
ASYNC_TABLE = Settings(
    {
        "maximum_retry_attempts": Number(2, 0, 2, integer=True),
        "maximum_event_age": Number(21_600, 60, 21_600, integer=True),
        "on_success": _RESOURCE_NAME,
        "on_failure": _RESOURCE_NAME,
        "queue_size": Number(10_000, 1, 1_000_000, integer=True),
    }
)
SETTINGS_TABLE = Settings(
    {
        "function": Shape(
            {"type": "string", "pattern": "^[^:]+:[^:]+$"},
            "package.module:callable, taking (payload) or (payload, context)",
        ),
        "timeout": Number(3, 1, 900, description="seconds a call may take"),
        "max_concurrency": Number(10, 1, 1000, integer=True),
        "async_invoke": Section(
            ASYNC_TABLE, "Lambda's asynchronous invocation: own queue, retries, destinations"
        ),
    },
    required=("function",),
)
SETTINGS = SETTINGS_TABLE.names
ASYNC_SETTINGS = ASYNC_TABLE.names
#: For ``pipelines schema``: the settings above, as JSON Schema.
SETTINGS_SCHEMA = SETTINGS_TABLE.properties()
log = logging.getLogger("plugins.function")


def resolve(where: Where, reference: str) -> Callable[..., Any]:
    """Import ``module:attribute`` (attribute may be dotted) and check it is callable."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(where, f"{reference!r} is not of the form 'package.module:function'")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(where, f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself is broken: say how, not a traceback
        raise _import_failed(where, module_name, exc) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise _no_attribute(where, module_name, attribute) from None
    if not callable(found):
        raise ConfigError(where, f"{reference!r} is not callable")
    return found  # type: ignore[no-any-return]


def check_findable(where: Where, reference: str) -> None:
    """Fail at validation, with the config's location, when the module cannot
    be found or its source does not define the function.

    Only the module's spec is looked up and its source read, so validating a
    config does not run user code (a dotted name imports its parent packages,
    as Python must).
    """
    module_name = reference.partition(":")[0]
    if module_name in sys.modules:  # imported already (``__main__`` has no spec to find)
        return
    try:
        found = importlib.util.find_spec(module_name)
    except Exception as exc:  # a parent package that fails to import
        raise ConfigError(
            where, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    if found is None:
        raise ConfigError(
            where,
            f"no module named {module_name!r}: put it next to the config file,"
            " or install the package that provides it",
        )
    _check_defined(where, reference, found)


def _check_defined(where: Where, reference: str, spec: importlib.machinery.ModuleSpec) -> None:
    """Fail when the module's source, read and not run, does not define the
    function's first name (``handler`` of ``handlers:handler``, ``Class`` of
    ``handlers:Class.method``), with the message importing it would give.
    Only a name certainly missing is refused: a module not loaded from a
    plain source file, one that may define names its syntax does not show,
    or a package with a submodule of that name (importing it sets it) is let
    through."""
    module_name, _, attribute = reference.partition(":")
    first = attribute.partition(".")[0]
    if not isinstance(spec.loader, importlib.machinery.SourceFileLoader) or spec.origin is None:
        return  # a namespace package, an extension module, an import hook's: no source to read
    if spec.submodule_search_locations is not None and any(
        found.name == first for found in pkgutil.iter_modules(spec.submodule_search_locations)
    ):
        return
    try:
        source = Path(spec.origin).read_bytes()
    except OSError:
        return  # importing it will say what is wrong
    try:
        tree = ast.parse(source, filename=spec.origin)
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the source
        raise _import_failed(where, module_name, exc) from None
    names = top_level_names(tree, module_name)
    if names is not None and first not in names:
        raise _no_attribute(where, module_name, attribute)


# Validation (``_check_defined``) and start (``resolve``) say the same of the
# same module: a config's problem reads alike from `validate` and `run`.


def _import_failed(where: Where, module_name: str, exc: Exception) -> ConfigError:
    return ConfigError(where, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")


def _no_attribute(where: Where, module_name: str, attribute: str) -> ConfigError:
    return ConfigError(where, f"{module_name!r} has no attribute {attribute!r}")


def _takes_context(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """From a worker thread: run ``callback`` on the loop, unless the loop is gone."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


class _Slots:
    """The concurrency limit: a semaphore whose uncontended path does not await."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, target: FunctionTarget) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        target.throttles += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # release() hands its slot straight to us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # we were handed a slot we will not use
            elif waiter in self.waiters:  # release() may have dropped it already
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _Watchdog:
    """Times out calls with one loop timer per target instead of one per call.

    ``asyncio.timeout`` arms and cancels a timer for every call, which costs
    more than calling a no-op function. Here a call records its deadline; the
    timer, armed for the earliest deadline, cancels the tasks whose calls
    overran. As in ``asyncio.timeout``, a call's cancellation is a timeout only
    if ours is the only one pending (the task's ``cancelling()`` count is back
    to what it was when the call began), so a shutdown is never mistaken for
    a timeout.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.calls: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self.fired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None

    def enter(self) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        self.calls[task] = (loop.time() + self.timeout, task.cancelling())
        if self.timer is None:
            self.timer = loop.call_at(loop.time() + self.timeout, self._check, loop)
        return task

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Called on CancelledError: True if it is our timeout and nothing else."""
        if task not in self.fired:
            return False
        self.fired.discard(task)
        _, baseline = self.calls.get(task, (0.0, 0))
        return task.uncancel() <= baseline

    def exit(self, task: asyncio.Task[Any]) -> None:
        self.calls.pop(task, None)
        if task in self.fired:
            # We cancelled it but the function swallowed the cancellation and
            # returned: withdraw our request so it cannot hit a later await.
            self.fired.discard(task)
            task.uncancel()

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        now = loop.time()
        pending = []
        for task, (deadline, _) in self.calls.items():
            if task in self.fired:
                continue
            if deadline <= now:
                self.fired.add(task)
                task.cancel()
            else:
                pending.append(deadline)
        if pending:
            self.timer = loop.call_at(min(pending), self._check, loop)


@dataclass(frozen=True, slots=True)
class AsyncInvoke:
    """Lambda's asynchronous-invocation settings (PutFunctionEventInvokeConfig)."""

    maximum_retry_attempts: int = 2
    maximum_event_age: int = 21_600
    on_success: str | None = None
    on_failure: str | None = None
    queue_size: int = 10_000

    @classmethod
    def from_config(cls, where: Where, config: Any) -> AsyncInvoke:
        if not isinstance(config, Mapping):
            raise ConfigError(where, "must be a mapping of Lambda's async-invoke settings")
        problems = Problems()
        with problems:
            ASYNC_TABLE.check_keys(where, config)
        numbers: dict[str, int] = {}
        for key in ("maximum_retry_attempts", "maximum_event_age", "queue_size"):
            with problems:
                numbers[key] = int(ASYNC_TABLE.number(where, config, key))
        destinations: dict[str, str | None] = {}
        for key in ("on_success", "on_failure"):
            value = config.get(key)
            with problems:
                if value is not None and (not isinstance(value, str) or not value):
                    raise ConfigError(where / key, "must name a target resource")
                destinations[key] = value
        problems.raise_any()
        return cls(
            numbers["maximum_retry_attempts"],
            numbers["maximum_event_age"],
            destinations["on_success"],
            destinations["on_failure"],
            numbers["queue_size"],
        )


@dataclass(slots=True, eq=False)
class _Invocation:
    payload: Any
    context: DeliveryContext
    accepted: float
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0


class FunctionTarget(Target):
    def __init__(
        self,
        target_id: str,
        reference: str,
        timeout: float,
        concurrency: int,
        async_invoke: AsyncInvoke | None = None,
    ) -> None:
        self.name = target_id
        self.where = f"target {target_id}"
        self.reference = reference
        self.timeout = timeout
        self.concurrency = concurrency
        self.async_invoke = async_invoke
        self.invocations = 0
        self.throttles = 0
        self.destination_failures = 0
        self._function: Callable[..., Any] | None = None
        self._with_context = False
        self._is_async = False
        self._slots = _Slots(concurrency)
        self._watchdog = _Watchdog(timeout)
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._services: TargetServices | None = None
        # Lambda's asynchronous event queue: accepted invocations, and those
        # waiting (on a clock timer) for their retry.
        self._queue: asyncio.Queue[_Invocation] = asyncio.Queue()
        self._busy = 0
        self._retrying: dict[_Invocation, Cancellable] = {}
        self._workers: list[asyncio.Task[None]] = []

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:function:{self.name}:$LATEST"

    async def start(self, services: TargetServices) -> None:
        function = resolve(Where(self.where) / "function", self.reference)
        self._function = function
        self._with_context = _takes_context(function)
        self._is_async = inspect.iscoroutinefunction(function)
        self._services = services
        if not self._is_async:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix=f"pipelines-{self.where}"
            )
        if self.async_invoke is not None:
            for key in ("on_success", "on_failure"):
                name = getattr(self.async_invoke, key)
                if name is not None:
                    services.resource(name)  # fail at start, not at the first record
            self._workers = [services.spawn(self._async_worker()) for _ in range(self.concurrency)]

    async def drain(self, timeout: float) -> None:
        """Wait for queued async invocations; those still waiting for a retry are reported."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (not self._queue.empty() or self._busy) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        lost = self._queue.qsize() + self._busy + len(self._retrying)
        if lost:
            log.error(
                "%s: %d asynchronous invocations were still queued or waiting for a retry at "
                "shutdown and are lost (Lambda-style async queues are kept in memory)",
                self.where,
                lost,
            )

    async def stop(self) -> None:
        # The workers are the runtime's tasks, but this target's: a target
        # replaced by a reload stops while the runtime goes on.
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers)
        self._workers = []
        for timer in self._retrying.values():
            timer.cancel()
        self._retrying.clear()
        if self._threads is not None:
            # Do not wait for timed-out calls still running: their results are discarded.
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        invoke = self.async_invoke
        if invoke is None:
            return []
        named = [("on_success", invoke.on_success), ("on_failure", invoke.on_failure)]
        return [(("async_invoke", key), name) for key, name in named if name is not None]

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        if self.async_invoke is None:
            return await self.invoke(payload, context)
        # Asynchronous invocation: accept into the function's own queue, as
        # Lambda answers 202; a full queue is a retryable throttle for the rule.
        waiting = self._queue.qsize() + self._busy + len(self._retrying)
        if waiting >= self.async_invoke.queue_size:
            self.throttles += 1
            raise DeliveryError(
                "TooManyRequestsException",
                f"{self.where}: the asynchronous queue holds {waiting} invocations",
                retryable=True,
            )
        services = started(self._services, self.where)
        self._queue.put_nowait(_Invocation(payload, context, services.clock.time()))
        return None

    async def invoke(self, payload: Any, context: DeliveryContext) -> Any:
        """Call the function once (synchronous invocation), within timeout and concurrency."""
        function = started(self._function, self.where)
        await self._slots.acquire(self)
        self.invocations += 1
        args = (payload, context) if self._with_context else (payload,)
        task = self._watchdog.enter()
        thread: concurrent.futures.Future[Any] | None = None
        try:
            if self._is_async:
                return await function(*args)
            assert self._threads is not None
            thread = self._threads.submit(function, *args)
            return await asyncio.wrap_future(thread)
        except asyncio.CancelledError:
            if self._watchdog.expired(task):
                raise DeliveryError(
                    "Timeout",
                    f"{self.reference} did not return within {self.timeout:g} s",
                    retryable=True,
                ) from None
            raise
        except DeliveryError:
            raise
        except Exception as exc:
            raise DeliveryError(
                "FunctionError", f"{type(exc).__name__}: {exc}", retryable=True
            ) from exc
        finally:
            self._watchdog.exit(task)
            if thread is not None and not thread.done():
                # A thread cannot be stopped: its slot stays taken until the
                # call really returns, so the concurrency cap stays true.
                loop = asyncio.get_running_loop()
                thread.add_done_callback(lambda _: _call_soon(loop, self._slots.release))
            else:
                self._slots.release()

    # -- asynchronous invocation (Lambda's event queue) ----------------------

    async def _async_worker(self) -> None:
        while True:
            invocation = await self._queue.get()
            self._busy += 1
            try:
                await self._run(invocation)
            finally:
                self._busy -= 1

    async def _run(self, invocation: _Invocation) -> None:
        settings = self.async_invoke
        services = self._services
        assert settings is not None and services is not None
        clock = services.clock
        if clock.time() - invocation.accepted > settings.maximum_event_age:
            await self._record(invocation, "EventAgeExceeded", None, None)
            return
        invocation.attempts += 1
        try:
            result = await self.invoke(invocation.payload, invocation.context)
        except DeliveryError as exc:
            error = exc
        else:
            await self._record(invocation, "Success", result, None)
            return
        if not error.retryable or invocation.attempts > settings.maximum_retry_attempts:
            await self._record(invocation, "RetriesExhausted", None, error)
            return
        # Lambda waits one minute before the second attempt, two before the third.
        delay = 60.0 * invocation.attempts
        if clock.time() + delay - invocation.accepted > settings.maximum_event_age:
            await self._record(invocation, "EventAgeExceeded", None, error)
            return

        def requeue() -> None:
            self._retrying.pop(invocation, None)
            self._queue.put_nowait(invocation)

        self._retrying[invocation] = clock.call_later(delay, requeue)

    async def _record(
        self, invocation: _Invocation, condition: str, result: Any, error: DeliveryError | None
    ) -> None:
        """Send Lambda's invocation record to the on-success or on-failure destination."""
        settings = self.async_invoke
        services = self._services
        assert settings is not None and services is not None
        destination = settings.on_success if condition == "Success" else settings.on_failure
        if destination is None:
            if error is not None or condition != "Success":
                log.error(
                    "%s: asynchronous invocation %s failed (%s) and has no on_failure "
                    "destination: %s",
                    self.where,
                    invocation.request_id,
                    condition,
                    error,
                )
            return
        record = invocation_record(self.arn, invocation, condition, result, error, services)
        context = DeliveryContext(
            invocation.context.rule_name,
            invocation.context.target_id,
            invocation.context.event,
            attributes={"condition": condition},
        )
        try:
            await services.resource(destination).deliver(record, context)
        except Exception as exc:
            self.destination_failures += 1
            log.error(
                "%s: destination %s failed for invocation %s (%s): %s",
                self.where,
                destination,
                invocation.request_id,
                condition,
                exc,
            )


def invocation_record(
    function_arn: str,
    invocation: _Invocation,
    condition: str,
    result: Any,
    error: DeliveryError | None,
    services: TargetServices,
) -> dict[str, Any]:
    """Lambda's invocation record, as destinations receive it."""
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if error is not None:
        response["functionError"] = "Unhandled"
        payload: Any = {"errorType": error.code, "errorMessage": error.message}
    else:
        payload = result
    return {
        "version": "1.0",
        "timestamp": format_time_ms(services.clock.time()),
        "requestContext": {
            "requestId": invocation.request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invocation.attempts,
        },
        "requestPayload": invocation.payload,
        "responseContext": response,
        "responsePayload": payload,
    }


class FunctionType(TargetType):
    arn_template = "arn:aws:lambda:{region}:{account}:function:{name}"
    name = "function"
    description = "Invoke a Python callable (module:function), sync or async, Lambda-style"
    settings = SETTINGS_TABLE

    def create(self, name: str, config: Mapping[str, Any]) -> FunctionTarget:
        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        reference = config.get("function")
        with problems:
            if not isinstance(reference, str):
                raise ConfigError(where / "function", "is required: 'package.module:function'")
            if ":" not in reference:
                raise ConfigError(
                    where / "function",
                    f"{reference!r} is not of the form 'package.module:function'",
                )
        with problems:
            timeout = SETTINGS_TABLE.number(where, config, "timeout")
        with problems:
            concurrency = SETTINGS_TABLE.number(where, config, "max_concurrency")
        declared = config.get("async_invoke")
        with problems:
            async_invoke = (
                None
                if declared is None
                else AsyncInvoke.from_config(where / "async_invoke", declared)
            )
        if isinstance(reference, str) and ":" in reference:
            with problems:  # last: the settings' own problems come first
                check_findable(where / "function", reference)
        problems.raise_any()
        return FunctionTarget(name, str(reference), timeout, int(concurrency), async_invoke)


@hookimpl
def register_targets(register: Callable[[TargetType], None]) -> None:
    register(FunctionType())
