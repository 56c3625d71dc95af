"""put_events(settled=...): a producer hears when each accepted event is safe
(every delivery delivered, dead-lettered, dropped, or saved as a retry), which
is what an MQTT source waits for before acknowledging a message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.clock import ManualClock

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
