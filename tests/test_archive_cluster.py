"""Archives, replays, metrics and alarms shared by the runners of a cluster:
two or three store instances on one PostgreSQL database stand for runners.
An archive is one record, a replay runs on one runner, metric datapoints
written by several runners add up, and of two runners moving one alarm
from one state, one wins."""

from __future__ import annotations

import asyncio
import json
import math
import random
from typing import Any

import orjson
import pytest

from pipelines.alarms import AlarmStore
from pipelines.archive import REPLAY_COLUMNS, ArchiveSpec, ArchiveStore
from pipelines.clock import ManualClock
from pipelines.metrics import DISTINCT_LIMIT, Aggregate, MetricStore, _merge_blobs
from pipelines.replay import LEASE, Replay
from pipelines.runtime import Runtime

from .helpers import archived
from .recorder import Recorder, plugin_manager

T0 = 1_700_000_040.0  # a minute boundary


async def opened(store_type: Any, url: str, count: int, *args: Any) -> list[Any]:
    return list(await asyncio.gather(*(store_type.open(url, *args) for _ in range(count))))


async def closed(stores: list[Any]) -> None:
    for store in stores:
        await store.close()


# -- archives ---------------------------------------------------------------------------


async def test_an_archive_written_by_three_runners_is_one_record(postgres_url: str) -> None:
    runners = await opened(ArchiveStore, postgres_url, 3)
    try:
        for store in runners:  # each runner declares the same archives at its start
            for name in ("left", "right"):
                await store.save_archive(ArchiveSpec.parse(name, {}), T0)
        written: dict[str, list[bytes]] = {"left": [], "right": []}

        async def write(runner: int) -> None:
            for batch in range(20):
                rows = []
                for n in range(26):
                    body = json.dumps({"id": f"{runner}-{batch}-{n}", "pad": "x" * n}).encode()
                    # Both archives in one statement, in an order of its own:
                    # the triggers lock their rows in name order (no deadlock).
                    name = ("left", "right")[(n + runner) % 2]
                    rows.append((name, T0 + n, body))
                    written[name].append(body)
                await runners[runner].append(rows, strict=False)

        await asyncio.gather(*(write(runner) for runner in range(3)))
        for name, bodies in written.items():
            for store in runners:  # every runner sees the whole archive
                described = await store.describe(name)
                assert described["EventCount"] == len(bodies) == 780
                assert described["SizeBytes"] == sum(map(len, bodies))
            stored = archived(postgres_url, name)
            assert sorted(stored) == sorted(bodies)

        # A purge on one runner while another writes: the counts follow both.
        async def more() -> None:
            await runners[1].append([("left", T0 + 100, b'{"late": 1}')] * 40, strict=False)

        purged, _ = await asyncio.gather(runners[2].purge("left", T0 + 10), more())
        assert purged == 3 * 20 * 5  # n of 0..9 on "left" are half of them: 5 per batch
        left = archived(postgres_url, "left")
        count, size = len(left), sum(map(len, left))
        described = await runners[0].describe("left")
        assert (described["EventCount"], described["SizeBytes"]) == (count, size)
        assert count == 780 - purged + 40
    finally:
        await closed(runners)


# -- replays ----------------------------------------------------------------------------


def replay_row(name: str) -> tuple[Any, ...]:
    row = Replay(name, "left", "default", None, T0, T0 + 60, None).row()
    assert len(row) == len(REPLAY_COLUMNS)
    return row


async def test_a_replay_is_started_and_claimed_by_one_runner(postgres_url: str) -> None:
    a, b, c = runners = await opened(ArchiveStore, postgres_url, 3)
    try:
        # Three runners starting one name at once: one of them has it.
        made = await asyncio.gather(
            *(
                store.create_replay(replay_row("r"), f"runner-{n}", T0 + 60)
                for n, store in enumerate(runners)
            )
        )
        assert sorted(made) == [False, False, True]
        owner = f"runner-{made.index(True)}"
        assert (await b.replay_owners())["r"] == (owner, T0 + 60)
        # While its lease runs, nobody else takes it; its owner renews it.
        assert not await c.claim_replay("r", "runner-x", T0 + 30, T0 + 90)
        assert await a.renew_replay("r", owner, T0 + 120) == "STARTING"
        # The owner died: once its lease ended, of three claimers one wins.
        claims = await asyncio.gather(
            *(
                store.claim_replay("r", f"new-{n}", T0 + 121, T0 + 181)
                for n, store in enumerate(runners)
            )
        )
        assert sorted(claims) == [False, False, True]
        winner = f"new-{claims.index(True)}"
        # The old owner, back, learns that it lost it: nothing it writes lands.
        progressed = Replay.from_row(replay_row("r"))
        progressed.replayed = 999
        assert not await a.save_replay(progressed.row(), owner, T0 + 200, progress=True)
        assert await a.renew_replay("r", owner, T0 + 200) is None
        assert (await b.replays("r"))[0][REPLAY_COLUMNS.index("replayed")] == 0
        # Another runner cancels it: the owner's next progress write is
        # refused and its renewal says why; it ends it (not a progress write).
        assert await c.cancel_replay("r")
        assert not await b.save_replay(replay_row("r"), winner, T0 + 200, progress=True)
        assert await b.renew_replay("r", winner, T0 + 200) == "CANCELLING"
        ended = Replay.from_row(replay_row("r"))
        ended.state = "CANCELLED"
        assert await b.save_replay(ended.row(), winner, None)
        assert (await c.replay_owners())["r"] == (None, None)  # let go
        assert not await c.claim_replay("r", "late", T0 + 999, T0 + 1059)  # ended: nobody runs it
    finally:
        await closed(runners)


