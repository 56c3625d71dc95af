"""The built-in function target, with real callables in tests/functions.py."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import ConfigError, DeliveryError
from pipelines.pluginmanager import target_types
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext

from . import functions
from .recorder import plugin_manager

CONTEXT = DeliveryContext(rule_name="rule-1", target_id="t1", event={"id": "e"})


def make(**config: Any) -> Any:
    return target_types()["function"].create("t1", config)


def on_path(monkeypatch: pytest.MonkeyPatch, directory: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path: source) under ``directory``, put it on
    the import path for the test."""
    for name, source in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(source)
    monkeypatch.syspath_prepend(str(directory))


async def started(**config: Any) -> Any:
    target = make(**config)
    await target.start(Runtime())
    return target


async def test_sync_function_runs_in_a_worker_thread() -> None:
    target = await started(function="tests.functions:echo")
    try:
        result = await target.deliver({"n": 1}, CONTEXT)
    finally:
        await target.stop()
    assert result["echo"] == {"n": 1}
    assert result["thread"] != threading.current_thread().name
    assert target.invocations == 1


async def test_lambda_style_handler_gets_the_context() -> None:
    target = await started(function="tests.functions:handler")
    assert await target.deliver("x", CONTEXT) == {"rule": "rule-1", "target": "t1", "payload": "x"}
    await target.stop()


async def test_async_function() -> None:
    target = await started(function="tests.functions:async_echo")
    assert await target.deliver(5, CONTEXT) == {"async": 5}
    await target.stop()


@pytest.mark.parametrize("name", ["slow", "async_slow"])
async def test_timeout_is_a_retryable_error(name: str) -> None:
    target = await started(function=f"tests.functions:{name}", timeout=1)
    with pytest.raises(DeliveryError) as caught:
        await target.deliver(1.5, CONTEXT)
    await target.stop()
    assert (caught.value.code, caught.value.retryable) == ("Timeout", True)


async def test_exceptions_are_retryable_function_errors() -> None:
    target = await started(function="tests.functions:fails")
    with pytest.raises(DeliveryError) as caught:
        await target.deliver("p", CONTEXT)
    await target.stop()
    assert caught.value.code == "FunctionError" and caught.value.retryable
    assert "ValueError: cannot take 'p'" in caught.value.message


async def test_a_function_can_refuse_a_payload_for_good() -> None:
    target = await started(function="tests.functions:rejects")
    with pytest.raises(DeliveryError) as caught:
        await target.deliver("p", CONTEXT)
    await target.stop()
    assert (caught.value.code, caught.value.retryable) == ("BadPayload", False)


async def test_concurrency_is_capped_and_waiting_calls_count_as_throttles() -> None:
    functions.peak = 0
    target = await started(function="tests.functions:slow", max_concurrency=2, timeout=10)
    results = await asyncio.gather(*(target.deliver(0.2, CONTEXT) for _ in range(6)))
    await target.stop()
    assert results == [0.2] * 6
    assert functions.peak == 2
    assert target.throttles == 4
    assert target.invocations == 6


@pytest.mark.parametrize(
    ("config", "where", "message"),
    [
        ({}, "target t1.function", "is required"),
        ({"function": "nocolon"}, "target t1.function", "not of the form"),
        ({"function": "m:f", "timeout": 0}, "target t1.timeout", "between 1 and 900"),
        ({"function": "m:f", "max_concurrency": 2.5}, "target t1.max_concurrency", "an integer"),
        ({"function": "m:f", "timout": 5}, "target t1.timout", "did you mean 'timeout'?"),
    ],
)
def test_config_errors_name_the_setting(config: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make(**config)
    assert caught.value.where == where
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.functions:missing", "has no attribute 'missing'"),
        ("tests.functions:not_callable", "is not callable"),
    ],
)
async def test_unresolvable_functions_fail_at_start(reference: str, message: str) -> None:
    target = make(function=reference)
    with pytest.raises(ConfigError, match=message):
        await target.start(Runtime())


def test_a_missing_module_fails_at_creation_without_importing_anything() -> None:
    with pytest.raises(ConfigError, match=r"no module named 'tests\.nowhere'") as caught:
        make(function="tests.nowhere:f")
    assert caught.value.where == "target t1.function"


