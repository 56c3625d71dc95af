"""Runtimes sharing one PostgreSQL state: each runner under its own name,
one of them firing the schedules, another taking over when it stops, and
what a gone runner left adopted by the next one to start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.cluster import lock_key
from pipelines.errors import StateError
from pipelines.limits import Limits
from pipelines.runtime import Runtime
from pipelines.state import StateDB

from .recorder import Recorder, plugin_manager
from .test_scheduler import T0

PLUGINS = plugin_manager()


def runtime_on(url: str, runner: str, clock: ManualClock) -> Runtime:
    runtime = Runtime(
        clock=clock,
        plugins=PLUGINS,
        seed=1,
        state_path=url,
        runner=runner,
        limits=Limits(leader_check=0.05),
    )
    runtime.add_resource("sink", "recorder", {})
    return runtime


async def with_tick(runtime: Runtime) -> None:
    bus = runtime.bus()
    bus.put_rule("tick", schedule="rate(1 minute)")
    await bus.put_targets("tick", [{"id": "t", "resource": "sink"}])


class _Events:
    """The events a runtime's recorder received (payloads are whole events)."""

    def __init__(self, recorder: Recorder) -> None:
        self.events = [received.payload for received in recorder.received]


def sink(runtime: Runtime) -> _Events:
    target = runtime.resource("sink")
    assert isinstance(target, Recorder)
    return _Events(target)


async def until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "not within the time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[Runtime]:
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop(1)


async def test_a_second_runner_with_a_taken_name_is_refused(postgres_url: str) -> None:
    clock = ManualClock(T0)
    async with running(runtime_on(postgres_url, "alpha", clock)):
        second = runtime_on(postgres_url, "alpha", clock)
        with pytest.raises(StateError, match="runner name 'alpha' is in use by another runner"):
            await second.start()
        async with running(runtime_on(postgres_url, "beta", clock)) as other:
            assert other.membership is not None and other.membership.runner == "beta"


async def test_one_runner_fires_a_schedule_and_another_takes_over_when_it_stops(
    postgres_url: str,
) -> None:
    clock = ManualClock(T0)
    first, second = runtime_on(postgres_url, "a", clock), runtime_on(postgres_url, "b", clock)
    for runtime in (first, second):
        await with_tick(runtime)
    await first.start()
    try:
        await until(lambda: len(sink(first).events) == 1)  # a rate fires at once
        async with running(second):
            await asyncio.sleep(0.3)  # several of b's tries to take the role
            assert second.membership is not None
            assert not second.membership.leads("scheduler")
            assert sink(second).events == []
            await first.stop(1)
            # b leads within a few checks; the run at T0 was a's: not again.
            await until(
                lambda: second.membership is not None and second.membership.leads("scheduler")
            )
            await asyncio.sleep(0.2)
            assert sink(second).events == []
            await clock.advance(60)
            await until(lambda: len(sink(second).events) == 1)
            assert sink(second).events[0]["time"] == "2026-01-05T09:01:00Z"
    finally:
        await first.stop(1)
    assert len(sink(first).events) == 1
    assert sink(first).events[0]["time"] == "2026-01-05T09:00:00Z"


async def test_what_a_gone_runner_left_is_delivered_by_the_next_to_start(postgres_url: str) -> None:
    # Runner a accepted an event and died before delivering it: its intake
    # row stays, under its name. Runner b starts while a's name is free.
    store = await StateDB.open(postgres_url, runner="a")
    try:
        await store.execute(
            "INSERT INTO intake (runner, seq, bus, event, ingested, addressed)"
            " VALUES ('a', 1, 'default', ?, ?, NULL)",
            (b'{"id": "left-by-a", "source": "shop", "detail-type": "Order", "detail": {}}', T0),
        )
    finally:
        await store.close()
    second = runtime_on(postgres_url, "b", ManualClock(T0))
    bus = second.bus()
    bus.put_rule("orders", pattern={"source": ["shop"]})
    await bus.put_targets("orders", [{"id": "t", "resource": "sink"}])
    async with running(second):
        await until(lambda: len(sink(second).events) == 1)
        assert sink(second).events[0]["id"] == "left-by-a"
        await second.wait_until_idle()
    store = await StateDB.open(postgres_url, runner="b")
    try:
        assert await store.rows("SELECT runner, seq FROM intake") == []
    finally:
        await store.close()


async def test_a_runner_that_dies_for_good_is_taken_over_while_the_others_run(
    postgres_url: str,
) -> None:
    second = runtime_on(postgres_url, "b", ManualClock(T0))
    bus = second.bus()
    bus.put_rule("orders", pattern={"source": ["shop"]})
    await bus.put_targets("orders", [{"id": "t", "resource": "sink"}])
    async with running(second):
        # Runner "ghost" joined, accepted an event and died: its name is free.
        ghost = await StateDB.open(postgres_url, runner="ghost")
        try:
            await ghost.join(T0)
            await ghost.execute(
                "INSERT INTO intake (runner, seq, bus, event, ingested, addressed)"
                " VALUES ('ghost', 5, 'default', ?, ?, NULL)",
                (
                    b'{"id": "left-by-ghost", "source": "shop", "detail-type": "O", "detail": {}}',
                    T0,
                ),
            )
        finally:
            await ghost.close()
        await until(lambda: len(sink(second).events) == 1)
        assert sink(second).events[0]["id"] == "left-by-ghost"
        await second.wait_until_idle()
        store = await StateDB.open(postgres_url, runner="b")
        try:
            await until_async(lambda: store.rows("SELECT runner, seq FROM intake"), [])
            assert await store.other_runners() == []  # the ghost is forgotten
        finally:
            await store.close()


async def until_async(read: Callable[[], Any], expected: object, seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (found := await read()) != expected:
        assert loop.time() < deadline, found
        await asyncio.sleep(0.02)


async def test_a_leader_that_loses_its_database_connection_stops_leading(
    postgres_url: str,
) -> None:
    clock = ManualClock(T0)
    first, second = runtime_on(postgres_url, "a", clock), runtime_on(postgres_url, "b", clock)
    for runtime in (first, second):
        await with_tick(runtime)
    async with running(first), running(second):
        assert first.membership is not None and second.membership is not None
        assert first.membership.leads("scheduler")
        await until(lambda: len(sink(first).events) == 1)
        # The server ends the session holding a's locks (a network cut, a
        # failover): b takes the role; a must not fire anything more.
        key = lock_key("role", "scheduler")
        store = await StateDB.open(postgres_url, runner="observer")
        try:
            await store.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = ? AND objid = ? AND objsubid = 1",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
            )
        finally:
            await store.close()
        await until(lambda: first.membership is not None and first.membership.lost.is_set())
        assert not first.membership.leads("scheduler")
        await until(lambda: second.membership is not None and second.membership.leads("scheduler"))
        await clock.advance(60)
        await until(lambda: len(sink(second).events) == 1)
        await asyncio.sleep(0.2)
        assert len(sink(first).events) == 1  # only the run it fired before


async def test_a_runner_restarted_at_once_under_its_name_is_not_refused(postgres_url: str) -> None:
    clock = ManualClock(T0)
    for _ in range(5):
        async with running(runtime_on(postgres_url, "same", clock)) as runtime:
            assert runtime.membership is not None and runtime.membership.runner == "same"
