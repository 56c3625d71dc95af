"""The log_group target in a running bus: events become log events (stream
from a template, timestamp from the event), metric filters feed an alarm,
subscription filters forward CloudWatch payloads, and the config owns the
filters it names."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from pipelines.errors import ConfigError
from pipelines.runtime import Runtime
from plugins.logs.store import LogStore
from plugins.logs.target import LogGroupType

from .helpers import advance, eventually
from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()
T0 = 1_700_000_040.0  # 2023-11-14T22:14:00Z, a minute boundary


def entry(level: str, app: str = "shop", **detail: Any) -> dict[str, Any]:
    return {
        "Source": app,
        "DetailType": "log",
        "Detail": json.dumps({"level": level, "app": app, **detail}),
    }


def runtime_with(state: Path, clock: ManualClock | None = None, **settings: Any) -> Runtime:
    runtime = Runtime(state_path=state, plugins=PLUGINS, clock=clock)
    runtime.add_resource("app-logs", "log_group", settings)
    runtime.bus().put_rule("everything", pattern={"detail-type": ["log"]})
    return runtime


async def logged(
    state: Path, group: str = "app-logs", clock: ManualClock | None = None
) -> list[dict[str, Any]]:
    """What the group holds, as seen at ``clock``'s time (retention hides older events)."""
    async with await LogStore.open(state, clock) as store:
        return (await store.filter_log_events(group))["events"]


async def test_events_become_log_events_in_the_rules_stream(state_location: str) -> None:
    state = state_location
    clock = ManualClock(T0)
    runtime = runtime_with(state, clock, retention_days=7)
    await runtime.bus().put_targets(
        "everything", [{"id": "t", "resource": "app-logs", "input_path": "$.detail"}]
    )
    async with runtime:
        await runtime.put_events([entry("INFO", n=n) for n in range(100)])
        await runtime.wait_until_idle()
    assert await logged(state) == []  # a week after 2023, all expired
    found = await logged(state, clock=clock)
    assert len(found) == 100
    assert {e["logStreamName"] for e in found} == {"everything"}  # the rule's name
    assert {e["timestamp"] for e in found} == {int(T0 * 1000)}  # the event's time
    assert sorted(json.loads(e["message"])["n"] for e in found) == list(range(100))
    async with LogStore.existing(state) as store:
        (group,) = await store.describe_log_groups()
    assert group["logGroupName"] == "app-logs" and group["retentionInDays"] == 7


async def test_the_stream_name_is_a_template_over_the_event(state_location: str) -> None:
    state = state_location
    runtime = runtime_with(state, log_group="/pipelines/apps", log_stream="<source>/<detail.level>")
    await runtime.bus().put_targets("everything", [{"id": "t", "resource": "app-logs"}])
    async with runtime:
        await runtime.put_events([entry("INFO"), entry("ERROR", app="cart"), entry("INFO")])
        await runtime.wait_until_idle()
    found = await logged(state, "/pipelines/apps")
    assert sorted(e["logStreamName"] for e in found) == ["cart/ERROR", "shop/INFO", "shop/INFO"]
    assert json.loads(found[0]["message"])["detail-type"] == "log"  # the whole event


async def test_an_event_without_the_template_field_goes_to_the_dead_letter(
    state_location: str,
) -> None:
    state = state_location
    runtime = runtime_with(state, log_stream="<detail.request_id>")
    runtime.add_resource("dlq", "recorder", {})
    await runtime.bus().put_targets(
        "everything", [{"id": "t", "resource": "app-logs", "dead_letter": "dlq"}]
    )
    async with runtime:
        await runtime.put_events([entry("INFO", request_id="r-1"), entry("INFO")])
        await runtime.wait_until_idle()
        dlq = runtime.resource("dlq")
        assert isinstance(dlq, Recorder)
        (dead,) = dlq.received
    assert dead.context.attributes["ERROR_CODE"] == "InvalidLogStream"
    assert "no value at detail.request_id" in dead.context.attributes["ERROR_MESSAGE"]
    assert [e["logStreamName"] for e in await logged(state)] == ["r-1"]


async def test_an_event_older_than_14_days_goes_to_the_dead_letter(state_location: str) -> None:
    state = state_location
    runtime = runtime_with(state)
    runtime.add_resource("dlq", "recorder", {})
    await runtime.bus().put_targets(
        "everything", [{"id": "t", "resource": "app-logs", "dead_letter": "dlq"}]
    )
    old = {**entry("INFO"), "Time": "2020-01-01T00:00:00Z"}
    async with runtime:
        await runtime.put_events([old, entry("INFO")])
        await runtime.wait_until_idle()
        dlq = runtime.resource("dlq")
        assert isinstance(dlq, Recorder)
        (dead,) = dlq.received
    assert dead.context.attributes["ERROR_CODE"] == "LogEventTooOld"
    assert len(await logged(state)) == 1