def test_a_function_its_module_does_not_define_fails_at_creation_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Running this module would leave a file behind: creation must only read it.
    ran = tmp_path / "ran"
    source = f"open({str(ran)!r}, 'w').close()\n\ndef ship(event):\n    return event\n"
    on_path(monkeypatch, tmp_path, {"handlersmod.py": source})
    with pytest.raises(ConfigError) as caught:
        make(function="handlersmod:shipp")
    assert caught.value.where == "target t1.function"
    assert str(caught.value).endswith("'handlersmod' has no attribute 'shipp'")
    with pytest.raises(ConfigError, match=r"has no attribute 'Missing\.method'"):
        make(function="handlersmod:Missing.method")
    assert make(function="handlersmod:ship").reference == "handlersmod:ship"
    assert not ran.exists()


async def test_a_packages_submodule_is_let_through_as_importing_it_binds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = "def helper():\n    pass\n\ndef handler(event):\n    return {'ok': event}\n"
    on_path(
        monkeypatch,
        tmp_path,
        {"shoppkg/__init__.py": "from .orders import helper\n", "shoppkg/orders.py": orders},
    )
    with pytest.raises(ConfigError, match=r"'shoppkg' has no attribute 'payments\.handler'"):
        make(function="shoppkg:payments.handler")  # no such submodule, nor name
    target = make(function="shoppkg:orders.handler")  # __init__ binds no 'orders' by name
    await target.start(Runtime())
    try:
        assert await target.deliver({"n": 1}, CONTEXT) == {"ok": {"n": 1}}
    finally:
        await target.stop()


def test_a_module_with_a_syntax_error_fails_at_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path(monkeypatch, tmp_path, {"typomod.py": "def handler(event):\n    return event +\n"})
    with pytest.raises(ConfigError) as caught:
        make(function="typomod:handler")
    assert caught.value.where == "target t1.function"
    assert "importing 'typomod' failed: SyntaxError: invalid syntax (typomod.py, line 2)" in str(
        caught.value
    )


async def test_a_module_that_binds_names_out_of_sight_is_left_to_its_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path(
        monkeypatch,
        tmp_path,
        {"dynamicmod.py": "globals()['handler'] = lambda event: {'seen': event}\n"},
    )
    target = make(function="dynamicmod:handler")  # cannot be told from its source
    await target.start(Runtime())
    try:
        assert await target.deliver({"n": 1}, CONTEXT) == {"seen": {"n": 1}}
    finally:
        await target.stop()


async def test_a_module_that_fails_to_import_is_one_line_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path(
        monkeypatch,
        tmp_path,
        {"brokenmod.py": "RATE = 1 / 0\n\ndef handler(event):\n    return event\n"},
    )
    target = make(function="brokenmod:handler")  # found, so creation passes
    with pytest.raises(ConfigError) as caught:
        await target.start(Runtime())
    assert caught.value.where == "target t1.function"
    assert "importing 'brokenmod' failed: ZeroDivisionError: division by zero" in str(caught.value)


# -- Lambda's asynchronous invocation, through a runtime --------------------------


