"""The console's own pages, over the runtime's public parts: rules and their
targets with live rates, a target's recent failures, alarms (chart data and
history), archives and replays, the pattern tester, the live tap's page.

Each function returns the HTML of a page's body or of a part htmx swaps in;
``pipelines.console.app`` routes requests to them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import orjson

from pipelines import metrics as m
from pipelines.bus import Bus
from pipelines.console import alarmchart
from pipelines.console.host import ConsoleHost
from pipelines.console.html import cell, esc, facts, notice, number, table, url, when
from pipelines.console.rates import Key, Rates
from pipelines.errors import PatternError, PipelinesError

#: The rule counters the rules page shows, with their column titles.
RULE_COUNTERS = (
    (m.MATCHED_EVENTS, "Matched"),
    (m.INVOCATIONS, "Invocations"),
    (m.FAILED_INVOCATIONS, "Failed"),
    (m.DEAD_LETTER_INVOCATIONS, "Dead-lettered"),
)
REFRESH = "every 2s"


def rules_page() -> str:
    return (
        "<p class=hint>Counts since the runner started; rates per second over the last"
        " ten seconds. Refreshed every two seconds.</p>"
        f'<div id=rules hx-get="{url("/rules.part")}" hx-trigger="load, {REFRESH}">'
        f"{loading()}</div>"
    )


def loading() -> str:
    return "<p class=hint>loading…</p>"


def rules_part(host: ConsoleHost, rates: Rates) -> str:
    buses = sorted(host.buses(), key=lambda bus: bus.name)
    values: dict[Key, float] = {}
    for bus in buses:
        for rule in bus.list_rules():
            for metric, _ in RULE_COUNTERS:
                values[(metric, bus.name, rule["Name"])] = host.counters.value(
                    metric, EventBusName=bus.name, RuleName=rule["Name"]
                )
    per_second = rates.sample(time.monotonic(), values)
    parts = []
    for bus in buses:
        rows = [_rule_row(host, bus, rule, values, per_second) for rule in bus.list_rules()]
        columns = ["Rule", "State", "Pattern or schedule"]
        columns += [title for _, title in RULE_COUNTERS] + ["Targets"]
        parts.append(
            f"<section class=bus><h2>Bus {esc(bus.name)}</h2>"
            + table(columns, rows, empty="no rules on this bus", classes="rules")
            + "</section>"
        )
    return "".join(parts)


def _rule_row(
    host: ConsoleHost,
    bus: Bus,
    rule: Mapping[str, Any],
    values: Mapping[Key, float],
    per_second: Mapping[Key, float],
) -> list[str]:
    name = rule["Name"]
    what = rule.get("EventPattern") or rule.get("ScheduleExpression") or ""
    row = [
        f'<a href="{url("/patterns", bus=bus.name, rule=name)}" title="test its pattern">'
        f"{esc(name)}</a>",
        f'<span class="state {esc(rule["State"]).lower()}">{esc(rule["State"])}</span>'
        + _toggle(bus.name, name, rule["State"]),
        f"<code>{esc(what)}</code>",
    ]
    for metric, _ in RULE_COUNTERS:
        key = (metric, bus.name, name)
        rate = per_second.get(key)
        shown = f" <small>{number(rate)}/s</small>" if rate is not None else ""
        row.append(
            f'<span class=count data-bus="{esc(bus.name)}" data-rule="{esc(name)}"'
            f' data-metric="{esc(metric)}">{number(values[key])}</span>{shown}'
        )
    row.append("".join(_target_badge(host, bus, name, t) for t in bus.rule_targets(name)))
    return row


def _toggle(bus: str, rule: str, state: str) -> str:
    """A button that disables an enabled rule, or enables a disabled one."""
    wanted = "DISABLED" if state == "ENABLED" else "ENABLED"
    label = "disable" if wanted == "DISABLED" else "enable"
    return (
        f'<form method=post action="{url("/rule")}" class=toggle>'
        f'<input type=hidden name=bus value="{esc(bus)}">'
        f'<input type=hidden name=rule value="{esc(rule)}">'
        f'<button type=submit name=state value="{wanted}" class=small>{label}</button></form>'
    )


def set_rule_state(host: ConsoleHost, bus: str, rule: str, state: str) -> None:
    """EnableRule or DisableRule (until the config is reloaded: a reload
    applies the config's state)."""
    if state == "ENABLED":
        host.bus(bus).enable_rule(rule)
    elif state == "DISABLED":
        host.bus(bus).disable_rule(rule)
    else:
        raise ValueError(f"a rule's state is ENABLED or DISABLED, not {state!r}")


def _target_badge(host: ConsoleHost, bus: Bus, rule: str, target: Any) -> str:
    delivery = bus.delivery(rule, target.id)
    link = url("/target", bus=bus.name, rule=rule, id=target.id)
    details = []
    kind = "ok"
    if delivery is not None:
        details.append(f"{delivery.stats.delivered} delivered")
        if delivery.queue:
            details.append(f"{len(delivery.queue)} queued")
        if delivery.in_flight:
            details.append(f"{len(delivery.in_flight)} in flight")
        if delivery.stats.waiting:
            details.append(f"{delivery.stats.waiting} retrying")
            kind = "warn"
        failures = host.deliverer.failures.recent(delivery)
        if failures:
            last = failures[-1]
            details.append(f"last failure {_ago(host, last.time)}: {last.code}")
            if host.clock.time() - last.time < 60:
                kind = "bad"
    suffix = f" <small>({esc(', '.join(details))})</small>" if details else ""
    return (
        f'<div class="target {kind}"><a href="{link}">{esc(target.id)}</a>'
        f" → {esc(target.resource)}{suffix}</div>"
    )


def _ago(host: ConsoleHost, moment: float) -> str:
    seconds = max(host.clock.time() - moment, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def target_page(host: ConsoleHost, bus_name: str, rule: str, target_id: str) -> str:
    return (
        f'<div hx-get="{url("/target.part", bus=bus_name, rule=rule, id=target_id)}"'
        f' hx-trigger="load, {REFRESH}">{loading()}</div>'
    )


def target_part(host: ConsoleHost, bus_name: str, rule: str, target_id: str) -> str:
    try:
        bus = host.bus(bus_name)
        declared = {t.id: t for t in bus.rule_targets(rule)}
    except PipelinesError as error:
        return notice(str(error), "error")
    target = declared.get(target_id)
    delivery = bus.delivery(rule, target_id)
    if target is None or delivery is None:
        return notice(f"rule {rule} on bus {bus_name} has no target {target_id}", "error")
    stats = delivery.stats
    shown = {
        "Bus": bus_name,
        "Rule": rule,
        "Resource": target.resource,
        "Dead-letter resource": target.dead_letter or "none (exhausted events are dropped)",
        "Maximum retry attempts": target.retry_policy.maximum_retry_attempts,
        "Maximum event age (s)": target.retry_policy.maximum_event_age,
        "Concurrency": delivery.concurrency,
        "Queued": len(delivery.queue),
        "In flight": len(delivery.in_flight),
        "Waiting to retry": stats.waiting,
        "Delivered": stats.delivered,
        "Mean time to delivery (s)": (
            round(stats.latency_sum / stats.delivered, 3) if stats.delivered else "–"
        ),
        "Failed attempts": stats.failed_attempts,
        "Dead-lettered": stats.dead_lettered,
        "Dropped": stats.dropped,
    }
    failures = host.deliverer.failures.recent(delivery)
    rows = [
        [esc(when(f.time)), esc(f.event_id), esc(f.attempt), esc(f.code), cell(f.message)]
        for f in reversed(failures)
    ]
    return (
        facts(shown)
        + f"<h2>Recent failures <small>(the last {host.deliverer.failures.kept})</small></h2>"
        + table(
            ["Time (UTC)", "Event", "Attempt", "Error", "Message"],
            rows,
            empty="no failed attempt since the runner started",
            classes="failures",
        )
    )


# -- alarms -------------------------------------------------------------------


def alarms_page(host: ConsoleHost) -> str:
    rows = []
    for alarm in host.alarms.describe_alarms():
        metric = alarm.get("MetricName")
        what = (
            f"{alarm.get('Namespace')} {metric} {alarm.get('ComparisonOperator')}"
            f" {number(alarm.get('Threshold'), 3)}"
            if metric
            else f"composite: {alarm.get('AlarmRule', '')}"
        )
        rows.append(
            [
                f'<a href="{url("/alarm", name=alarm["AlarmName"])}">{esc(alarm["AlarmName"])}</a>',
                f'<span class="state {esc(alarm["StateValue"]).lower()}">'
                f"{esc(alarm['StateValue'])}</span>",
                esc(what),
                esc(alarm.get("StateReason", "")),
            ]
        )
    return table(["Alarm", "State", "Condition", "Reason"], rows, empty="no alarms")


async def alarm_page(host: ConsoleHost, name: str) -> str:
    try:
        alarm = host.alarms.describe_alarms([name])[0]
    except PipelinesError as error:
        return notice(str(error), "error")
    history = await host.alarms.describe_alarm_history(name, 100)
    rows = [
        [esc(item["Timestamp"]), esc(item["HistoryItemType"]), esc(item["HistorySummary"])]
        for item in history
    ]
    chart = ""
    if "MetricName" in alarm:
        chart = (
            f'<figure class=chart data-chart="{url("/alarm.json", name=name)}">'
            "<figcaption>the metric per period, the threshold (dashed) and the time in ALARM"
            " (shaded)</figcaption></figure>"
        )
    shown: dict[str, Any] = {
        key: alarm[key]
        for key in (
            "StateValue",
            "StateReason",
            "Namespace",
            "MetricName",
            "Dimensions",
            "Statistic",
            "ExtendedStatistic",
            "Period",
            "EvaluationPeriods",
            "DatapointsToAlarm",
            "ComparisonOperator",
            "Threshold",
            "TreatMissingData",
            "AlarmRule",
        )
        if key in alarm
    }
    return (
        facts(shown)
        + chart
        + "<h2>History</h2>"
        + table(["Time", "Type", "Summary"], rows, empty="no history yet", classes="history")
    )


async def alarm_json(host: ConsoleHost, name: str) -> bytes:
    alarm = host.alarms.describe_alarms([name])[0]
    if "MetricName" not in alarm:
        raise PipelinesError(f"{name} is a composite alarm: it has no metric")
    period = int(alarm["Period"])
    end = host.clock.time()
    start = end - alarmchart.window(period)
    statistic = alarm.get("Statistic")
    extended = alarm.get("ExtendedStatistic")
    await host.metrics.flush()  # the counts of the last seconds, too
    answer = await host.metrics.get_metric_statistics(
        alarm["Namespace"],
        alarm["MetricName"],
        {d["Name"]: d["Value"] for d in alarm["Dimensions"]},
        start=start,
        end=end,
        period=period,
        statistics=[statistic] if statistic else [],
        extended_statistics=[extended] if extended else [],
    )
    history = await host.alarms.describe_alarm_history(name, 100)
    start = alarmchart.first_shown(answer["Datapoints"], history, start, end, period)
    return orjson.dumps(alarmchart.chart_data(alarm, answer["Datapoints"], history, start, end))


# -- archives and replays -------------------------------------------------------


def archives_page() -> str:
    return f'<div hx-get="{url("/archives.part")}" hx-trigger="load, {REFRESH}">{loading()}</div>'


async def archives_part(host: ConsoleHost) -> str:
    try:
        archives = await host.archives.list_archives()
        replays = await host.replays.list()
    except PipelinesError as error:
        return notice(f"archives need a state database: {error}", "error")
    archive_rows = [
        [
            esc(a.get("ArchiveName")),
            esc(a.get("EventSourceArn", "").rsplit("/", 1)[-1]),
            esc(a.get("State")),
            esc(a.get("EventCount")),
            esc(a.get("RetentionDays") or "forever"),
        ]
        for a in archives
    ]
    replay_rows = [
        [
            esc(r["ReplayName"]),
            esc(r["EventSourceArn"].rsplit("/", 1)[-1]),
            f'<span class="state {esc(r["State"]).lower()}">{esc(r["State"])}</span>',
            _progress(r),
            esc(r.get("EventLastReplayedTime") or ""),
            esc(r.get("StateReason") or ""),
        ]
        for r in sorted(replays, key=lambda r: r.get("ReplayStartTime") or "", reverse=True)
    ]
    return (
        "<h2>Archives</h2>"
        + table(
            ["Archive", "Bus", "State", "Events", "Retention (days)"],
            archive_rows,
            empty="no archives",
        )
        + "<h2>Replays</h2>"
        + table(
            ["Replay", "Archive", "State", "Progress", "Last replayed event", "Reason"],
            replay_rows,
            empty="no replays (start one with `pipelines replay start` or StartReplay)",
        )
    )


def _progress(replay: Mapping[str, Any]) -> str:
    total, done = replay.get("EventsTotal"), replay.get("EventsReplayed") or 0
    if not total:
        return esc(f"{done} events")
    share = min(done / total, 1.0)
    return (
        f'<progress max="{total}" value="{done}"></progress>'
        f" <small>{done} of {total} ({share:.0%})</small>"
    )


# -- the pattern tester -------------------------------------------------------

EXAMPLE_EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "OrderPlaced",
    "source": "shop.orders",
    "account": "123456789012",
    "time": "2026-01-01T12:00:00Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {"total": 250, "currency": "EUR", "customer": {"tier": "gold"}},
}


def patterns_page(host: ConsoleHost, bus: str | None, rule: str | None) -> str:
    pattern = '{"source": ["shop.orders"], "detail": {"total": [{"numeric": [">", 100]}]}}'
    if bus and rule:
        with contextlib.suppress(PipelinesError):  # a rule gone meanwhile: the example
            pattern = host.bus(bus).describe_rule(rule).get("EventPattern") or pattern
    event = orjson.dumps(EXAMPLE_EVENT, option=orjson.OPT_INDENT_2).decode()
    return (
        f'<form class=tester hx-post="{url("/patterns")}" hx-target="#verdict">'
        f"<label>Pattern<textarea name=pattern rows=12 spellcheck=false>{esc(pattern)}</textarea>"
        "</label>"
        f"<label>Event<textarea name=event rows=12 spellcheck=false>{esc(event)}</textarea></label>"
        "<button type=submit>Test</button></form><div id=verdict></div>"
    )


def pattern_verdict(pattern_text: str, event_text: str) -> str:
    """Whether the event matches; for one that does not, each field and
    condition that failed in each ``$or`` branch (``Pattern.explain``); for a
    pattern or event that is not valid, why."""
    from pipelines.patterns import compile_pattern

    try:
        pattern = compile_pattern(pattern_text)
    except PatternError as error:
        return notice(f"the pattern is not valid: {error}", "error")
    try:
        event = orjson.loads(event_text)
    except orjson.JSONDecodeError as error:
        return notice(f"the event is not JSON: {error}", "error")
    if not isinstance(event, dict):
        return notice("the event must be a JSON object", "error")
    explanation = pattern.explain(event)
    several = len(explanation.branches) > 1
    if explanation.matched:
        held = [str(n) for n, b in enumerate(explanation.branches, 1) if b.matched]
        which = f" (branch {', '.join(held)} of {len(explanation.branches)})" if several else ""
        return f"<p class='verdict match'>matches{esc(which)}</p>"
    parts = ["<p class='verdict nomatch'>does not match</p>"]
    for place, branch in enumerate(explanation.branches, 1):
        rows = [
            [
                f"<code>{esc(failure.path)}</code>",
                f"<code>{esc(_json(list(failure.conditions)))}</code>",
                f"<code>{esc(_json(list(failure.values)))}</code>" if failure.values else "none",
                esc(failure.message),
            ]
            for failure in branch.failures
        ]
        if several:
            parts.append(
                f"<h3>Branch {place} of {len(explanation.branches)} (<code>$or</code>)</h3>"
            )
        parts.append(
            table(["Field", "The pattern wants", "The event has", "Why"], rows, classes="why")
        )
    return "".join(parts)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# -- the live tap ---------------------------------------------------------------


def tap_page(host: ConsoleHost, bus: str | None) -> str:
    options = "".join(
        f'<option value="{esc(b.name)}"{" selected" if b.name == bus else ""}>'
        f"{esc(b.name)}</option>"
        for b in sorted(host.buses(), key=lambda b: b.name)
    )
    return (
        "<form class=tapform><label>Bus <select name=bus>"
        f'<option value="">every bus</option>{options}</select></label>'
        "<button type=submit>Watch</button></form>"
        "<p class=hint>Events as the buses dispatch them, newest first (the last 200"
        " kept). At most 100 a second are sent (the newest); the count of the others"
        " is shown.</p>"
        f'<div id=tap data-stream="{url("/tap.events", bus=bus or None)}"></div>'
    )