async def test_a_metric_filter_drives_an_alarm(state_location: str) -> None:
    """More than 5 ERROR lines in a minute: the alarm goes off."""
    state = state_location
    errors = {
        "pattern": '{ $.level = "ERROR" }',
        "metric_name": "ErrorCount",
        "metric_namespace": "Shop/Logs",
        "metric_value": 1,
        "unit": "Count",
    }
    runtime = runtime_with(state, ManualClock(T0 + 5), metric_filters={"errors": errors})
    runtime.add_resource("alerts", "recorder", {})
    runtime.bus().put_rule("alarms", pattern={"source": ["aws.cloudwatch"]})
    await runtime.bus().put_targets(
        "everything", [{"id": "t", "resource": "app-logs", "input_path": "$.detail"}]
    )
    await runtime.bus().put_targets("alarms", [{"id": "t", "resource": "alerts"}])
    await runtime.alarms.put_metric_alarm(
        "too-many-errors",
        {
            "namespace": "Shop/Logs",
            "metric_name": "ErrorCount",
            "statistic": "Sum",
            "period": 60,
            "evaluation_periods": 1,
            "threshold": 5,
            "comparison_operator": "GreaterThanThreshold",
            "treat_missing_data": "notBreaching",
        },
    )
    async with runtime:
        # Five errors in the first minute: not more than 5.
        await runtime.put_events([entry("ERROR") for _ in range(5)] + [entry("INFO")])
        await runtime.wait_until_idle()
        await advance(runtime, 60)
        assert runtime.alarms.describe_alarms(["too-many-errors"])[0]["StateValue"] == "OK"
        # Six in the next: ALARM, as an event on the bus.
        await runtime.put_events([entry("ERROR") for _ in range(6)])
        await runtime.wait_until_idle()
        await advance(runtime, 60)
        (alarm,) = runtime.alarms.describe_alarms(["too-many-errors"])
        assert alarm["StateValue"] == "ALARM"
        assert "[6.0 (14/11/23 22:15:00)]" in alarm["StateReason"]
        alerts = runtime.resource("alerts")
        assert isinstance(alerts, Recorder)
        states = [r.payload["detail"]["state"]["value"] for r in alerts.received]
        assert states[-1] == "ALARM"


async def test_a_subscription_filter_forwards_matches_in_batches(state_location: str) -> None:
    state = state_location
    subscriptions = {"errors": {"pattern": "ERROR", "target": "sink", "poll": 0.05}}
    runtime = runtime_with(state, log_stream="<source>", subscription_filters=subscriptions)
    runtime.add_resource("sink", "recorder", {})
    await runtime.bus().put_targets(
        "everything",
        [
            {
                "id": "t",
                "resource": "app-logs",
                "input_transformer": {
                    "input_paths_map": {"level": "$.detail.level", "n": "$.detail.n"},
                    "input_template": '"<level> request <n>"',
                },
            }
        ],
    )
    async with runtime:
        await runtime.put_events(
            [entry("ERROR" if n % 3 == 0 else "INFO", app="web", n=n) for n in range(30)]
        )
        await runtime.wait_until_idle()
        sink = runtime.resource("sink")
        assert isinstance(sink, Recorder)

        def forwarded() -> list[str]:
            return [e["message"] for r in sink.received for e in r.payload["logEvents"]]

        await eventually(lambda: len(forwarded()) == 10)
    payload = sink.received[0].payload
    assert payload["messageType"] == "DATA_MESSAGE"
    assert payload["logGroup"] == "app-logs" and payload["logStream"] == "web"
    assert payload["subscriptionFilters"] == ["errors"]
    assert sorted(forwarded()) == sorted(f"ERROR request {n}" for n in range(0, 30, 3))
    assert len(sink.received) < 10  # batched, not one delivery per event


async def test_a_failing_subscription_target_is_retried_without_loss(state_location: str) -> None:
    state = state_location
    subscriptions = {"all": {"target": "flaky", "poll": 0.05}}
    runtime = runtime_with(state, subscription_filters=subscriptions)
    runtime.add_resource("flaky", "recorder", {"fail": 1})
    await runtime.bus().put_targets("everything", [{"id": "t", "resource": "app-logs"}])
    async with runtime:
        await runtime.put_events([entry("INFO", n=n) for n in range(5)])
        await runtime.wait_until_idle()
        flaky = runtime.resource("flaky")
        assert isinstance(flaky, Recorder)

        def forwarded() -> list[str]:
            return [e["message"] for r in flaky.received for e in r.payload["logEvents"]]

        await eventually(lambda: len(forwarded()) >= 5)
    assert sorted(json.loads(m)["detail"]["n"] for m in forwarded()) == [0, 1, 2, 3, 4]
    assert len(flaky.attempts) >= 2  # the first attempt failed and was retried


