"""An EventBridge Scheduler schedule as AWS describes it, checked, and what it becomes.

A schedule is kept in AWS's own shape (CreateSchedule's members, times in
epoch seconds): the API takes it as botocore's model reads it, a config's
``schedules:`` section is turned into it (``from_config``), and both go
through ``check`` for what the model cannot say (the expression, the time
zone, dates in order, a flexible window with its size). ``engine_schedule``
is what the engine's scheduler fires: a ``pipelines.schedule.Schedule``
whose flexible window is drawn from the schedule's ARN, and whose missed
runs follow the policy in docs/scheduler.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pipelines.errors import ConfigError, Problems, Where
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION
from pipelines.schedule import FIRE_ONCE, MISSED_POLICIES, Schedule, parse_schedule
from pipelines.targets import check_keys

DEFAULT_GROUP = "default"
ENABLED, DISABLED = "ENABLED", "DISABLED"
#: AWS's defaults of a target's RetryPolicy (the recorded GetSchedule answers).
MAX_EVENT_AGE, MAX_ATTEMPTS = 86400, 185
#: Names of schedules and groups (botocore's model: 1-64 of these).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
SCHEDULE_KEYS = {
    "group",
    "expression",
    "timezone",
    "start_date",
    "end_date",
    "description",
    "state",
    "flexible_window_minutes",
    "action_after_completion",
    "missed_runs",
    "target",
}
TARGET_KEYS = {
    "resource",
    "arn",
    "role_arn",
    "input",
    "retry_policy",
    "dead_letter",
    "eventbridge",
    "sqs",
}
RETRY_KEYS = {"maximum_retry_attempts", "maximum_event_age"}


def schedule_arn(group: str, name: str) -> str:
    return f"arn:aws:scheduler:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:schedule/{group}/{name}"


def group_arn(name: str) -> str:
    return f"arn:aws:scheduler:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:schedule-group/{name}"


def rule_name(group: str, name: str) -> str:
    """The rule of the internal bus a schedule fires through: a name the
    bus takes (64 of its characters) for any group and schedule name pair."""
    digest = hashlib.sha256(f"{group}/{name}".encode()).hexdigest()
    return f"schedule-{digest[:40]}"


class Invalid(Exception):
    """What AWS would answer ValidationException for: ``message`` in its words."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        #: Where in the schedule (AWS's member names), for a config's location.
        self.path = path


def check(body: Mapping[str, Any]) -> Schedule:
    """The engine's schedule of ``body`` (AWS's shape), or ``Invalid``."""
    expression = body["ScheduleExpression"]
    zone = body.get("ScheduleExpressionTimezone") or "UTC"
    window = body.get("FlexibleTimeWindow") or {"Mode": "OFF"}
    minutes = window.get("MaximumWindowInMinutes")
    if window.get("Mode") == "FLEXIBLE" and minutes is None:
        raise Invalid(
            "MaximumWindowInMinutes must be provided when the FlexibleTimeWindow Mode is FLEXIBLE.",
            ("FlexibleTimeWindow", "MaximumWindowInMinutes"),
        )
    if window.get("Mode") == "OFF" and minutes is not None:
        raise Invalid(
            "MaximumWindowInMinutes is only allowed when the FlexibleTimeWindow Mode is FLEXIBLE.",
            ("FlexibleTimeWindow", "MaximumWindowInMinutes"),
        )
    start, end = body.get("StartDate"), body.get("EndDate")
    if start is not None and end is not None and end <= start:
        raise Invalid("The EndDate must be after the StartDate.", ("EndDate",))
    where = Where("schedule")
    try:
        parsed = parse_schedule(
            where, {"expression": expression, "timezone": zone if zone != "UTC" else None}
        )
    except ConfigError as error:
        if error.location.path[:1] == ("timezone",):
            raise Invalid(
                f"Invalid ScheduleExpressionTimezone {zone}.", ("ScheduleExpressionTimezone",)
            ) from None
        raise Invalid(
            f"Invalid Schedule Expression {expression}.", ("ScheduleExpression",)
        ) from None
    target = body["Target"]
    policy = target.get("RetryPolicy") or {}
    missed = body.get("MissedRuns", FIRE_ONCE)
    return dataclasses.replace(
        parsed,
        start=start,
        end=end,
        flexible_window=float(minutes or 0) * 60.0,
        missed_runs=missed,
        identity=schedule_arn(body["GroupName"], body["Name"]),
        late_limit=float(policy.get("MaximumEventAgeInSeconds", MAX_EVENT_AGE)),
    )