def cluster_runtime(url: str, runner: str, clock: ManualClock) -> Runtime:
    runtime = Runtime(state_path=url, plugins=plugin_manager(), clock=clock, runner=runner)
    runtime.add_resource("sink", "recorder", {})
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    return runtime


async def test_a_replay_runs_on_one_runner_and_another_can_cancel_it(postgres_url: str) -> None:
    clock = ManualClock(T0 + 1000)
    first = cluster_runtime(postgres_url, "first", clock)
    second = cluster_runtime(postgres_url, "second", clock)
    for runtime in (first, second):
        await runtime.bus().put_targets("all", [{"id": "t", "resource": "sink"}])
        await runtime.archives.create_archive("all")
    async with first, second:
        entries = [
            {
                "Source": "shop",
                "DetailType": "t",
                "Detail": json.dumps({"n": n}),
                "Time": T0 + n * 60,
            }
            for n in range(5)
        ]
        assert (await first.put_events(entries))["FailedEntryCount"] == 0
        await first.wait_until_idle()
        # Paced: the second event is a minute away, so it is still running.
        await first.replays.start("slow", "all", T0, T0 + 3600, speed=1)
        async with asyncio.timeout(10):
            while (await first.replays.describe("slow"))["EventsReplayed"] < 1:
                await asyncio.sleep(0.01)
        seen = await second.replays.describe("slow")
        assert (seen["State"], seen["EventsTotal"]) == ("RUNNING", 5)
        await second.replays.resume()  # the second runner does not take it over
        assert second.replays.running == 0 and first.replays.running == 1
        assert (await second.replays.cancel("slow"))["State"] == "CANCELLING"
        # The owner hears it at its next renewal (within a third of its lease).
        async with asyncio.timeout(10):
            while first.replays.running:
                await clock.advance(5, quiet=lambda: asyncio.sleep(0.02))
        ended = await second.replays.describe("slow")
        sinks = [runtime.resource("sink") for runtime in (first, second)]
    replayed = []
    for sink in sinks:
        assert isinstance(sink, Recorder)
        replayed.append([r.payload for r in sink.received if "replay-name" in r.payload])
    assert ended["State"] == "CANCELLED"
    assert ended["EventsReplayed"] == len(replayed[0]) == 1
    assert replayed[1] == []  # the second runner put none of its events


# -- metrics ----------------------------------------------------------------------------


async def test_runners_flushing_one_series_and_minute_add_up(postgres_url: str) -> None:
    clock = ManualClock(T0 + 30)
    runners = await opened(MetricStore, postgres_url, 3, clock)
    rng = random.Random(7)
    everything: list[float] = []
    try:
        # Rounds of puts and flushes at once: each flush merges into the row
        # the others committed. Distinct values cross DISTINCT_LIMIT, so the
        # merge bins them on the way (as one runner's Aggregate would).
        for _ in range(6):
            for store in runners:
                values = [round(rng.uniform(1, 1000), 3) for _ in range(150)]
                everything += values
                for value in values:
                    store.put_metric_data(
                        "Shop", "Latency", {"Api": "put"}, value=value, timestamp=T0 + 1
                    )
                store.put_metric_data("Shop", "Hits", value=1, timestamp=T0 + 2)
            await asyncio.gather(*(store.flush() for store in runners))
        assert len(set(everything)) > DISTINCT_LIMIT
        key = ("Shop", "Latency", (("Api", "put"),))
        for statistic, expected in (
            ("SampleCount", len(everything)),
            ("Sum", math.fsum(everything)),
            ("Minimum", min(everything)),
            ("Maximum", max(everything)),
        ):
            [value] = (await runners[0].read_many([key], int(T0) + 60, 60, 1, statistic))[key]
            assert value == pytest.approx(expected, rel=1e-9), statistic
        exact = sorted(everything)[math.ceil(0.5 * len(everything)) - 1]
        [p50] = (await runners[1].read_many([key], int(T0) + 60, 60, 1, "p50"))[key]
        assert p50 == pytest.approx(exact, rel=0.006)  # binned: within half a percent
        hits = ("Shop", "Hits", ())
        assert (await runners[2].read_many([hits], int(T0) + 60, 60, 1, "Sum"))[hits] == [18.0]
        [(rows,)] = await runners[0].rows("SELECT count(*) FROM metric_data")
        assert rows == 2  # one row per series and minute, whoever wrote it
    finally:
        await closed(runners)


