"""put_events(settled=...): a producer hears when each accepted event is safe
(every delivery delivered, dead-lettered, dropped, or saved as a retry), which
is what an MQTT source waits for before acknowledging a message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.clock import ManualClock
from pipelines.errors import DeliveryError

from .recorder import Sender
from .test_bus import dead_lettered, eventually, make_runtime, recorder, routed


def order(n: int, source: str = "shop") -> dict[str, Any]:
    return {"Source": source, "DetailType": "o", "Detail": json.dumps({"n": n})}


async def test_an_event_settles_once_every_target_has_it() -> None:
    runtime = make_runtime()
    runtime.add_resource("fast", "recorder", {})
    runtime.add_resource("slow", "recorder", {"hold": True})
    await routed(runtime, [{"id": "a", "resource": "fast"}, {"id": "b", "resource": "slow"}])
    settled: list[int] = []
    async with runtime:
        result = await runtime.put_events(
            [order(1), {"Source": "shop"}, order(2, "elsewhere")], settled=settled.append
        )
        assert result["FailedEntryCount"] == 1  # entry 1 has no DetailType
        await eventually(lambda: recorder(runtime, "slow").waiting == 1)
        assert len(recorder(runtime, "fast").received) == 1
        assert settled == [2]  # matched nothing: safe at once; entry 0 waits for "slow"
        recorder(runtime, "slow").release()
        await runtime.wait_until_idle()
        assert settled == [2, 0]  # the invalid entry never settles


async def test_a_saved_retry_settles_before_the_delivery_succeeds(tmp_path: Path) -> None:
    clock = ManualClock()
    runtime = make_runtime(clock, state_path=tmp_path / "state.db")
    await dead_lettered(runtime, "flaky", {"fail": 1}, maximum_retry_attempts=3)
    settled: list[int] = []
    async with runtime:
        await runtime.put_events([order(1)], settled=settled.append)
        await runtime.wait_until_idle()
        assert recorder(runtime, "flaky").received == []  # first attempt failed
        assert settled == [0]  # but its retry is in the state database
        await clock.advance(60, quiet=runtime.wait_until_idle)
        assert len(recorder(runtime, "flaky").received) == 1
        assert settled == [0]  # once only


async def test_without_a_state_database_an_event_settles_at_its_dead_letter() -> None:
    clock = ManualClock()
    runtime = make_runtime(clock)
    await dead_lettered(runtime, "broken", {"fail": -1}, maximum_retry_attempts=2)
    settled: list[int] = []
    async with runtime:
        await runtime.put_events([order(1)], settled=settled.append)
        await runtime.wait_until_idle()
        assert settled == []  # a retry kept only in memory is not safe
        await clock.advance(600, quiet=runtime.wait_until_idle)
        assert len(recorder(runtime, "dlq").received) == 1
        assert settled == [0]


async def test_events_still_queued_at_shutdown_settle_when_saved(tmp_path: Path) -> None:
    runtime = make_runtime(state_path=tmp_path / "state.db")
    runtime.add_resource("slow", "recorder", {"hold": True, "concurrency": 1})
    await routed(runtime, [{"id": "a", "resource": "slow"}])
    settled: list[int] = []
    async with runtime:
        await runtime.put_events([order(n) for n in range(5)], settled=settled.append)
        await eventually(lambda: recorder(runtime, "slow").waiting == 1)
        assert settled == []
        await runtime.stop(timeout=0.05)  # the held call and four queued: saved as retries
    assert sorted(settled) == [0, 1, 2, 3, 4]


async def test_a_source_that_puts_while_the_runtime_starts_waits_for_intake() -> None:
    # An MQTT session resumed with a backlog hands messages over right after
    # connecting, inside Target.start, before the runtime opens its intake.
    runtime = make_runtime()
    runtime.add_resource("source", "recorder", {"put_on_start": 3})
    runtime.add_resource("sink", "recorder", {})
    await routed(runtime, [{"id": "a", "resource": "sink"}], pattern={"source": ["source"]})
    async with runtime:
        await eventually(lambda: len(recorder(runtime, "sink").received) == 3)
    assert recorder(runtime, "source").put_results[0]["FailedEntryCount"] == 0


# -- targets that settle by callback (Target.deliver_nowait)-----------------------------


def sender(runtime: Any, name: str = "out") -> Sender:
    found = runtime.resource(name)
    assert isinstance(found, Sender)
    return found


async def test_a_sending_target_settles_each_event_when_it_calls_done(tmp_path: Path) -> None:
    """A target implementing ``deliver_nowait`` gets each attempt without an awaited
    call: at most ``concurrency`` under way, the next started as one ends,
    and each event settled only when its ``done`` comes (a failure once its
    retry is saved)."""
    clock = ManualClock()
    runtime = make_runtime(clock, state_path=tmp_path / "state.db")
    runtime.add_resource("out", "sender", {"concurrency": 2})
    runtime.add_resource("dlq", "recorder", {})
    await routed(runtime, [{"id": "t", "resource": "out", "dead_letter": "dlq"}])
    settled: list[int] = []
    async with runtime:
        await runtime.put_events([order(n) for n in range(3)], settled=settled.append)
        out = sender(runtime)
        await eventually(lambda: len(out.sent) == 2)
        assert settled == []  # under way: not safe yet
        out.finish()
        assert settled == [0]  # at once, in the callback
        assert [p["detail"]["n"] for p, _, _ in out.sent] == [1, 2]  # the third took its place
        out.finish(DeliveryError("Busy", "try later", retryable=True))
        await eventually(lambda: settled == [0, 1])  # its retry is in the state database
        out.finish()
        await runtime.wait_until_idle()
        assert settled == [0, 1, 2]
        assert out.most_at_once == 2
        await clock.advance(60)
        await eventually(lambda: len(out.sent) == 1)
        [(payload, context, _)] = out.sent  # the retry, attempt 2
        assert context.attempt == 2 and payload["detail"] == {"n": 1}
        out.finish(DeliveryError("Refused", "never", retryable=False))
        await runtime.wait_until_idle()
        [dead] = recorder(runtime, "dlq").received
        assert dead.context.attributes["ERROR_CODE"] == "Refused"
        assert runtime.deliverer.outcomes.delivered == 2
        assert settled == [0, 1, 2]  # once each


async def test_a_sending_target_may_call_done_within_send() -> None:
    """``done`` called before ``deliver_nowait`` returns (an outcome known at once):
    every event is delivered and settled, and the next starts without
    recursing per event."""
    runtime = make_runtime()
    runtime.add_resource("out", "sender", {"concurrency": 4, "at_once": True})
    await routed(runtime, [{"id": "t", "resource": "out"}])
    settled: list[int] = []
    async with runtime:
        await runtime.put_events([order(n) for n in range(3000)], settled=settled.append)
        await runtime.wait_until_idle()
    assert sorted(settled) == list(range(3000))
    assert [r.payload["detail"]["n"] for r in sender(runtime).received] == list(range(3000))


async def test_attempts_under_way_at_shutdown_are_saved_and_not_counted(tmp_path: Path) -> None:
    """Attempts whose ``done`` has not come when the runtime stops are saved
    as retries (their events settle), not counted as attempts, and a ``done``
    that comes later is ignored: after a restart they are delivered again,
    as first attempts."""
    state = tmp_path / "state.db"
    runtime = make_runtime(state_path=state)
    runtime.add_resource("out", "sender", {"concurrency": 2})
    await routed(runtime, [{"id": "t", "resource": "out"}])
    settled: list[int] = []
    async with runtime:
        await runtime.put_events([order(n) for n in range(3)], settled=settled.append)
        await eventually(lambda: len(sender(runtime).sent) == 2)
        await runtime.stop(timeout=0.05)
    assert sorted(settled) == [0, 1, 2]
    late = sender(runtime)
    late.finish()  # after the stop: nothing counts it
    assert runtime.deliverer.outcomes.delivered == 0

    clock = ManualClock()
    again = make_runtime(clock, state_path=state)
    again.add_resource("out", "sender", {"at_once": True})
    await routed(again, [{"id": "t", "resource": "out"}])
    async with again:
        await clock.advance(1, quiet=again.wait_until_idle)  # the saved retries are due
        await eventually(lambda: len(sender(again).received) == 3)
    received = sender(again).received
    assert sorted(r.payload["detail"]["n"] for r in received) == [0, 1, 2]
    assert {r.context.attempt for r in received} == {1}
