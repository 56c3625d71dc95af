"""Alarms in a running pipeline: the bus's own metrics raising an alarm, its
state-change events routed by rules, actions, composites, set_alarm_state,
history and restarts, on a real SQLite file and on a real PostgreSQL
(``state_location``), with the injectable clock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pipelines.alarms import action_rule_name, read_alarm_history, read_alarms
from pipelines.clock import ManualClock
from pipelines.errors import ConfigError, MetricError
from pipelines.metrics import MetricStore
from pipelines.runtime import Runtime
from pipelines.store import SQLiteConnection

from . import helpers
from .helpers import sql
from .recorder import Recorder, plugin_manager

T0 = 1_700_000_040.0  # 2023-11-14T22:14:00Z, a minute boundary
FAILING = {
    "namespace": "Pipelines/Events",
    "metric_name": "FailedInvocations",
    "dimensions": {"EventBusName": "default", "RuleName": "orders"},
    "statistic": "Sum",
    "period": 60,
    "evaluation_periods": 1,
    "threshold": 1,
    "comparison_operator": "GreaterThanOrEqualToThreshold",
    "treat_missing_data": "notBreaching",
}


def pipeline(state: Path | str, clock: ManualClock) -> Runtime:
    """Rule "orders" delivers to a target that always fails; rule "alarms"
    routes every alarm state change to the recorder "alerts"."""
    runtime = Runtime(state_path=state, plugins=plugin_manager(), clock=clock)
    runtime.add_resource("broken", "recorder", {"fail": -1, "retryable": False})
    runtime.add_resource("alerts", "recorder", {})
    runtime.add_resource("pager", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("orders", pattern={"source": ["shop"]})
    bus.put_rule("alarms", pattern={"source": ["aws.cloudwatch"]})
    return runtime


async def advance(runtime: Runtime, seconds: float) -> None:
    """``helpers.advance`` once the runtime's alarm task waits for its first
    tick: on PostgreSQL that task first takes the cluster's alarms role (a
    round trip to the server), and ticks the clock passed before would not
    be evaluated."""
    async with asyncio.timeout(5):
        while not runtime.alarms.idle:
            await asyncio.sleep(0.001)
    await helpers.advance(runtime, seconds)


async def wire(runtime: Runtime) -> None:
    await runtime.bus().put_targets("orders", [{"id": "t", "resource": "broken"}])
    await runtime.bus().put_targets("alarms", [{"id": "t", "resource": "alerts"}])


def received(runtime: Runtime, name: str = "alerts") -> list[dict[str, Any]]:
    sink = runtime.resource(name)
    assert isinstance(sink, Recorder)
    return [r.payload for r in sink.received]


def states(runtime: Runtime, name: str = "alerts") -> list[tuple[str, str, str]]:
    return [
        (
            e["detail"]["alarmName"],
            e["detail"]["previousState"]["value"],
            e["detail"]["state"]["value"],
        )
        for e in received(runtime, name)
    ]


async def orders(runtime: Runtime, count: int) -> None:
    entries = [{"Source": "shop", "DetailType": "order", "Detail": "{}"} for _ in range(count)]
    assert (await runtime.put_events(entries))["FailedEntryCount"] == 0
    await runtime.wait_until_idle()


async def test_failed_invocations_raise_an_alarm_routed_as_an_event(state_location: str) -> None:
    runtime = pipeline(state_location, ManualClock(T0 + 5))
    await wire(runtime)
    await runtime.alarms.put_metric_alarm("orders-failing", FAILING, description="orders fail")
    async with runtime:
        assert runtime.alarms.describe_alarms(["orders-failing"])[0]["StateReason"] == (
            "Unchecked: Initial alarm creation"
        )
        await orders(runtime, 3)
        await advance(runtime, 55)  # the minute ends: evaluated at 22:15:00
        assert states(runtime) == [("orders-failing", "INSUFFICIENT_DATA", "ALARM")]
        event = received(runtime)[0]
        assert (event["source"], event["detail-type"]) == (
            "aws.cloudwatch",
            "CloudWatch Alarm State Change",
        )
        assert event["resources"] == [
            "arn:aws:cloudwatch:us-east-1:000000000000:alarm:orders-failing"
        ]
        assert event["time"] == "2023-11-14T22:15:00Z"
        state = event["detail"]["state"]
        assert state["reason"] == (
            "Threshold Crossed: 1 out of the last 1 datapoints [3.0 (14/11/23 22:14:00)] was"
            " greater than or equal to the threshold (1.0) (minimum 1 datapoint for"
            " INSUFFICIENT_DATA -> ALARM transition)."
        )
        data = json.loads(state["reasonData"])
        assert data["statistic"] == "Sum" and data["period"] == 60
        assert data["startDate"] == "2023-11-14T22:14:00.000+0000"
        assert data["recentDatapoints"] == [3.0] and data["threshold"] == 1.0
        assert data["evaluatedDatapoints"] == [
            {"timestamp": "2023-11-14T22:14:00.000+0000", "value": 3.0}
        ]
        metric = event["detail"]["configuration"]["metrics"][0]["metricStat"]
        assert metric["metric"]["name"] == "FailedInvocations" and metric["stat"] == "Sum"
        assert event["detail"]["configuration"]["description"] == "orders fail"
        # The failed minute stays the newest real point of the 3-period range
        # (1 + max(1 // 3, 2)) until it leaves it: then all are missing, and
        # notBreaching gives OK.
        await advance(runtime, 120)
        assert len(received(runtime)) == 1
        await advance(runtime, 60)
        assert states(runtime)[1:] == [("orders-failing", "ALARM", "OK")]
        assert received(runtime)[1]["detail"]["state"]["reason"] == (
            "Threshold Crossed: no datapoints were received for 3 periods and 1 missing"
            " datapoints were treated as [NonBreaching]."
        )
        history = await runtime.alarms.describe_alarm_history("orders-failing")
    assert [h["HistorySummary"] for h in history] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from INSUFFICIENT_DATA to ALARM",
    ]
    # The statistics the alarm read are in the store, as the CLI reads them.
    [(total,)] = sql(
        state_location,
        "SELECT sum(d.sum) FROM metric_data d JOIN metric_series s ON s.id = d.series"
        " WHERE s.name = 'FailedInvocations'",
    )
    assert total == 3


async def test_actions_fire_on_transitions_only(state_location: str) -> None:
    runtime = pipeline(state_location, ManualClock(T0 + 5))
    await wire(runtime)
    await runtime.alarms.put_metric_alarm(
        "orders-failing", FAILING, evaluation_periods=2, actions={"alarm": ["pager"]}
    )
    rule = action_rule_name("orders-failing", "ALARM")
    assert runtime.bus().describe_rule(rule)["State"] == "ENABLED"
    async with runtime:
        # Three failing minutes: OK after the first (one breaching point and
        # one notBreaching fill make 1 of 2), ALARM after the second, and
        # nothing new after the third.
        for _ in range(3):
            await orders(runtime, 2)
            await advance(runtime, 60)
        await advance(runtime, 300)  # and back to OK: no action for OK
        assert [s for _, _, s in states(runtime)] == ["OK", "ALARM", "OK"]
        assert states(runtime, "pager") == [("orders-failing", "OK", "ALARM")]
        # Updating an alarm that has actions keeps them (the targets it had are
        # compared with the wanted ones), and disabling them disables the rule.
        await runtime.alarms.put_metric_alarm(
            "orders-failing",
            FAILING,
            evaluation_periods=2,
            actions={"alarm": ["pager"]},
            actions_enabled=False,
        )
        assert runtime.bus().describe_rule(rule)["State"] == "DISABLED"
        assert [t["id"] for t in runtime.bus().list_targets_by_rule(rule)] == ["action-1"]
        # Dropping the actions drops the rule.
        await runtime.alarms.put_metric_alarm("orders-failing", FAILING)
        assert all(r["Name"] != rule for r in runtime.bus().list_rules())
        assert runtime.alarms.describe_alarms(["orders-failing"])[0]["StateValue"] == "OK"


async def test_composite_alarms_follow_their_children_at_once(state_location: str) -> None:
    runtime = pipeline(state_location, ManualClock(T0 + 5))
    await wire(runtime)
    await runtime.alarms.put_metric_alarm("a", FAILING)
    await runtime.alarms.put_metric_alarm("b", FAILING, threshold=100)
    await runtime.alarms.put_composite_alarm("both", "ALARM(a) AND NOT OK(b)")
    await runtime.alarms.put_composite_alarm("either", 'ALARM("a") OR ALARM(both)')
    with pytest.raises(ConfigError, match="loop: both -> either -> both"):
        await runtime.alarms.put_composite_alarm("both", "ALARM(either)")
    with pytest.raises(ConfigError, match="no alarm named 'c'"):
        await runtime.alarms.put_composite_alarm("x", "ALARM(c)")
    with pytest.raises(ConfigError, match="at position 7"):
        await runtime.alarms.put_composite_alarm("x", "ALARM(a")
    async with runtime:
        await advance(runtime, 55)  # first evaluation: children OK (notBreaching)
        assert sorted(states(runtime)) == [
            ("a", "INSUFFICIENT_DATA", "OK"),
            ("b", "INSUFFICIENT_DATA", "OK"),
            ("both", "INSUFFICIENT_DATA", "OK"),
            ("either", "INSUFFICIENT_DATA", "OK"),
        ]
        first = {e["detail"]["alarmName"]: e for e in received(runtime)}
        assert first["both"]["detail"]["state"]["reason"] == (
            "arn:aws:cloudwatch:us-east-1:000000000000:alarm:both was created and its alarm rule"
            " evaluates to OK"
        )
        assert first["both"]["detail"]["configuration"]["alarmRule"] == "ALARM(a) AND NOT OK(b)"
        await runtime.alarms.set_alarm_state("a", "ALARM", "testing the pager")
        await runtime.wait_until_idle()
        assert states(runtime)[4:] == [("a", "OK", "ALARM"), ("either", "OK", "ALARM")]
        either = received(runtime)[5]["detail"]["state"]
        assert either["reason"] == (
            "arn:aws:cloudwatch:us-east-1:000000000000:alarm:a transitioned to ALARM at"
            " Tuesday 14 November, 2023 22:15:00 UTC"
        )
        assert json.loads(either["reasonData"])["triggeringAlarms"][0]["state"]["value"] == "ALARM"
        assert received(runtime)[4]["detail"]["state"]["reason"] == "testing the pager"
        # Until the next evaluation only: a goes back to OK, and either with it.
        await advance(runtime, 60)
        assert states(runtime)[6:] == [("a", "ALARM", "OK"), ("either", "ALARM", "OK")]
        with pytest.raises(MetricError, match="composite alarm both"):
            await runtime.alarms.delete_alarms(["b"])
        with pytest.raises(MetricError, match="StateValue"):
            await runtime.alarms.set_alarm_state("a", "RED", "no")
        with pytest.raises(MetricError, match="InvalidFormat"):
            await runtime.alarms.set_alarm_state("a", "OK", "bad data", "{not json")


async def test_state_and_history_survive_a_restart(state_location: str) -> None:
    clock = ManualClock(T0 + 5)
    runtime = pipeline(state_location, clock)
    await wire(runtime)
    await runtime.alarms.put_metric_alarm("orders-failing", FAILING)
    async with runtime:
        await orders(runtime, 1)
        await advance(runtime, 55)
        assert [s for _, _, s in states(runtime)] == ["ALARM"]
    again = pipeline(state_location, clock)
    await wire(again)
    await again.alarms.put_metric_alarm("orders-failing", FAILING)
    async with again:
        assert again.alarms.describe_alarms()[0]["StateValue"] == "ALARM"
        await advance(again, 60)  # still the newest real point: no transition
        assert received(again) == []
    stored = await read_alarms(state_location)
    assert [(a["AlarmName"], a["StateValue"], a["Threshold"]) for a in stored] == [
        ("orders-failing", "ALARM", 1.0)
    ]
    history = await read_alarm_history(state_location, "orders-failing")
    assert len(history) == 1 and history[0]["HistoryItemType"] == "StateUpdate"
    # An alarm no longer declared is gone at the next start; its history stays.
    gone = pipeline(state_location, clock)
    async with gone:
        assert gone.alarms.describe_alarms() == []
    assert await read_alarms(state_location) == []
    assert len(await read_alarm_history(state_location)) == 1


async def test_short_periods_are_evaluated_every_ten_seconds(state_location: str) -> None:
    runtime = pipeline(state_location, ManualClock(T0 + 1))
    await wire(runtime)
    await runtime.alarms.put_metric_alarm(
        "hot",
        namespace="Plant",
        metric_name="Temperature",
        statistic="Maximum",
        period=10,
        evaluation_periods=2,
        threshold=80,
        comparison_operator="GreaterThanThreshold",
    )
    async with runtime:
        for offset in (1, 2, 11, 12):  # two breaching 10-second periods
            runtime.put_metric_data(
                "Plant",
                "Temperature",
                value=90 + offset,
                timestamp=T0 + offset,
                storage_resolution=1,
            )
        await advance(runtime, 19)  # 22:14:20
        # At 22:14:10 one breaching point is the newest of the range, and the
        # second newest is missing: OK (no premature alarm); at 22:14:20 two.
        assert states(runtime) == [("hot", "INSUFFICIENT_DATA", "OK"), ("hot", "OK", "ALARM")]
        assert received(runtime)[1]["time"] == "2023-11-14T22:14:20Z"
        runtime.put_metric_data("Plant", "Temperature", value=20, storage_resolution=1)
        runtime.put_metric_data(
            "Plant", "Temperature", value=20, timestamp=T0 + 31, storage_resolution=1
        )
        await advance(runtime, 20)  # 22:14:40: the two newest periods are cool
        assert states(runtime)[2:] == [("hot", "ALARM", "OK")]
        assert runtime.alarms.cycles == 4


async def test_many_alarms_share_one_read(state_location: str) -> None:
    runtime = pipeline(state_location, ManualClock(T0 + 5))
    await wire(runtime)
    for n in range(50):
        await runtime.alarms.put_metric_alarm(
            f"load-{n}",
            namespace="Fleet",
            metric_name="Load",
            dimensions={"Host": f"h{n}"},
            period=60,
            evaluation_periods=1,
            threshold=n,
            comparison_operator="GreaterThanThreshold",
        )
    async with runtime:
        for n in range(50):
            runtime.put_metric_data("Fleet", "Load", {"Host": f"h{n}"}, value=25)
        await advance(runtime, 55)
        alarmed = sorted(
            int(a["AlarmName"][5:]) for a in runtime.alarms.describe_alarms(state="ALARM")
        )
        assert alarmed == list(range(25))
        assert runtime.alarms.evaluated == 50


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"period": 45}, "alarm x.period"),
        ({"evaluation_periods": 0}, "alarm x.evaluation_periods"),
        ({"datapoints_to_alarm": 2}, "alarm x.datapoints_to_alarm"),
        ({"evaluation_periods": 1441}, "alarm x.evaluation_periods"),
        ({"comparison_operator": "Above"}, "alarm x.comparison_operator"),
        ({"treat_missing_data": "zero"}, "alarm x.treat_missing_data"),
        ({"statistic": "Median"}, "alarm x.statistic"),
        ({"threshold": "high"}, "alarm x.threshold"),
        ({"threshold": float("nan")}, "alarm x.threshold"),
        ({"threshold": float("inf")}, "alarm x.threshold"),
        ({"threshold": 10**400}, "alarm x.threshold"),
        ({"statistic": 5}, "alarm x.statistic"),
        ({"statistic": ["Sum"]}, "alarm x.statistic"),
        ({"comparison_operator": ["GreaterThanThreshold"]}, "alarm x.comparison_operator"),
        ({"comparison_operator": {}}, "alarm x.comparison_operator"),
        ({"dimensions": {1: "x", "a": "y"}}, "alarm x.dimensions"),
        ({"actions": {"alarm": ["nowhere"]}}, "alarm x actions"),
        ({"actions": {"red": ["pager"]}}, "alarm x.actions.red"),
        ({"color": "red"}, "alarm x.color"),
    ],
)
async def test_bad_alarm_declarations_name_the_setting(
    state_location: str, change: dict[str, Any], where: str
) -> None:
    runtime = pipeline(state_location, ManualClock(T0))
    with pytest.raises((ConfigError, LookupError)) as caught:
        await runtime.alarms.put_metric_alarm("x", {**FAILING, **change})
    assert where in str(caught.value)
    assert runtime.alarms.names() == []


async def test_set_state_on_a_composite_holds_and_moving_bus_moves_the_actions(
    state_location: str,
) -> None:
    runtime = pipeline(state_location, ManualClock(T0 + 5))
    runtime.create_bus("ops")
    await wire(runtime)
    await runtime.alarms.put_metric_alarm("a", FAILING)
    long_name = "a-very-long-alarm-name-that-goes-on-and-on-and-on"
    await runtime.alarms.put_composite_alarm(
        long_name, "ALARM(a)", actions={"insufficient_data": ["pager"], "alarm": ["pager"]}
    )
    rule = action_rule_name(long_name, "INSUFFICIENT_DATA")
    assert len(rule) <= 64 and runtime.bus().describe_rule(rule)["State"] == "ENABLED"
    async with runtime:
        await advance(runtime, 55)
        await runtime.alarms.set_alarm_state(long_name, "ALARM", "drill")
        await runtime.wait_until_idle()
        # Not undone by its own rule at once: until the next evaluation.
        assert runtime.alarms.describe_alarms([long_name])[0]["StateValue"] == "ALARM"
        assert states(runtime, "pager")[-1] == (long_name, "OK", "ALARM")
        await runtime.alarms.put_composite_alarm(
            long_name, "ALARM(a)", bus="ops", actions={"ok": ["pager"]}
        )
        assert [r["Name"] for r in runtime.bus().list_rules()] == ["alarms", "orders"]
        assert [r["Name"] for r in runtime.bus("ops").list_rules()] == [
            action_rule_name(long_name, "OK")
        ]
        await runtime.alarms.delete_alarms([long_name])
        assert runtime.bus("ops").list_rules() == []
        await runtime.delete_bus("ops")  # nothing of the alarm is left on it


async def test_a_failed_flush_keeps_its_data_and_does_not_confuse_metrics(
    tmp_path: Path,
) -> None:
    # SQLite only: another connection holds SQLite's write lock.
    clock = ManualClock(T0)
    store = await MetricStore.open(tmp_path / "state.db", clock)
    blocker = sqlite3.connect(tmp_path / "state.db", timeout=0)
    try:
        assert isinstance(store.connection, SQLiteConnection)
        await store.connection.execute("PRAGMA busy_timeout=0")
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        store.put_metric_data("Shop", "A", value=1, timestamp=T0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.flush()
        blocker.rollback()
        store.put_metric_data("Shop", "B", value=1000, timestamp=T0)
        await store.flush()
        query = {"start": T0, "end": T0 + 60, "period": 60, "statistics": ["Sum"]}
        a = await store.get_metric_statistics("Shop", "A", **query)
        b = await store.get_metric_statistics("Shop", "B", **query)
        assert [p["Sum"] for p in a["Datapoints"]] == [1]
        assert [p["Sum"] for p in b["Datapoints"]] == [1000]
        # Counts of zero measured nothing: no datapoint (its Minimum would be inf).
        store.put_metric_data("Shop", "C", values=[5, 6], counts=[0, 0], timestamp=T0)
        assert (await store.get_metric_statistics("Shop", "C", **query))["Datapoints"] == []
    finally:
        blocker.close()
        await store.close()