def blob(values: dict[float, float], binned: bool = False) -> bytes:
    return orjson.dumps([binned, list(values.items())])


def decoded(merged: bytes | None) -> tuple[bool, dict[float, float]] | None:
    if merged is None:
        return None
    sample = Aggregate.decode(0, 0, 0, 0, merged)
    assert sample.values is not None
    return sample.binned, sample.values


async def test_postgresqls_merge_is_pythons(postgres_url: str) -> None:
    """``pipelines_merge`` in PL/pgSQL gives what SQLite's Python function
    gives, bin for bin, on every kind of pair of distributions."""
    store = await MetricStore.open(postgres_url)
    rng = random.Random(11)

    def spread(count: int, low: float = 1e-3, high: float = 1e6) -> dict[float, float]:
        return {
            rng.uniform(low, high) * rng.choice((1, -1)): float(rng.randint(1, 9))
            for _ in range(count)
        }

    small, other = spread(20), spread(30)
    big = spread(DISTINCT_LIMIT - 10)
    aggregate = Aggregate()  # past DISTINCT_LIMIT values, so binned
    for value, count in spread(DISTINCT_LIMIT + 500).items():
        aggregate.add(value, count)
    made_binned = aggregate.encode()
    assert aggregate.binned and made_binned is not None
    cases = [
        (blob(small), blob(other)),  # the usual case
        (blob(small), blob(small)),  # the same values: counts add up
        (blob({1.0: 2.0, 0.0: 1.0, 0.1: 1.0}), blob({1.0: 1.0, 0.2: 3.0})),
        (blob(big), blob(other)),  # crossing DISTINCT_LIMIT: everything binned
        (made_binned, blob(small)),  # one side binned: the other goes into bins
        (blob(small), made_binned),
        (made_binned, made_binned),
        (blob({}), blob(small)),
        (None, blob(small)),
        (blob(small), None),
    ]
    try:
        for old, new in cases:
            merged = await store.scalar("SELECT pipelines_merge(?, ?)", (old, new))
            assert decoded(merged) == decoded(_merge_blobs(old, new))
    finally:
        await store.close()


# -- alarms ----------------------------------------------------------------------------


async def test_of_two_runners_moving_one_alarm_one_wins(postgres_url: str) -> None:
    first, second = runners = await opened(AlarmStore, postgres_url, 2)
    try:
        row = ("a", "metric", "{}", "INSUFFICIENT_DATA", "Unchecked", None, T0)
        await first.save([row])
        await second.save([row])  # declared by both: one row
        moves = [
            [("ALARM", f"by {who}", None, T0 + 60, "a", "INSUFFICIENT_DATA", T0)]
            for who in ("first", "second")
        ]
        history = [[("a", T0 + 60, "StateUpdate", f"by {who}", "{}")] for who in ("1", "2")]
        lost = await asyncio.gather(
            first.save_transitions(moves[0], history[0], 0),
            second.save_transitions(moves[1], history[1], 0),
        )
        assert sorted(lost) == [[], ["a"]]
        [(state, reason, _, updated)] = [row[1:] for row in await second.states()]
        winner = "first" if lost[0] == [] else "second"
        assert (state, reason, updated) == ("ALARM", f"by {winner}", T0 + 60)
        assert len(await first.history("a", 10)) == 1  # one transition recorded
        # A runner re-declaring the alarm keeps the state the other moved it to.
        await second.save([row])
        assert [r[1] for r in await first.states()] == ["ALARM"]
    finally:
        await closed(runners)


