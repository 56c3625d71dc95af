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

An exception from the callable is the retryable error ``FunctionError``; a
``DeliveryError`` it raises is passed on as it is, so a function can declare
a payload it will never accept (``retryable=False``).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.errors import ConfigError, DeliveryError
from pipelines.hookspecs import hookimpl
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    check_keys,
    number_setting,
)

SETTINGS = {"function", "timeout", "max_concurrency"}


def resolve(where: str, reference: str) -> Callable[..., Any]:
    """Import ``module:attribute`` (attribute may be dotted) and check it is callable."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(where, f"{reference!r} is not of the form 'package.module:function'")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(where, f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(where, f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(found):
        raise ConfigError(where, f"{reference!r} is not callable")
    return found  # type: ignore[no-any-return]


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


class FunctionTarget(Target):
    def __init__(self, target_id: str, reference: str, timeout: float, concurrency: int) -> None:
        self.where = f"target {target_id}"
        self.reference = reference
        self.timeout = timeout
        self.concurrency = concurrency
        self.invocations = 0
        self.throttles = 0
        self._function: Callable[..., Any] | None = None
        self._with_context = False
        self._is_async = False
        self._slots = asyncio.Semaphore(concurrency)
        self._threads: ThreadPoolExecutor | None = None

    async def start(self, services: TargetServices) -> None:
        function = resolve(f"{self.where}.function", self.reference)
        self._function = function
        self._with_context = _takes_context(function)
        self._is_async = inspect.iscoroutinefunction(function)
        if not self._is_async:
            self._threads = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix=f"pipelines-{self.where}"
            )

    async def stop(self) -> None:
        if self._threads is not None:
            # Do not wait for timed-out calls still running: their results are discarded.
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        function = self._function
        if function is None:
            raise DeliveryError("NotStarted", f"{self.where} is not started", retryable=True)
        if self._slots.locked():
            self.throttles += 1
        async with self._slots:
            self.invocations += 1
            args = (payload, context) if self._with_context else (payload,)
            try:
                # asyncio.timeout, unlike wait_for, needs no extra task per call.
                async with asyncio.timeout(self.timeout):
                    if self._is_async:
                        return await function(*args)
                    loop = asyncio.get_running_loop()
                    return await loop.run_in_executor(self._threads, function, *args)
            except TimeoutError:
                raise DeliveryError(
                    "Timeout",
                    f"{self.reference} did not return within {self.timeout:g} s",
                    retryable=True,
                ) from None
            except DeliveryError:
                raise
            except Exception as exc:
                raise DeliveryError(
                    "FunctionError", f"{type(exc).__name__}: {exc}", retryable=True
                ) from exc


class FunctionTargetType(TargetType):
    name = "function"
    description = "Invoke a Python callable (module:function), sync or async, Lambda-style"

    def create(self, target_id: str, config: Mapping[str, Any]) -> FunctionTarget:
        where = f"target {target_id}"
        check_keys(where, config, SETTINGS)
        reference = config.get("function")
        if not isinstance(reference, str):
            raise ConfigError(f"{where}.function", "is required: 'package.module:function'")
        if ":" not in reference:
            raise ConfigError(
                f"{where}.function", f"{reference!r} is not of the form 'package.module:function'"
            )
        timeout = number_setting(where, config, "timeout", 3, 1, 900)
        concurrency = number_setting(where, config, "max_concurrency", 10, 1, 1000, integer=True)
        return FunctionTarget(target_id, reference, timeout, int(concurrency))


@hookimpl
def register_targets(register: Callable[[TargetType], None]) -> None:
    register(FunctionTargetType())
