"""The bus: PutEvents results, rules and targets, delivery, retries, dead letters,
backpressure, independence, restart with pending retries, and drain.

Time is a ManualClock: backoff and event age are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines import metrics as m
from pipelines.clock import ManualClock, settle
from pipelines.delivery import Backoff
from pipelines.errors import ConfigError, NotRunningError, PatternError, ResourceNotFoundError
from pipelines.limits import Limits
from pipelines.runtime import Runtime

from .recorder import Recorder, plugin_manager

ORDER = {"Source": "shop", "DetailType": "OrderPlaced", "Detail": '{"total": 120}'}
PLUGINS = plugin_manager()


def make_runtime(clock: ManualClock | None = None, **options: Any) -> Runtime:
    return Runtime(clock=clock or ManualClock(), plugins=PLUGINS, seed=7, **options)


async def routed(runtime: Runtime, targets: list[dict[str, Any]], pattern: Any = None) -> Runtime:
    bus = runtime.bus()
    bus.put_rule("orders", pattern=pattern or {"source": ["shop"]})
    await bus.put_targets("orders", targets)
    return runtime


async def dead_lettered(
    runtime: Runtime, name: str, settings: dict[str, Any], **retry_policy: int
) -> Runtime:
    """Route "orders" to the recorder ``name`` (with ``settings``) under a retry
    policy, with the recorder "dlq" as its dead-letter target."""
    runtime.add_resource(name, "recorder", settings)
    runtime.add_resource("dlq", "recorder", {})
    target = {"id": "t", "resource": name, "dead_letter": "dlq", "retry_policy": retry_policy}
    return await routed(runtime, [target])


def recorder(runtime: Runtime, name: str) -> Recorder:
    target = runtime.resource(name)
    assert isinstance(target, Recorder)
    return target


async def eventually(check: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait (real time, for thread hand-offs) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def runtime(clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = make_runtime(clock)
    yield runtime
    await runtime.stop(timeout=0.1)


# -- PutEvents -------------------------------------------------------------------


async def test_put_events_reports_each_entry_and_only_bad_ones_fail(runtime: Runtime) -> None:
    runtime.add_resource("sink", "recorder", {})
    await routed(runtime, [{"id": "t", "resource": "sink"}])
    async with runtime:
        result = await runtime.put_events(
            [ORDER, {"DetailType": "x", "Detail": "{}"}, ORDER, {**ORDER, "EventBusName": "nope"}]
        )
        await settle()
    assert result["FailedEntryCount"] == 2
    entries = result["Entries"]
    assert "EventId" in entries[0] and "EventId" in entries[2]
    assert entries[1]["ErrorCode"] == "InvalidArgument"
    assert "Source" in entries[1]["ErrorMessage"]
    assert entries[3] == {
        "ErrorCode": "ResourceNotFoundException",
        "ErrorMessage": "Event bus nope does not exist.",
    }
    got = [r.payload["id"] for r in recorder(runtime, "sink").received]
    assert got == [entries[0]["EventId"], entries[2]["EventId"]]


async def test_delivered_event_has_the_envelope(runtime: Runtime, clock: ManualClock) -> None:
    runtime.add_resource("sink", "recorder", {})
    await routed(runtime, [{"id": "t", "resource": "sink"}])
    async with runtime:
        await runtime.put_events([{**ORDER, "Resources": ["arn:x"]}])
        await settle()
    event = recorder(runtime, "sink").received[0].payload
    assert event["source"] == "shop"
    assert event["detail-type"] == "OrderPlaced"
    assert event["detail"] == {"total": 120}
    assert event["resources"] == ["arn:x"]
    assert event["version"] == "0"
    assert event["time"] == "2023-11-14T22:13:20Z"  # the ManualClock's start


async def test_put_events_needs_a_running_runtime(runtime: Runtime) -> None:
    with pytest.raises(NotRunningError, match="start it"):
        await runtime.put_events([ORDER])


async def test_named_buses_route_by_event_bus_name(runtime: Runtime) -> None:
    runtime.add_resource("a", "recorder", {})
    runtime.add_resource("b", "recorder", {})
    other = runtime.create_bus("billing")
    for bus, sink in ((runtime.bus(), "a"), (other, "b")):
        bus.put_rule("all", pattern={"source": ["shop"]})
        await bus.put_targets("all", [{"id": "t", "resource": sink}])
    async with runtime:
        await runtime.put_events([ORDER, {**ORDER, "EventBusName": "billing"}])
        await other.put_events([ORDER])
        await settle()
    assert len(recorder(runtime, "a").received) == 1
    assert len(recorder(runtime, "b").received) == 2


# -- rules and targets -----------------------------------------------------------


async def test_rule_lifecycle(runtime: Runtime) -> None:
    runtime.add_resource("sink", "recorder", {})
    bus = runtime.bus()
    arn = bus.put_rule("orders", pattern={"source": ["shop"]}, description="shop orders")
    assert arn == {"RuleArn": "arn:aws:events:us-east-1:000000000000:rule/orders"}
    described = bus.describe_rule("orders")
    assert described["State"] == "ENABLED"
    assert json.loads(described["EventPattern"]) == {"source": ["shop"]}
    assert described["Description"] == "shop orders"
    await bus.put_targets("orders", [{"id": "t", "resource": "sink"}])
    assert [t["id"] for t in bus.list_targets_by_rule("orders")] == ["t"]
    assert bus.list_targets_by_rule("orders")[0]["retry_policy"] == {
        "maximum_retry_attempts": 185,
        "maximum_event_age": 86400,
    }
    bus.put_rule("other", pattern={"source": ["x"]})
    assert [r["Name"] for r in bus.list_rules()] == ["orders", "other"]
    assert [r["Name"] for r in bus.list_rules(prefix="oth")] == ["other"]
    with pytest.raises(ConfigError, match="has targets"):
        await bus.delete_rule("orders")
    await bus.remove_targets("orders", ["t"])
    await bus.delete_rule("orders")
    with pytest.raises(
        ResourceNotFoundError, match="Rule orders does not exist on EventBus default"
    ):
        bus.describe_rule("orders")


async def test_disabled_rule_does_not_match(runtime: Runtime) -> None:
    runtime.add_resource("sink", "recorder", {})
    bus = (await routed(runtime, [{"id": "t", "resource": "sink"}])).bus()
    async with runtime:
        bus.disable_rule("orders")
        assert bus.describe_rule("orders")["State"] == "DISABLED"
        await runtime.put_events([ORDER])
        await settle()
        assert recorder(runtime, "sink").received == []
        bus.enable_rule("orders")
        await runtime.put_events([ORDER])
        await settle()
    assert len(recorder(runtime, "sink").received) == 1


async def test_invalid_rules_and_targets_say_where(runtime: Runtime) -> None:
    runtime.add_resource("sink", "recorder", {})
    bus = runtime.bus()
    with pytest.raises(PatternError, match=r"at \$\.source"):
        bus.put_rule("bad", pattern={"source": "shop"})
    with pytest.raises(ConfigError, match="rule name"):
        bus.put_rule("has space", pattern={"source": ["x"]})
    bus.put_rule("r", pattern={"source": ["x"]})
    with pytest.raises(
        ResourceNotFoundError, match=r"targets\[0\]\.resource: no resource named 'nope'"
    ):
        await bus.put_targets("r", [{"id": "t", "resource": "nope"}])
    with pytest.raises(ConfigError, match=r"targets\[1\]\.retry_policy\.maximum_retry_attempts"):
        await bus.put_targets(
            "r",
            [
                {"id": "a", "resource": "sink"},
                {"id": "b", "resource": "sink", "retry_policy": {"maximum_retry_attempts": 186}},
            ],
        )
    assert bus.list_targets_by_rule("r") == []  # all or nothing
    with pytest.raises(ConfigError, match="did you mean 'dead_letter'"):
        await bus.put_targets("r", [{"id": "a", "resource": "sink", "dead_leter": "x"}])
    with pytest.raises(ConfigError, match="maximum_event_age: must be between 60 and 86400"):
        await bus.put_targets(
            "r", [{"id": "a", "resource": "sink", "retry_policy": {"maximum_event_age": 59}}]
        )
    with pytest.raises(ConfigError, match="at most 5 targets"):
        await bus.put_targets("r", [{"id": f"t{i}", "resource": "sink"} for i in range(6)])
    with pytest.raises(ConfigError, match="unknown target type 'nope'"):
        runtime.add_resource("x", "nope", {})


async def test_target_limit_is_configurable() -> None:
    runtime = make_runtime(limits=Limits(max_targets_per_rule=7))
    runtime.add_resource("sink", "recorder", {})
    await routed(runtime, [{"id": f"t{i}", "resource": "sink"} for i in range(7)])
    assert len(runtime.bus().list_targets_by_rule("orders")) == 7


# -- retries and dead letters ----------------------------------------------------


async def test_retries_back_off_exponentially_within_jitter_bounds(
    runtime: Runtime, clock: ManualClock
) -> None:
    runtime.add_resource("flaky", "recorder", {"fail": 6})
    await routed(runtime, [{"id": "t", "resource": "flaky"}])
    async with runtime:
        await runtime.put_events([ORDER])
        await clock.advance(3600)
    target = recorder(runtime, "flaky")
    assert len(target.attempts) == 7 and len(target.received) == 1
    gaps = [b - a for a, b in zip(target.attempts, target.attempts[1:], strict=False)]
    backoff = Backoff()
    for retry, gap in enumerate(gaps, start=1):
        low, high = backoff.bounds(retry)
        assert low <= gap <= high, (retry, gap)
    assert backoff.bounds(1) == (0.5, 1.0) and backoff.bounds(20) == (150.0, 300.0)
    assert (
        runtime.counters.value(
            m.RETRY_INVOCATION_ATTEMPTS, EventBusName="default", RuleName="orders"
        )
        == 6
    )
    assert runtime.counters.value(m.INVOCATIONS, EventBusName="default", RuleName="orders") == 1


async def test_exhausted_retries_go_to_the_dead_letter_target_with_attributes(
    runtime: Runtime, clock: ManualClock
) -> None:
    await dead_lettered(runtime, "broken", {"fail": -1}, maximum_retry_attempts=2)
    async with runtime:
        result = await runtime.put_events([ORDER])
        await clock.advance(60)
    assert len(recorder(runtime, "broken").attempts) == 3
    [letter] = recorder(runtime, "dlq").received
    assert letter.payload["id"] == result["Entries"][0]["EventId"]
    assert letter.payload["detail"] == {"total": 120}  # the original event, not transformed
    assert letter.context.attributes == {
        "RULE_NAME": "orders",
        "TARGET_ID": "t",
        "ERROR_CODE": "TestFailure",
        "ERROR_MESSAGE": "broken refuses",
        "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
        "RETRY_ATTEMPTS": "2",
    }
    dims = {"EventBusName": "default", "RuleName": "orders"}
    assert runtime.counters.value(m.DEAD_LETTER_INVOCATIONS, **dims) == 1
    assert runtime.counters.value(m.INVOCATIONS_SENT_TO_DLQ, **dims) == 1
    # EventBridge counts a dead-lettered event in neither of these.
    assert runtime.counters.value(m.FAILED_INVOCATIONS, **dims) == 0
    assert runtime.counters.value(m.INVOCATIONS, **dims) == 0
    assert runtime.counters.value(m.INVOCATION_ATTEMPTS, **dims) == 3


async def test_zero_retries_dead_letters_after_the_first_failure(
    runtime: Runtime, clock: ManualClock
) -> None:
    await dead_lettered(runtime, "broken", {"fail": -1}, maximum_retry_attempts=0)
    async with runtime:
        await runtime.put_events([ORDER])
        await settle()
    assert len(recorder(runtime, "broken").attempts) == 1
    [letter] = recorder(runtime, "dlq").received
    assert letter.context.attributes["RETRY_ATTEMPTS"] == "0"
    assert letter.context.attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts"


async def test_maximum_event_age_ends_retrying(runtime: Runtime, clock: ManualClock) -> None:
    await dead_lettered(runtime, "broken", {"fail": -1}, maximum_event_age=60)
    async with runtime:
        await runtime.put_events([ORDER])
        await clock.advance(3600)
    attempts = recorder(runtime, "broken").attempts
    assert all(t - attempts[0] <= 60 for t in attempts)
    # 0.5-1, 1-2, 2-4, 4-8, 8-16, 16-32 s waits: at least 5 retries fit in 60 s, at most 7.
    assert 6 <= len(attempts) <= 8
    [letter] = recorder(runtime, "dlq").received
    assert letter.context.attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumEventAgeInSeconds"
    assert letter.context.attributes["RETRY_ATTEMPTS"] == str(len(attempts) - 1)


async def test_events_older_than_the_age_limit_are_not_attempted(clock: ManualClock) -> None:
    runtime = make_runtime(clock)
    await dead_lettered(runtime, "slow", {"hold": True, "concurrency": 1}, maximum_event_age=60)
    async with runtime:
        await runtime.put_events([ORDER, ORDER])
        await settle()
        await clock.advance(61)  # the second event waits in the queue past its age
        recorder(runtime, "slow").release()
        await settle()
    assert len(recorder(runtime, "slow").received) == 1
    [letter] = recorder(runtime, "dlq").received
    assert letter.context.attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumEventAgeInSeconds"
    assert letter.context.attributes["RETRY_ATTEMPTS"] == "0"


async def test_non_retryable_errors_skip_retries(runtime: Runtime, clock: ManualClock) -> None:
    await dead_lettered(runtime, "picky", {"fail": -1, "retryable": False})
    async with runtime:
        await runtime.put_events([ORDER])
        await settle()
    assert len(recorder(runtime, "picky").attempts) == 1
    [letter] = recorder(runtime, "dlq").received
    assert letter.context.attributes["ERROR_CODE"] == "TestFailure"
    assert letter.context.attributes["RETRY_ATTEMPTS"] == "0"
    assert "EXHAUSTED_RETRY_CONDITION" not in letter.context.attributes


async def test_a_failing_dead_letter_target_is_counted_and_logged(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.add_resource("picky", "recorder", {"fail": -1, "retryable": False})
    runtime.add_resource("dlq", "recorder", {"fail": -1})
    await routed(runtime, [{"id": "t", "resource": "picky", "dead_letter": "dlq"}])
    with caplog.at_level(logging.ERROR, logger="pipelines.delivery"):
        async with runtime:
            result = await runtime.put_events([ORDER])
            await settle()
    dims = {"EventBusName": "default", "RuleName": "orders"}
    assert runtime.counters.value(m.INVOCATIONS_FAILED_TO_BE_SENT_TO_DLQ, **dims) == 1
    assert runtime.counters.value(m.INVOCATIONS_SENT_TO_DLQ, **dims) == 0
    assert result["Entries"][0]["EventId"] in caplog.text
    assert "dead-letter target dlq failed" in caplog.text


async def test_a_drop_without_dead_letter_target_is_logged(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.add_resource("picky", "recorder", {"fail": -1, "retryable": False})
    await routed(runtime, [{"id": "t", "resource": "picky"}])
    with caplog.at_level(logging.ERROR, logger="pipelines.delivery"):
        async with runtime:
            result = await runtime.put_events([ORDER])
            await settle()
    assert f"dropped event {result['Entries'][0]['EventId']}" in caplog.text
    assert (
        runtime.counters.value(m.FAILED_INVOCATIONS, EventBusName="default", RuleName="orders") == 1
    )


# -- flow control ----------------------------------------------------------------


async def test_full_intake_makes_put_events_wait(clock: ManualClock) -> None:
    runtime = make_runtime(clock, limits=Limits(intake_size=2, target_queue_size=2))
    runtime.add_resource("slow", "recorder", {"hold": True, "concurrency": 1})
    await routed(runtime, [{"id": "t", "resource": "slow"}])
    async with runtime:
        target = recorder(runtime, "slow")
        # 1 in flight + 2 queued at the target + 1 held by the dispatcher + 2 in the
        # intake = 6 accepted; the 7th waits.
        put = asyncio.ensure_future(runtime.put_events([ORDER] * 8))
        await settle()
        assert not put.done()
        assert runtime.bus().intake_depth == 2
        await settle()
        assert not put.done()
        assert target.waiting == 1
        target.release()
        result = await asyncio.wait_for(put, 5)
        await settle()
    assert result["FailedEntryCount"] == 0
    assert len(target.received) == 8
    assert runtime.counters.value(m.THROTTLED_RULES, EventBusName="default", RuleName="orders") >= 1


async def test_a_slow_or_failing_target_does_not_hold_back_the_others(
    runtime: Runtime, clock: ManualClock
) -> None:
    runtime.add_resource("stuck", "recorder", {"hold": True})
    runtime.add_resource("broken", "recorder", {"fail": -1})
    runtime.add_resource("fine", "recorder", {})
    await routed(
        runtime,
        [
            {"id": "stuck", "resource": "stuck"},
            {"id": "broken", "resource": "broken"},
            {"id": "fine", "resource": "fine"},
        ],
    )
    async with runtime:
        await runtime.put_events([ORDER] * 50)
        await clock.advance(10)
        assert len(recorder(runtime, "fine").received) == 50
        assert recorder(runtime, "stuck").received == []
        assert len(recorder(runtime, "broken").attempts) >= 100  # first attempts and retries
        recorder(runtime, "stuck").release()
        await settle()
    assert len(recorder(runtime, "stuck").received) == 50


async def test_transformed_input_reaches_the_target(runtime: Runtime) -> None:
    runtime.add_resource("sink", "recorder", {})
    await routed(
        runtime,
        [
            {
                "id": "t",
                "resource": "sink",
                "input_transformer": {
                    "input_paths_map": {"total": "$.detail.total"},
                    "input_template": '{"rule": <aws.events.rule-name>, "total": <total>}',
                },
            }
        ],
    )
    async with runtime:
        await runtime.put_events([ORDER])
        await settle()
    assert recorder(runtime, "sink").received[0].payload == {"rule": "orders", "total": 120}


# -- shutdown and restart --------------------------------------------------------


async def test_pending_retries_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    clock = ManualClock()

    async def configured(fail: int) -> Runtime:
        runtime = make_runtime(clock, state_path=state)
        return await dead_lettered(runtime, "flaky", {"fail": fail}, maximum_retry_attempts=5)

    first = await configured(fail=-1)
    async with first:
        result = await first.put_events([ORDER])
        await clock.advance(
            2.5, quiet=first.wait_until_idle
        )  # the first attempt and one or two retries fail
    attempts_before = len(recorder(first, "flaky").attempts)
    assert 2 <= attempts_before <= 3

    second = await configured(fail=0)
    async with second:
        await clock.advance(600, quiet=second.wait_until_idle)
    [got] = recorder(second, "flaky").received
    assert got.payload["id"] == result["Entries"][0]["EventId"]
    assert got.context.attempt == attempts_before + 1  # attempts continue, not restart
    assert recorder(second, "dlq").received == []

    third = await configured(fail=-1)
    async with third:
        await clock.advance(600, quiet=third.wait_until_idle)
    assert recorder(third, "flaky").attempts == []  # delivered once: nothing left pending


async def test_retries_counted_across_restarts_still_end_in_the_dead_letter(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    clock = ManualClock()

    async def configured() -> Runtime:
        runtime = make_runtime(clock, state_path=state)
        return await dead_lettered(runtime, "broken", {"fail": -1}, maximum_retry_attempts=3)

    first = await configured()
    async with first:
        await first.put_events([ORDER])
        await clock.advance(1.2, quiet=first.wait_until_idle)
    assert recorder(first, "dlq").received == []
    second = await configured()
    async with second:
        await clock.advance(600, quiet=second.wait_until_idle)
    assert len(recorder(first, "broken").attempts) + len(recorder(second, "broken").attempts) == 4
    [letter] = recorder(second, "dlq").received
    assert letter.context.attributes["RETRY_ATTEMPTS"] == "3"


async def test_stop_drains_in_flight_deliveries(clock: ManualClock) -> None:
    runtime = make_runtime(clock)
    runtime.add_resource("slow", "recorder", {"hold": True})
    await routed(runtime, [{"id": "t", "resource": "slow"}])
    await runtime.start()
    await runtime.put_events([ORDER] * 3)
    await settle()
    target = recorder(runtime, "slow")
    assert target.waiting == 3
    stopping = asyncio.ensure_future(runtime.stop(timeout=5))
    await settle()
    with pytest.raises(NotRunningError):
        await runtime.put_events([ORDER])  # intake is closed while draining
    assert not stopping.done()
    target.release()
    await asyncio.wait_for(stopping, 5)
    assert len(target.received) == 3
    assert target.stopped


async def test_stop_persists_what_it_could_not_drain(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    clock = ManualClock()
    first = make_runtime(clock, state_path=state)
    first.add_resource("slow", "recorder", {"hold": True, "concurrency": 1})
    await routed(first, [{"id": "t", "resource": "slow"}])
    await first.start()
    await first.put_events([ORDER] * 4)
    await settle()
    await first.stop(timeout=0.05)  # one in flight, three queued: none finished
    assert recorder(first, "slow").received == []

    second = make_runtime(clock, state_path=state)
    second.add_resource("slow", "recorder", {})
    await routed(second, [{"id": "t", "resource": "slow"}])
    async with second:
        await clock.advance(1, quiet=second.wait_until_idle)
    assert len(recorder(second, "slow").received) == 4


async def test_without_state_undrained_work_is_reported_lost(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(clock)
    runtime.add_resource("slow", "recorder", {"hold": True, "concurrency": 1})
    await routed(runtime, [{"id": "t", "resource": "slow"}])
    with caplog.at_level(logging.ERROR, logger="pipelines.runtime"):
        await runtime.start()
        await runtime.put_events([ORDER] * 3)
        await settle()
        await runtime.stop(timeout=0.05)
    assert "3 deliveries were still pending at shutdown and are lost" in caplog.text


async def test_targets_start_and_stop_with_the_runtime(runtime: Runtime) -> None:
    target = runtime.add_resource("sink", "recorder", {})
    assert isinstance(target, Recorder)
    assert not target.started
    async with runtime:
        assert target.started and not target.stopped
    assert target.stopped


# -- regressions from review: removal, shutdown races, restarts ------------------


async def test_removing_a_target_whose_queue_is_full_does_not_stall_the_bus(
    clock: ManualClock,
) -> None:
    runtime = make_runtime(clock, limits=Limits(target_queue_size=2))
    runtime.add_resource("stuck", "recorder", {"hold": True, "concurrency": 1})
    runtime.add_resource("fine", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("a", pattern={"source": ["shop"]})
    await bus.put_targets("a", [{"id": "t", "resource": "stuck"}])
    bus.put_rule("b", pattern={"source": ["shop"]})
    await bus.put_targets("b", [{"id": "t", "resource": "fine"}])
    async with runtime:
        await runtime.put_events([ORDER] * 9)
        await settle()
        assert len(recorder(runtime, "fine").received) < 9  # the dispatcher waits on "stuck"
        await bus.remove_targets("a", ["t"])
        await settle()
        assert len(recorder(runtime, "fine").received) == 9
        recorder(runtime, "stuck").release()


async def test_a_removed_target_gets_no_more_retries(tmp_path: Path, clock: ManualClock) -> None:
    runtime = make_runtime(clock, state_path=tmp_path / "state.db")
    runtime.add_resource("broken", "recorder", {"hold": True, "fail": -1})
    await routed(runtime, [{"id": "t", "resource": "broken"}])
    async with runtime:
        await runtime.put_events([ORDER])
        await settle()
        await runtime.bus().remove_targets("orders", ["t"])  # while the call is in flight
        recorder(runtime, "broken").release()
        await clock.advance(3600, quiet=runtime.wait_until_idle)
    assert len(recorder(runtime, "broken").attempts) == 1
    second = make_runtime(clock, state_path=tmp_path / "state.db")
    second.add_resource("broken", "recorder", {})
    await routed(second, [{"id": "t", "resource": "broken"}])
    async with second:
        await clock.advance(3600, quiet=second.wait_until_idle)
    assert recorder(second, "broken").received == []  # no row was left behind


async def test_updating_a_target_keeps_its_pending_retries(
    runtime: Runtime, clock: ManualClock
) -> None:
    runtime.add_resource("broken", "recorder", {"fail": -1})
    runtime.add_resource("fixed", "recorder", {})
    await routed(runtime, [{"id": "t", "resource": "broken"}])
    async with runtime:
        await runtime.put_events([ORDER])
        await settle()
        await runtime.bus().put_targets("orders", [{"id": "t", "resource": "fixed"}])
        await clock.advance(60)
    [got] = recorder(runtime, "fixed").received
    assert got.context.attempt == 2  # the retry of the first, failed attempt


async def test_stop_answers_producers_waiting_for_room(clock: ManualClock, tmp_path: Path) -> None:
    runtime = make_runtime(
        clock, limits=Limits(intake_size=2, target_queue_size=1), state_path=tmp_path / "s.db"
    )
    runtime.add_resource("stuck", "recorder", {"hold": True, "concurrency": 1})
    await routed(runtime, [{"id": "t", "resource": "stuck"}])
    await runtime.start()
    put = asyncio.ensure_future(runtime.put_events([ORDER] * 10))
    await settle()
    assert not put.done()
    await asyncio.wait_for(runtime.stop(timeout=0.05), 5)
    result = await asyncio.wait_for(put, 5)
    codes = [entry.get("ErrorCode") for entry in result["Entries"]]
    accepted = codes.count(None)
    assert 0 < accepted < 10
    assert codes[accepted:] == ["InternalFailure"] * (10 - accepted)  # the tail, in order
    assert result["FailedEntryCount"] == 10 - accepted
    # Everything accepted was kept: a new runtime delivers exactly those.
    second = make_runtime(clock, state_path=tmp_path / "s.db")
    second.add_resource("stuck", "recorder", {})
    await routed(second, [{"id": "t", "resource": "stuck"}])
    async with second:
        await clock.advance(1, quiet=second.wait_until_idle)
    assert len(recorder(second, "stuck").received) == accepted


async def test_a_put_while_the_state_database_opens_waits_for_the_start(
    clock: ManualClock, tmp_path: Path
) -> None:
    runtime = make_runtime(clock, state_path=tmp_path / "s.db")
    runtime.add_resource("sink", "recorder", {})
    await routed(runtime, [{"id": "t", "resource": "sink"}])
    starting = asyncio.ensure_future(runtime.start())
    await asyncio.sleep(0)  # start() has begun: the state database opens (in a thread)
    assert not starting.done()
    try:
        # An API endpoint open before the runtime starts puts now: held, not refused.
        answer = await asyncio.wait_for(runtime.put_events([ORDER]), 30)
        assert answer["FailedEntryCount"] == 0
        await runtime.wait_until_idle()
        assert len(recorder(runtime, "sink").received) == 1
    finally:
        await starting
        await runtime.stop()


async def test_a_runtime_starts_once(runtime: Runtime) -> None:
    async with runtime:
        pass
    with pytest.raises(NotRunningError, match="starts once"):
        await runtime.start()


async def test_jmespath_errors_are_not_retried(runtime: Runtime) -> None:
    runtime.add_resource("sink", "recorder", {})
    runtime.add_resource("dlq", "recorder", {})
    await routed(
        runtime,
        [
            {
                "id": "t",
                "resource": "sink",
                "input_jmespath": "length(detail.total)",
                "dead_letter": "dlq",
            }
        ],
    )
    async with runtime:
        await runtime.put_events([ORDER])
        await settle()
    [letter] = recorder(runtime, "dlq").received
    assert letter.context.attributes["ERROR_CODE"] == "TransformationError"
    assert letter.context.attributes["RETRY_ATTEMPTS"] == "0"