async def async_runtime(function: str, **async_invoke: Any) -> tuple[Any, ManualClock]:
    clock = ManualClock()
    runtime = Runtime(clock=clock, plugins=plugin_manager(), seed=1)
    settings = {"on_success": "ok", "on_failure": "failed", **async_invoke}
    runtime.add_resource("fn", "function", {"function": function, "async_invoke": settings})
    runtime.add_resource("ok", "recorder", {})
    runtime.add_resource("failed", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets("r", [{"id": "t", "resource": "fn", "input_path": "$.detail"}])
    return runtime, clock


ENTRY = {"Source": "shop", "DetailType": "x", "Detail": '{"n": 1}'}


async def test_async_success_sends_the_invocation_record_to_on_success() -> None:
    runtime, clock = await async_runtime("tests.functions:async_echo")
    async with runtime:
        await runtime.put_events([ENTRY])
        await clock.advance(1)
    [got] = runtime.resource("ok").received
    record = got.payload
    assert record["version"] == "1.0"
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestContext"]["functionArn"] == (
        "arn:aws:lambda:us-east-1:000000000000:function:fn:$LATEST"
    )
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"async": {"n": 1}}
    assert record["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert runtime.resource("failed").received == []


async def test_async_failures_retry_after_one_then_two_minutes() -> None:
    runtime, clock = await async_runtime("tests.functions:async_fails")
    async with runtime:
        start = clock.time()
        await runtime.put_events([ENTRY])
        await clock.advance(59)
        assert runtime.resource("failed").received == []
        await clock.advance(600)
    [got] = runtime.resource("failed").received
    assert got.time - start == 180  # attempts at 0, 60 and 180 s
    record = got.payload
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "ValueError: cannot take {'n': 1}"
    # The bus delivered once: the function accepted the event, Lambda-style.
    assert runtime.counters.value("Invocations", EventBusName="default", RuleName="r") == 1


async def test_async_retry_count_is_configurable() -> None:
    runtime, clock = await async_runtime("tests.functions:async_fails", maximum_retry_attempts=0)
    async with runtime:
        await runtime.put_events([ENTRY])
        await clock.advance(1)
    [got] = runtime.resource("failed").received
    assert got.payload["requestContext"]["approximateInvokeCount"] == 1


async def test_async_event_age_ends_retrying() -> None:
    runtime, clock = await async_runtime("tests.functions:async_fails", maximum_event_age=100)
    async with runtime:
        await runtime.put_events([ENTRY])
        await clock.advance(600)
    [got] = runtime.resource("failed").received
    # The retry at 60 s runs; the next (at 180 s) would be past 100 s.
    assert got.payload["requestContext"]["condition"] == "EventAgeExceeded"
    assert got.payload["requestContext"]["approximateInvokeCount"] == 2


async def test_a_full_async_queue_is_a_retryable_throttle_for_the_rule() -> None:
    runtime, clock = await async_runtime(
        "tests.functions:async_fails", queue_size=1, maximum_retry_attempts=1
    )
    async with runtime:
        await runtime.put_events([ENTRY, ENTRY])
        await clock.advance(1)  # one invocation waits for its retry: the queue is full
        assert runtime.resource("fn").throttles >= 1
        await clock.advance(3600)
    failed = runtime.resource("failed").received
    assert len(failed) == 2  # the throttled event was retried by the bus, then accepted
    assert (
        runtime.counters.value("RetryInvocationAttempts", EventBusName="default", RuleName="r") >= 1
    )


def test_async_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        make(function="m:f", async_invoke={"maximum_retry_attempts": 3})
    assert caught.value.where == "target t1.async_invoke.maximum_retry_attempts"
    with pytest.raises(ConfigError, match="between 60 and 21600"):
        make(function="m:f", async_invoke={"maximum_event_age": 30})
    with pytest.raises(ConfigError, match="did you mean 'on_failure'"):
        make(function="m:f", async_invoke={"on_falure": "x"})


async def test_unknown_destinations_fail_at_start() -> None:
    runtime = Runtime(plugins=plugin_manager())
    runtime.add_resource(
        "fn",
        "function",
        {"function": "tests.functions:echo", "async_invoke": {"on_failure": "nope"}},
    )
    with pytest.raises(Exception, match="no resource named 'nope'"):
        await runtime.start()


async def test_shutdown_with_calls_waiting_for_a_slot_returns() -> None:
    runtime = Runtime(plugins=plugin_manager())
    runtime.add_resource(
        "fn", "function", {"function": "tests.functions:async_slow", "max_concurrency": 1}
    )
    bus = runtime.bus()
    for n in range(4):
        bus.put_rule(f"r{n}", pattern={"source": ["shop"]})
        await bus.put_targets(f"r{n}", [{"id": "t", "resource": "fn", "input": "5"}])
    await runtime.start()
    await runtime.put_events([ENTRY])
    await asyncio.sleep(0.05)
    assert runtime.resource("fn").throttles >= 1
    await asyncio.wait_for(runtime.stop(timeout=0.05), 5)


async def test_a_function_that_swallows_the_timeout_leaves_the_task_usable() -> None:
    target = await started(function="tests.functions:swallows_cancel", timeout=1)
    result = await target.deliver(None, CONTEXT)
    assert result == "swallowed"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # no cancellation left pending for a later await
    await target.stop()


async def test_a_timed_out_thread_keeps_its_slot_until_it_returns() -> None:
    functions.peak = 0
    target = await started(function="tests.functions:slow", max_concurrency=1, timeout=1)
    with pytest.raises(DeliveryError, match="Timeout"):
        await target.deliver(1.5, CONTEXT)
    # The next call waits for the stuck thread (0.5 s more), then runs in time.
    assert await target.deliver(0.01, CONTEXT) == 0.01
    assert functions.peak == 1
    await target.stop()


async def test_waiters_cancelled_while_the_slot_is_released_end_cleanly() -> None:
    # Shutdown cancels the slot holder and its waiters in the same loop turn:
    # release() then meets cancelled waiters, which must still end with
    # CancelledError (not ValueError, which would swallow the shutdown).
    from plugins.function import _Slots

    target = make(function="tests.functions:echo", max_concurrency=1)
    slots = _Slots(1)
    await slots.acquire(target)
    waiters = [asyncio.ensure_future(slots.acquire(target)) for _ in range(3)]
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    slots.release()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(r) for r in results] == [asyncio.CancelledError] * 3
    assert (slots.free, len(slots.waiters)) == (1, 0)
