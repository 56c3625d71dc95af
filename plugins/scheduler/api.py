"""EventBridge Scheduler's API (REST-JSON) on the AWS endpoint.

The operations work on the runtime's ``scheduler`` resource (made here at
the first call when the config declares no schedules). Requests are read
and answers written by botocore's model (``pipelines.api.rest``), which
also refuses out-of-range values in AWS's words (``MaximumRetryAttempts``
0-185, ``MaximumEventAgeInSeconds`` 60-86400, ``MaximumWindowInMinutes``
1-1440, names, lengths); what the model cannot say is checked by
``spec.check``, in the words AWS's recorded answers use where there are
some (``Invalid Schedule Expression rate(10 seconds).``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pipelines.api import ApiError, Call, Service
from pipelines.api.services import STARTING_WAIT, page
from plugins.scheduler.spec import (
    DEFAULT_GROUP,
    Invalid,
    check,
    described,
    group_arn,
    normalized,
    schedule_arn,
)
from plugins.scheduler.target import SCHEDULER_RESOURCE, Schedules

scheduler = Service("scheduler")
_TOKEN = ApiError("ValidationException", "The NextToken is not valid.")
_LOCK = "scheduler.making"


async def _schedules(call: Call) -> Schedules:
    """The runtime's scheduler resource, made on first use."""
    runtime = call.runtime
    await runtime.wait_running(STARTING_WAIT)
    if SCHEDULER_RESOURCE not in runtime.resource_names():
        async with call.kept(_LOCK, asyncio.Lock):
            if SCHEDULER_RESOURCE not in runtime.resource_names():
                await runtime.put_resource(SCHEDULER_RESOURCE, "scheduler", {})
    found = runtime.resource(SCHEDULER_RESOURCE)
    if not isinstance(found, Schedules):
        raise ApiError(
            "InternalServerException",
            f"the resource {SCHEDULER_RESOURCE!r} is not the scheduler (rename it to serve"
            " EventBridge Scheduler)",
            500,
            sender_fault=False,
        )
    await found.fresh()
    return found


def _missing_schedule(name: str) -> ApiError:
    return ApiError("ResourceNotFoundException", f"Schedule {name} does not exist.")


def _missing_group(name: str) -> ApiError:
    return ApiError("ResourceNotFoundException", f"Schedule group {name} does not exist.")