def described(body: Mapping[str, Any], created: float, modified: float) -> dict[str, Any]:
    """GetSchedule's answer: AWS's defaults shown as it shows them."""
    answer = {key: value for key, value in body.items() if key != "MissedRuns"}
    answer["Arn"] = schedule_arn(body["GroupName"], body["Name"])
    answer.setdefault("ScheduleExpressionTimezone", "UTC")
    answer.setdefault("ActionAfterCompletion", "NONE")
    answer.setdefault("State", ENABLED)
    target = dict(body["Target"])
    target["RetryPolicy"] = {
        "MaximumEventAgeInSeconds": MAX_EVENT_AGE,
        "MaximumRetryAttempts": MAX_ATTEMPTS,
        **(target.get("RetryPolicy") or {}),
    }
    answer["Target"] = target
    answer["CreationDate"] = created
    answer["LastModificationDate"] = modified
    return answer


def normalized(params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateSchedule's or UpdateSchedule's parameters as kept: the group
    named, the client token dropped, ``State`` and the completion action
    given their defaults."""
    body = {key: value for key, value in params.items() if key != "ClientToken"}
    body["GroupName"] = params.get("GroupName") or DEFAULT_GROUP
    body.setdefault("State", ENABLED)
    body.setdefault("ActionAfterCompletion", "NONE")
    return body


# -- a config's schedules ------------------------------------------------------------


def _name(where: Where, kind: str, value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not set(value) <= _NAME_CHARS:
        raise ConfigError(
            where, f"a {kind} name is 1 to 64 letters, digits, '-', '_' or '.', not {value!r}"
        )
    return value


def _instant(where: Where, value: object) -> float:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return moment.timestamp()
    raise ConfigError(where, f"must be an ISO 8601 time (2026-01-01T00:00:00Z), not {value!r}")


def from_config(
    where: Where, key: str, declared: Mapping[str, Any], targets: Any
) -> dict[str, Any]:
    """A ``schedules:`` entry (``name`` or ``group/name``) in AWS's shape,
    checked with every problem located at its key. ``targets`` resolves a
    declared ``resource`` to the ARN AWS would be given (``arn_of``)."""
    problems = Problems()
    with problems:
        check_keys(where, declared, SCHEDULE_KEYS)
    group_text, _, name_text = key.rpartition("/")
    with problems:
        _name(where, "schedule", name_text)
    group = group_text or declared.get("group") or DEFAULT_GROUP
    with problems:
        group = _name(where / "group", "schedule group", group)
    body: dict[str, Any] = {"Name": name_text, "GroupName": group}
    expression = declared.get("expression")
    if not isinstance(expression, str):
        problems.add(
            ConfigError(where / "expression", "is required: cron(...), rate(...) or at(...)")
        )
    else:
        body["ScheduleExpression"] = expression
    for yaml_key, aws_key in (
        ("timezone", "ScheduleExpressionTimezone"),
        ("description", "Description"),
    ):
        if declared.get(yaml_key) is not None:
            if isinstance(declared[yaml_key], str):
                body[aws_key] = declared[yaml_key]
            else:
                problems.add(ConfigError(where / yaml_key, "must be a string"))
    for yaml_key, aws_key in (("start_date", "StartDate"), ("end_date", "EndDate")):
        if declared.get(yaml_key) is not None:
            with problems:
                body[aws_key] = _instant(where / yaml_key, declared[yaml_key])
    state = declared.get("state", ENABLED)
    if state not in (ENABLED, DISABLED):
        problems.add(ConfigError(where / "state", f"must be ENABLED or DISABLED, not {state!r}"))
    body["State"] = state
    action = declared.get("action_after_completion", "NONE")
    if action not in ("NONE", "DELETE"):
        problems.add(
            ConfigError(
                where / "action_after_completion", f"must be NONE or DELETE, not {action!r}"
            )
        )
    body["ActionAfterCompletion"] = action
    missed = declared.get("missed_runs", FIRE_ONCE)
    if missed not in MISSED_POLICIES:
        problems.add(
            ConfigError(where / "missed_runs", f"must be skip or fire_once, not {missed!r}")
        )
    body["MissedRuns"] = missed
    window = declared.get("flexible_window_minutes")
    if window is None or window == 0:
        body["FlexibleTimeWindow"] = {"Mode": "OFF"}
    elif isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 1440:
        problems.add(
            ConfigError(
                where / "flexible_window_minutes", f"must be a whole number 1-1440, not {window!r}"
            )
        )
    else:
        body["FlexibleTimeWindow"] = {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": window}
    with problems:
        body["Target"] = _target(where / "target", declared.get("target"), targets)
    problems.raise_any()
    if "ScheduleExpression" in body:
        try:
            check(body)
        except Invalid as error:
            yaml_path = {
                "ScheduleExpression": "expression",
                "ScheduleExpressionTimezone": "timezone",
                "EndDate": "end_date",
                "FlexibleTimeWindow": "flexible_window_minutes",
            }.get(error.path[0] if error.path else "", "expression")
            raise ConfigError(where / yaml_path, error.message) from None
    return body


def _target(where: Where, declared: Any, targets: Any) -> dict[str, Any]:
    if not isinstance(declared, Mapping):
        raise ConfigError(where, "is required: a mapping with resource (or arn) and input")
    problems = Problems()
    with problems:
        check_keys(where, declared, TARGET_KEYS)
    target: dict[str, Any] = {}
    resource, arn = declared.get("resource"), declared.get("arn")
    if (resource is None) == (arn is None):
        problems.add(ConfigError(where, "give one of resource (a resource's name) or arn"))
    elif resource is not None:
        if not isinstance(resource, str):
            problems.add(ConfigError(where / "resource", "must be a resource's name"))
        else:
            with problems:
                target["Arn"] = targets.arn_of(where / "resource", resource)
    elif not isinstance(arn, str) or not arn.startswith("arn:"):
        problems.add(ConfigError(where / "arn", f"must be an ARN, not {arn!r}"))
    else:
        target["Arn"] = arn
    target["RoleArn"] = declared.get("role_arn") or (
        f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/pipelines-scheduler"
    )
    given = declared.get("input")
    if given is not None:
        target["Input"] = given if isinstance(given, str) else json.dumps(given)
    retry = declared.get("retry_policy")
    if retry is not None:
        with problems:
            target["RetryPolicy"] = _retry(where / "retry_policy", retry)
    dead = declared.get("dead_letter")
    if dead is not None:
        if not isinstance(dead, str):
            problems.add(ConfigError(where / "dead_letter", "must be a queue resource's name"))
        else:
            with problems:
                target["DeadLetterConfig"] = {"Arn": targets.arn_of(where / "dead_letter", dead)}
    bus = declared.get("eventbridge")
    if bus is not None:
        if not isinstance(bus, Mapping) or not {"detail_type", "source"} <= set(bus):
            problems.add(
                ConfigError(where / "eventbridge", "is a mapping with detail_type and source")
            )
        else:
            target["EventBridgeParameters"] = {
                "DetailType": str(bus["detail_type"]),
                "Source": str(bus["source"]),
            }
    sqs = declared.get("sqs")
    if sqs is not None:
        if not isinstance(sqs, Mapping) or not isinstance(sqs.get("message_group_id"), str):
            problems.add(ConfigError(where / "sqs", "is a mapping with message_group_id"))
        else:
            target["SqsParameters"] = {"MessageGroupId": sqs["message_group_id"]}
    problems.raise_any()
    return target


def _retry(where: Where, declared: Any) -> dict[str, int]:
    if not isinstance(declared, Mapping):
        raise ConfigError(where, "is a mapping: maximum_retry_attempts, maximum_event_age")
    check_keys(where, declared, RETRY_KEYS)
    policy: dict[str, int] = {}
    for key, aws_key, low, high in (
        ("maximum_retry_attempts", "MaximumRetryAttempts", 0, 185),
        ("maximum_event_age", "MaximumEventAgeInSeconds", 60, 86400),
    ):
        value = declared.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(where / key, f"must be a whole number {low}-{high}, not {value!r}")
        policy[aws_key] = value
    return policy


def group_from_config(where: Where, name: object, declared: Any) -> dict[str, str]:
    """A ``schedule_groups:`` entry: its tags."""
    _name(where, "schedule group", name)
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise ConfigError(where, "a schedule group is a mapping (tags)")
    check_keys(where, declared, {"tags"})
    tags = declared.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise ConfigError(where / "tags", "is a mapping of tag keys to values")
    return {str(key): str(value) for key, value in tags.items()}