async def test_runners_rolling_up_at_once_count_each_second_once(postgres_url: str) -> None:
    clock = ManualClock(T0 + 30)
    runners = await opened(MetricStore, postgres_url, 2, clock)
    try:
        for second in range(1, 31):
            runners[0].put_metric_data(
                "Plant", "Heat", value=second, timestamp=T0 + second, storage_resolution=1
            )
        await runners[0].flush()
        await clock.advance(4 * 3_600)
        await asyncio.gather(*(store.upkeep() for store in runners))
        rows = await runners[1].rows("SELECT time, count, sum, min, max FROM metric_data")
        assert rows == [(int(T0), 30.0, 465.0, 1.0, 30.0)]  # one minute, each second once
    finally:
        await closed(runners)


async def test_a_dead_runners_replay_is_taken_over_once_its_lease_ends(postgres_url: str) -> None:
    clock = ManualClock(T0 + 1000)
    runtime = cluster_runtime(postgres_url, "survivor", clock)
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "sink"}])
    await runtime.archives.create_archive("all")
    async with runtime:
        entries = [
            {"Source": "shop", "DetailType": "t", "Detail": json.dumps({"n": n}), "Time": T0 + n}
            for n in range(3)
        ]
        assert (await runtime.put_events(entries))["FailedEntryCount"] == 0
        await runtime.wait_until_idle()
        # A runner that started this replay died without letting it go.
        store = runtime.archives.store
        assert store is not None
        orphan = Replay("orphan", "all", "default", None, T0, T0 + 60, None, state="RUNNING")
        assert await store.create_replay(orphan.row(), "dead", clock.time() + LEASE)
        await clock.advance(LEASE / 2, quiet=lambda: asyncio.sleep(0.05))
        assert runtime.replays.running == 0  # its lease runs: it may be alive
        async with asyncio.timeout(10):
            while (await runtime.replays.describe("orphan"))["State"] != "COMPLETED":
                await clock.advance(LEASE / 2, quiet=lambda: asyncio.sleep(0.05))
        await runtime.wait_until_idle()
        sink = runtime.resource("sink")
        assert isinstance(sink, Recorder)
        replayed = [r.payload["detail"]["n"] for r in sink.received if "replay-name" in r.payload]
    assert replayed == [0, 1, 2]


def alarm_runtime(url: str, runner: str, clock: ManualClock) -> Runtime:
    runtime = Runtime(state_path=url, plugins=plugin_manager(), clock=clock, runner=runner)
    runtime.add_resource("alerts", "recorder", {})
    runtime.bus().put_rule("alarms", pattern={"source": ["aws.cloudwatch"]})
    return runtime


def moves(runtime: Runtime) -> list[tuple[str, str]]:
    sink = runtime.resource("alerts")
    assert isinstance(sink, Recorder)
    return [
        (r.payload["detail"]["previousState"]["value"], r.payload["detail"]["state"]["value"])
        for r in sink.received
    ]


async def test_a_transition_another_runner_made_meanwhile_is_not_announced_again(
    postgres_url: str,
) -> None:
    """Runner b sets an alarm's state while runner a, which evaluates the
    cluster's alarms, still holds the state it read: a's next verdict moves
    from a state that is gone, so it is dropped (not announced, not in the
    history), and a goes on from b's state."""
    clock = ManualClock(T0 + 5)
    a, b = (alarm_runtime(postgres_url, name, clock) for name in ("a", "b"))
    for runtime in (a, b):
        await runtime.bus().put_targets("alarms", [{"id": "t", "resource": "alerts"}])
        await runtime.alarms.put_metric_alarm(
            "hot",
            namespace="Plant",
            metric_name="Temperature",
            statistic="Maximum",
            period=60,
            evaluation_periods=1,
            threshold=80,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
        )

    async def quiet() -> None:
        async with asyncio.timeout(5):
            while not (a.alarms.idle and all(r._drained() for r in (a, b))):
                await asyncio.sleep(0.001)

    async with a:
        await quiet()  # a leads the alarms (it started first)
        async with b:
            await b.alarms.set_alarm_state("hot", "ALARM", "set by hand")
            await b.wait_until_idle()
            await clock.advance(55, quiet=quiet)  # a evaluates: OK, from its INSUFFICIENT_DATA
            assert moves(a) == []
            assert a.alarms.describe("hot")["StateValue"] == "ALARM"  # b's, read back
            await clock.advance(60, quiet=quiet)  # from ALARM to OK: announced once
            history = await a.alarms.history("hot")
    assert moves(b) == [("INSUFFICIENT_DATA", "ALARM")]
    assert moves(a) == [("ALARM", "OK")]
    assert [h["HistorySummary"] for h in history] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from INSUFFICIENT_DATA to ALARM",
    ]
