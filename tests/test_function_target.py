"""The built-in function target, with real callables in tests/functions.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pipelines.errors import ConfigError, DeliveryError
from pipelines.pluginmanager import target_types
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext

from . import functions

CONTEXT = DeliveryContext(rule_name="rule-1", target_id="t1", event={"id": "e"})


def make(**config: Any) -> Any:
    return target_types()["function"].create("t1", config)


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
        ("tests.nowhere:f", "cannot import 'tests.nowhere'"),
        ("tests.functions:missing", "has no attribute 'missing'"),
        ("tests.functions:not_callable", "is not callable"),
    ],
)
async def test_unresolvable_functions_fail_at_start(reference: str, message: str) -> None:
    target = make(function=reference)
    with pytest.raises(ConfigError, match=message):
        await target.start(Runtime())