def _checked(schedules: Schedules, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateSchedule's or UpdateSchedule's parameters, checked as AWS does."""
    body = normalized(params)
    if body["GroupName"] not in schedules.groups:
        raise _missing_group(body["GroupName"])
    try:
        check(body)
    except Invalid as error:
        raise ApiError("ValidationException", error.message) from None
    dead = (body["Target"].get("DeadLetterConfig") or {}).get("Arn")
    if dead is not None and schedules.resource_named(dead) is None:
        # AWS takes any queue's ARN; a dead letter here goes to a resource.
        raise ApiError(
            "ValidationException",
            f"The dead-letter queue {dead} is not a resource of this pipeline.",
        )
    return body


@scheduler.operation()
async def create_schedule(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    body = _checked(schedules, params)
    if not await schedules.insert(body, schedules.now()):
        raise ApiError("ConflictException", f"Schedule {body['Name']} already exists.")
    return {"ScheduleArn": schedule_arn(body["GroupName"], body["Name"])}


@scheduler.operation()
async def update_schedule(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    body = _checked(schedules, params)
    if not await schedules.replace(body, schedules.now()):
        raise _missing_schedule(body["Name"])
    return {"ScheduleArn": schedule_arn(body["GroupName"], body["Name"])}


@scheduler.operation()
async def get_schedule(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    key = (params.get("GroupName") or DEFAULT_GROUP, params["Name"])
    row = schedules.schedules.get(key)
    if row is None:
        raise _missing_schedule(params["Name"])
    return described(row.body, row.created, row.modified)


@scheduler.operation()
async def delete_schedule(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    if not await schedules.delete(params.get("GroupName") or DEFAULT_GROUP, params["Name"]):
        raise _missing_schedule(params["Name"])
    return {}


@scheduler.operation()
async def list_schedules(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    group, prefix, state = params.get("GroupName"), params.get("NamePrefix"), params.get("State")
    found = [
        row
        for key, row in sorted(schedules.schedules.items())
        if (group is None or key[0] == group)
        and (prefix is None or key[1].startswith(prefix))
        and (state is None or row.body.get("State", "ENABLED") == state)
    ]
    shown, token = page(found, params.get("NextToken"), params.get("MaxResults") or 100, _TOKEN)
    answer: dict[str, Any] = {
        "Schedules": [
            {
                "Arn": schedule_arn(row.group, row.name),
                "Name": row.name,
                "GroupName": row.group,
                "State": row.body.get("State", "ENABLED"),
                "CreationDate": row.created,
                "LastModificationDate": row.modified,
                "Target": {"Arn": row.body["Target"]["Arn"]},
            }
            for row in shown
        ]
    }
    if token is not None:
        answer["NextToken"] = token
    return answer


def _group(schedules: Schedules, name: str) -> dict[str, Any]:
    group = schedules.groups.get(name)
    if group is None:
        raise _missing_group(name)
    return {
        "Arn": group_arn(name),
        "Name": name,
        "State": "ACTIVE",
        "CreationDate": group.created,
        "LastModificationDate": group.modified,
    }


@scheduler.operation()
async def create_schedule_group(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    name = params["Name"]
    tags = {tag["Key"]: tag["Value"] for tag in params.get("Tags") or []}
    if not await schedules.add_group(name, tags, schedules.now()):
        raise ApiError("ConflictException", f"Schedule group {name} already exists.")
    return {"ScheduleGroupArn": group_arn(name)}


@scheduler.operation()
async def get_schedule_group(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return _group(await _schedules(call), params["Name"])


@scheduler.operation()
async def delete_schedule_group(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    name = params["Name"]
    if name == DEFAULT_GROUP:
        raise ApiError("ValidationException", "The default schedule group cannot be deleted.")
    _group(schedules, name)
    await schedules.delete_group(name)
    return {}


@scheduler.operation()
async def list_schedule_groups(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    prefix = params.get("NamePrefix")
    names = sorted(name for name in schedules.groups if prefix is None or name.startswith(prefix))
    shown, token = page(names, params.get("NextToken"), params.get("MaxResults") or 100, _TOKEN)
    answer: dict[str, Any] = {"ScheduleGroups": [_group(schedules, name) for name in shown]}
    if token is not None:
        answer["NextToken"] = token
    return answer


def _tagged(schedules: Schedules, arn: str) -> str:
    """The group a tagging call's ARN names (only groups have tags)."""
    name = arn.rpartition("schedule-group/")[2]
    if "schedule-group/" not in arn or name not in schedules.groups:
        raise ApiError("ResourceNotFoundException", f"Schedule group {name} does not exist.")
    return name


@scheduler.operation()
async def tag_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    name = _tagged(schedules, params["ResourceArn"])
    tags = dict(schedules.groups[name].tags)
    tags.update({tag["Key"]: tag["Value"] for tag in params["Tags"]})
    await schedules.set_tags(name, tags, schedules.now())
    return {}


@scheduler.operation()
async def untag_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    name = _tagged(schedules, params["ResourceArn"])
    tags = {
        key: value
        for key, value in schedules.groups[name].tags.items()
        if key not in params["TagKeys"]
    }
    await schedules.set_tags(name, tags, schedules.now())
    return {}


@scheduler.operation()
async def list_tags_for_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    schedules = await _schedules(call)
    name = _tagged(schedules, params["ResourceArn"])
    return {
        "Tags": [{"Key": key, "Value": value} for key, value in schedules.groups[name].tags.items()]
    }