async def test_the_config_owns_the_filters_it_names(state_location: str) -> None:
    state = state_location
    async with await LogStore.open(state) as store:
        await store.create_log_group("app-logs")
        await store.put_subscription_filter("app-logs", "old", "", "somewhere")
        await store.put_retention_policy("app-logs", 30)
    # Not named: left alone (and the retention too).
    runtime = runtime_with(state)
    async with runtime:
        pass
    async with LogStore.existing(state) as store:
        assert [f["filterName"] for f in await store.describe_subscription_filters("app-logs")] == [
            "old"
        ]
        assert (await store.describe_log_groups())[0]["retentionInDays"] == 30
    # Named: the config's list is the list.
    runtime = runtime_with(state, subscription_filters={})
    async with runtime:
        pass
    async with LogStore.existing(state) as store:
        assert await store.describe_subscription_filters("app-logs") == []


async def test_index_fields_in_the_config_become_the_groups_index_policy(
    state_location: str,
) -> None:
    state = state_location
    clock = ManualClock(T0)
    runtime = runtime_with(state, clock, index_fields=["level", "app"])
    await runtime.bus().put_targets(
        "everything", [{"id": "t", "resource": "app-logs", "input_path": "$.detail"}]
    )
    async with runtime:
        await runtime.put_events([entry("ERROR", n=1), entry("INFO", n=2)])
        await runtime.wait_until_idle()
    async with await LogStore.open(state, clock) as store:
        (policy,) = (await store.describe_index_policies(["app-logs"]))["indexPolicies"]
        assert json.loads(policy["policyDocument"]) == {"Fields": ["level", "app"]}
        if store.dialect.name == "sqlite":  # only SQLite's pushdown reads the value columns
            found = await store.rows("SELECT f0 FROM log_events ORDER BY f0")
            assert found == [("ERROR",), ("INFO",)]
        result = await store.query("app-logs", 'filter level = "ERROR" | stats count() as n')
        assert result.rows == [{"n": 1}]


@pytest.mark.parametrize(
    ("settings", "where", "message"),
    [
        ({"retention_days": 10}, "target g.retention_days", "is not one of"),
        ({"index_fields": ["a", "a"]}, "target g.index_fields", "named twice"),
        ({"log_group": "a b"}, "target g.log_group", "not valid"),
        ({"log_stream": "a:<source>"}, "target g.log_stream", "no ':' or '*'"),
        ({"log_stream": "<>"}, "target g.log_stream", "is not a path"),
        ({"retention": 7}, "target g.retention", "did you mean 'retention_days'"),
        (
            {
                "metric_filters": {
                    "m": {"pattern": "{ $.a = ", "metric_name": "M", "metric_namespace": "N"}
                }
            },
            "target g.metric_filters.m.pattern",
            "Invalid filter pattern",
        ),
        (
            {"metric_filters": {"m": {"metric_namespace": "N"}}},
            "target g.metric_filters.m.metric_name",
            "is required",
        ),
        (
            {"subscription_filters": {k: {"target": "x"} for k in "abc"}},
            "target g.subscription_filters",
            "at most 2",
        ),
        (
            {"subscription_filters": {"a": {"pattern": "x"}}},
            "target g.subscription_filters.a.target",
            "must name the resource",
        ),
    ],
)
def test_config_errors_name_the_setting(settings: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LogGroupType().create("g", settings)
    assert caught.value.where == where
    assert message in caught.value.message


async def test_a_log_group_can_subscribe_another_log_group(state_location: str) -> None:
    """A subscription's payload is no bus event: it has no time (now is used)
    and its default stream is named after the source group, ':' made '/'."""
    state = state_location
    clock = ManualClock(T0)
    subscriptions = {"copy": {"pattern": "ERROR", "target": "archive", "poll": 0.05}}
    runtime = runtime_with(state, clock, subscription_filters=subscriptions)
    runtime.add_resource("archive", "log_group", {})
    await runtime.bus().put_targets(
        "everything", [{"id": "t", "resource": "app-logs", "input_path": "$.detail.level"}]
    )
    async with runtime:
        await runtime.put_events([entry("ERROR"), entry("INFO"), entry("ERROR")])
        await runtime.wait_until_idle()
        async with await LogStore.open(state, clock) as store:

            async def copied() -> list[dict[str, Any]]:
                return (await store.filter_log_events("archive"))["events"]

            for _ in range(500):
                if len(await copied()) == 2:
                    break
                await asyncio.sleep(0.01)
            found = await copied()
    assert {e["logStreamName"] for e in found} == {"logs/app-logs"}
    assert {e["timestamp"] for e in found} == {int(T0 * 1000)}
    payloads = [json.loads(e["message"]) for e in found]
    assert [m["message"] for p in payloads for m in p["logEvents"]] == ["ERROR", "ERROR"]
