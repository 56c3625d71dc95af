"""The events API against answers recorded from real AWS.

The expected values are AWS's, as recorded in LocalStack's validated
snapshots (tests/aws/services/events/test_events.snapshot.json; the name of
each case is given with it). Names that vary per run are ours; codes,
messages, members and statuses are AWS's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .apiclient import Api, started_api
from .helpers import eventually
from .test_api_events import AUDIT_ARN, QUEUE_ARN


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for started in started_api(tmp_path):
        yield started


PATTERN = {
    "source": ["core.update-account-command"],
    "detail-type": ["core.update-account-command"],
    "detail": {"command": ["update-account"]},
}


def entry(**fields: Any) -> dict[str, Any]:
    base = {
        "Source": "core.update-account-command",
        "DetailType": "core.update-account-command",
        "Detail": json.dumps({"command": "update-account"}),
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


async def test_put_events_entry_errors(api: Api) -> None:
    # TestEvents::test_put_events_without_source / _without_detail / _without_detail_type
    for missing in ("Source", "Detail", "DetailType"):
        answer = await api.call("put_events", Entries=[entry(**{missing: None})])
        assert answer == {
            "FailedEntryCount": 1,
            "Entries": [
                {
                    "ErrorCode": "InvalidArgument",
                    "ErrorMessage": f"Parameter {missing} is not valid. Reason:"
                    f" {missing} is a required argument.",
                }
            ],
        }


async def test_put_events_malformed_details(api: Api) -> None:
    # TestEvents::test_put_event_malformed_detail[STRING, ARRAY, MALFORMED_JSON, SERIALIZED_STRING]
    for detail in ("NotJSON", "[]", "{{}", json.dumps("NotJSON")):
        answer = await api.call("put_events", Entries=[entry(Detail=detail)])
        assert answer == {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}],
        }


async def test_put_events_over_the_size_or_count_limit(api: Api) -> None:
    # TestEvents::test_put_event_with_too_big_detail (recorded at 256 KB; the limit is 1 MB now)
    big = entry(Detail=json.dumps({"payload": ["p" * (1024 * 1024)]}))
    refused = await api.error("put_events", Entries=[big])
    assert refused["Error"] == {
        "Code": "ValidationException",
        "Message": "Total size of the entries in the request is over the limit.",
    }
    assert refused["ResponseMetadata"]["HTTPStatusCode"] == 400
    # TestEvents::test_put_events_exceed_limit_ten_entries
    many = await api.error("put_events", Entries=[entry() for _ in range(11)])
    assert many["Error"]["Code"] == "ValidationException"
    message = many["Error"]["Message"]
    assert message.startswith("1 validation error detected: Value '")
    assert message.endswith(
        "' at 'entries' failed to satisfy constraint:"
        " Member must have length less than or equal to 10"
    )


async def test_put_events_to_a_bus_that_does_not_exist(api: Api) -> None:
    # TestEventBus::test_put_events_nonexistent_event_bus: the entry gets an id, goes nowhere
    await api.call("put_rule", Name="r", EventPattern=json.dumps({"source": ["MySource"]}))
    await api.call("put_targets", Rule="r", Targets=[{"Id": "a", "Arn": AUDIT_ARN}])
    answer = await api.call(
        "put_events",
        Entries=[
            {"Source": "MySource", "DetailType": "CustomType", "Detail": '{"to": "default"}'},
            {
                "Source": "MySource",
                "DetailType": "CustomType",
                "Detail": '{"to": "nowhere"}',
                "EventBusName": "event-bus-missing",
            },
        ],
    )
    assert answer["FailedEntryCount"] == 0
    assert [sorted(e) for e in answer["Entries"]] == [["EventId"], ["EventId"]]
    audit = api.recorder("audit")
    await eventually(lambda: len(audit.received) == 1)
    assert audit.received[0].payload["detail"] == {"to": "default"}
    missing = await api.error("describe_event_bus", Name="event-bus-missing")
    assert missing["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Event bus event-bus-missing does not exist.",
    }


async def test_event_bus_errors(api: Api) -> None:
    # TestEventBus::test_create_multiple_event_buses_same_name
    await api.call("create_event_bus", Name="bus-1")
    again = await api.error("create_event_bus", Name="bus-1")
    assert again["Error"] == {
        "Code": "ResourceAlreadyExistsException",
        "Message": "Event bus bus-1 already exists.",
    }
    # TestEventBus::test_describe_delete_not_existing_event_bus
    for operation in ("describe_event_bus", "delete_event_bus"):
        gone = await api.error(operation, Name="bus-0")
        assert gone["Error"] == {
            "Code": "ResourceNotFoundException",
            "Message": "Event bus bus-0 does not exist.",
        }
        assert gone["ResponseMetadata"]["HTTPStatusCode"] == 400
    # TestEventBus::test_delete_default_event_bus
    default = await api.error("delete_event_bus", Name="default")
    assert default["Error"] == {
        "Code": "ValidationException",
        "Message": "Cannot delete event bus default.",
    }


async def test_event_buses_are_described_and_paged(api: Api) -> None:
    # TestEventBus::test_create_list_describe_delete_custom_event_buses, _with_limit
    for n in range(6):
        await api.call("create_event_bus", Name=f"page-{n}")
    described = await api.call("describe_event_bus", Name="page-0")
    assert sorted(described) == ["Arn", "CreationTime", "LastModifiedTime", "Name"]
    first = await api.call("list_event_buses", NamePrefix="page-", Limit=3)
    assert [bus["Name"] for bus in first["EventBuses"]] == ["page-0", "page-1", "page-2"]
    assert sorted(first["EventBuses"][0]) == ["Arn", "CreationTime", "LastModifiedTime", "Name"]
    rest = await api.call(
        "list_event_buses", NamePrefix="page-", Limit=3, NextToken=first["NextToken"]
    )
    assert [bus["Name"] for bus in rest["EventBuses"]] == ["page-3", "page-4", "page-5"]


async def test_rules_are_described_as_aws_describes_them(api: Api) -> None:
    # TestEventRule::test_put_list_with_prefix_describe_delete_rule[default, custom]
    await api.call("create_event_bus", Name="custom")
    for bus in ("default", "custom"):
        made = await api.call(
            "put_rule", Name="rule-1", EventBusName=bus, EventPattern=json.dumps(PATTERN)
        )
        suffix = "rule-1" if bus == "default" else "custom/rule-1"
        assert made["RuleArn"] == f"arn:aws:events:us-east-1:000000000000:rule/{suffix}"
        (listed,) = (await api.call("list_rules", EventBusName=bus, NamePrefix="rule"))["Rules"]
        assert sorted(listed) == ["Arn", "EventBusName", "EventPattern", "Name", "State"]
        assert json.loads(listed["EventPattern"]) == PATTERN
        described = await api.call("describe_rule", Name="rule-1", EventBusName=bus)
        assert sorted(described) == [
            "Arn",
            "CreatedBy",
            "EventBusName",
            "EventPattern",
            "Name",
            "State",
        ]
        assert described["CreatedBy"] == "000000000000"
        await api.call("delete_rule", Name="rule-1", EventBusName=bus)
        assert (await api.call("list_rules", EventBusName=bus))["Rules"] == []


async def test_rule_errors(api: Api) -> None:
    # TestEventRule::test_describe_nonexistent_rule
    missing = await api.error("describe_rule", Name="rule-x")
    assert missing["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Rule rule-x does not exist on EventBus default.",
    }
    # TestEventRule::test_delete_rule_with_targets
    await api.call("put_rule", Name="r", EventPattern=json.dumps(PATTERN))
    await api.call("put_targets", Rule="r", Targets=[{"Id": "q", "Arn": QUEUE_ARN}])
    refused = await api.error("delete_rule", Name="r")
    assert refused["Error"] == {
        "Code": "ValidationException",
        "Message": "Rule can't be deleted since it has targets.",
    }


async def test_targets_as_aws_lists_and_limits_them(api: Api) -> None:
    await api.call("put_rule", Name="r", EventPattern=json.dumps(PATTERN))
    # TestEventTarget::test_put_list_remove_target: only what was given is listed
    put = await api.call("put_targets", Rule="r", Targets=[{"Id": "t", "Arn": QUEUE_ARN}])
    assert put == {"FailedEntries": [], "FailedEntryCount": 0}
    (listed,) = (await api.call("list_targets_by_rule", Rule="r"))["Targets"]
    assert sorted(listed) == ["Arn", "Id"]
    removed = await api.call("remove_targets", Rule="r", Ids=["t"])
    assert removed == {"FailedEntries": [], "FailedEntryCount": 0}
    # TestEventTarget::test_put_multiple_targets_with_same_id_single_rule: the later one wins
    await api.call(
        "put_targets", Rule="r", Targets=[{"Id": "t", "Arn": QUEUE_ARN, "InputPath": "$.detail"}]
    )
    await api.call(
        "put_targets",
        Rule="r",
        Targets=[{"Id": "t", "Arn": QUEUE_ARN, "InputPath": "$.notexisting"}],
    )
    (replaced,) = (await api.call("list_targets_by_rule", Rule="r"))["Targets"]
    assert replaced["InputPath"] == "$.notexisting"
    # TestEventTarget::test_list_target_by_rule_limit
    await api.call(
        "put_targets", Rule="r", Targets=[{"Id": f"t{n}", "Arn": QUEUE_ARN} for n in range(4)]
    )
    first = await api.call("list_targets_by_rule", Rule="r", Limit=3)
    assert len(first["Targets"]) == 3 and "NextToken" in first
    rest = await api.call("list_targets_by_rule", Rule="r", Limit=3, NextToken=first["NextToken"])
    assert len(rest["Targets"]) == 2 and "NextToken" not in rest
    # TestEventTarget::test_add_exceed_fife_targets_per_rule
    await api.call("put_rule", Name="many", EventPattern=json.dumps(PATTERN))
    over = await api.error(
        "put_targets", Rule="many", Targets=[{"Id": f"t-{n}", "Arn": QUEUE_ARN} for n in range(7)]
    )
    assert over["Error"] == {
        "Code": "LimitExceededException",
        "Message": "The requested resource exceeds the maximum number allowed.",
    }
    # TestEventTarget::test_put_target_id_validation
    bad_id = await api.error(
        "put_targets", Rule="many", Targets=[{"Id": "!@#$@!#$", "Arn": QUEUE_ARN}]
    )
    assert bad_id["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value '!@#$@!#$' at 'targets.1.member.id' failed"
        " to satisfy constraint: Member must satisfy regular expression pattern:"
        " [\\.\\-_A-Za-z0-9]+",
    }
    long_id = await api.error(
        "put_targets", Rule="many", Targets=[{"Id": "x" * 65, "Arn": QUEUE_ARN}]
    )
    assert long_id["Error"]["Message"] == (
        f"1 validation error detected: Value '{'x' * 65}' at 'targets.1.member.id' failed to"
        " satisfy constraint: Member must have length less than or equal to 64"
    )
    # TestEventRule::test_list_rule_names_by_target_no_matches
    nothing = await api.call(
        "list_rule_names_by_target", TargetArn="arn:aws:sqs:us-east-1:000000000000:other"
    )
    assert nothing["RuleNames"] == []


# test_events_schedule.py: TestScheduleCron::tests_put_rule_with_schedule_cron[...] (accepted)
VALID_CRONS = [
    "cron(0 10 * * ? *)",
    "cron(15 12 * * ? *)",
    "cron(0 18 ? * MON-FRI *)",
    "cron(0 8 1 * ? *)",
    "cron(0/15 * * * ? *)",
    "cron(0/10 * ? * MON-FRI *)",
    "cron(0/5 8-17 ? * MON-FRI *)",
    "cron(0/30 20-23 ? * MON-FRI *)",
    "cron(0/30 0-2 ? * MON-FRI *)",
    "cron(0 2 ? * SAT *)",
    "cron(0 12 * * ? *)",
    "cron(5,35 14 * * ? *)",
    "cron(15 10 ? * 6L 2002-2005)",
    "cron(0 2 ? * SAT#3 *)",
    "cron(* * ? * SAT#3 *)",
    "cron(0/5 5 ? JAN 1-5 2022)",
]
# ...tests_put_rule_with_invalid_schedule_cron[...] and
# TestScheduleRate::test_put_rule_with_invalid_schedule_rate[...] (refused)
INVALID_SCHEDULES = [
    "cron(INVALID)",
    "cron(0 dummy ? * MON-FRI *)",
    "cron(7 20 * * NOT *)",
    "cron(71 8 1 * ? *)",
    "cron(0 1 * * * *)",
    "rate(10 seconds)",
    "rate(10 years)",
    "rate(1 minutes)",
    "rate(1 hours)",
    "rate(1 days)",
    "rate(10 minute)",
    "rate(10 hour)",
    "rate(10 day)",
    "rate()",
    "rate(10)",
    "rate(10 minutess)",
    "rate(foo minutes)",
    "rate(0 minutes)",
    "rate(-10 minutes)",
    "rate(10 MINUTES)",
    "rate( 10 minutes )",
    " rate(10 minutes)",
]


async def test_schedule_expressions_accepted_and_refused_as_aws_does(api: Api) -> None:
    for n, expression in enumerate(VALID_CRONS):
        await api.call("put_rule", Name=f"cron-{n}", ScheduleExpression=expression)
        described = await api.call("describe_rule", Name=f"cron-{n}")
        assert described["ScheduleExpression"] == expression
    wrong = []
    for n, expression in enumerate(INVALID_SCHEDULES):
        refused = await api.error("put_rule", Name=f"bad-{n}", ScheduleExpression=expression)
        if refused["Error"] != {
            "Code": "ValidationException",
            "Message": "Parameter ScheduleExpression is not valid.",
        }:
            wrong.append((expression, refused["Error"]))
    assert wrong == []
    # TestScheduleRate::tests_put_rule_with_schedule_custom_event_bus
    await api.call("create_event_bus", Name="custom")
    custom = await api.error(
        "put_rule", Name="r", EventBusName="custom", ScheduleExpression="rate(1 minute)"
    )
    assert custom["Error"] == {
        "Code": "ValidationException",
        "Message": "ScheduleExpression is supported only on the default event bus.",
    }


# test_archive_and_replay.snapshot.json
async def test_archives_as_aws_answers_them(api: Api) -> None:
    bus_arn = "arn:aws:events:us-east-1:000000000000:event-bus/default"
    # TestArchive::test_create_list_describe_update_delete_archive
    made = await api.call(
        "create_archive",
        ArchiveName="archive-1",
        EventSourceArn=bus_arn,
        EventPattern=json.dumps(PATTERN),
        RetentionDays=1,
        Description="description of the archive",
    )
    assert sorted(made) == ["ArchiveArn", "CreationTime", "State"]
    assert made["State"] == "ENABLED"
    (listed,) = (await api.call("list_archives"))["Archives"]
    assert sorted(listed) == [
        "ArchiveName",
        "CreationTime",
        "EventCount",
        "EventSourceArn",
        "RetentionDays",
        "SizeBytes",
        "State",
    ]
    assert (listed["EventCount"], listed["SizeBytes"], listed["RetentionDays"]) == (0, 0, 1)
    described = await api.call("describe_archive", ArchiveName="archive-1")
    assert sorted(described) == sorted([*listed, "ArchiveArn", "Description", "EventPattern"])
    # TestArchive::test_create_archive_error_unknown_event_bus / _duplicate
    unknown_bus = await api.error(
        "create_archive",
        ArchiveName="archive-2",
        EventSourceArn=bus_arn.replace("/default", "/nope"),
    )
    assert unknown_bus["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Event bus nope does not exist.",
    }
    duplicate = await api.error("create_archive", ArchiveName="archive-1", EventSourceArn=bus_arn)
    assert duplicate["Error"] == {
        "Code": "ResourceAlreadyExistsException",
        "Message": "Archive archive-1 already exists.",
    }
    # TestArchive::test_list_archive_with_name_prefix / _with_source_arn / _state_enabled
    assert len((await api.call("list_archives", NamePrefix="archive"))["Archives"]) == 1
    assert (await api.call("list_archives", NamePrefix="none"))["Archives"] == []
    assert len((await api.call("list_archives", EventSourceArn=bus_arn))["Archives"]) == 1
    assert len((await api.call("list_archives", State="ENABLED"))["Archives"]) == 1
    # TestArchive::test_list_archive_error_unknown_source_arn
    unknown_source = await api.error(
        "list_archives", EventSourceArn=bus_arn.replace("/default", "/nope")
    )
    assert unknown_source["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Event bus nope does not exist.",
    }
    # TestArchive::test_update_archive_error_unknown_archive
    nothing = await api.error("update_archive", ArchiveName="archive-x")
    assert nothing["Error"] == {
        "Code": "ValidationException",
        "Message": "At least one of EventPattern, RetentionDays or Description must be provided.",
    }
    # TestArchive::test_describe_archive_error_unknown_archive / test_delete_archive_error_...
    for operation in ("describe_archive", "delete_archive"):
        missing = await api.error(operation, ArchiveName="archive-x")
        assert missing["Error"] == {
            "Code": "ResourceNotFoundException",
            "Message": "Archive archive-x does not exist.",
        }


async def test_replay_errors_as_aws_answers_them(api: Api) -> None:
    bus_arn = "arn:aws:events:us-east-1:000000000000:event-bus/default"
    archive = await api.call("create_archive", ArchiveName="a", EventSourceArn=bus_arn)
    await api.call("create_event_bus", Name="other")
    window = {"EventStartTime": 1_700_000_000, "EventEndTime": 1_700_000_100}

    async def start(name: str, **options: Any) -> dict[str, Any]:
        params = {
            "ReplayName": name,
            "EventSourceArn": archive["ArchiveArn"],
            "Destination": {"Arn": bus_arn},
            **window,
            **options,
        }
        return await api.error("start_replay", **params)

    # TestReplay::test_start_replay_error_unknown_event_bus
    unknown = await start("r", Destination={"Arn": bus_arn.replace("/default", "/nope")})
    assert unknown["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Event bus nope does not exist.",
    }
    cross = await start("r", Destination={"Arn": bus_arn.replace("/default", "/other")})
    assert cross["Error"] == {
        "Code": "ValidationException",
        "Message": "Parameter Destination.Arn is not valid."
        " Reason: Cross event bus replay is not permitted.",
    }
    # TestReplay::test_start_replay_error_unknown_archive
    no_archive = await start(
        "r", EventSourceArn=archive["ArchiveArn"].replace("archive/a", "archive/gone")
    )
    assert no_archive["Error"] == {
        "Code": "ValidationException",
        "Message": "Parameter EventSourceArn is not valid. Reason: Archive gone does not exist.",
    }
    # TestReplay::test_start_replay_error_invalid_end_time[0, 10]
    for later in (0, 10):
        backwards = await start(
            "r", EventStartTime=1_700_000_000 + later, EventEndTime=1_700_000_000
        )
        assert backwards["Error"] == {
            "Code": "ValidationException",
            "Message": "Parameter EventEndTime is not valid."
            " Reason: EventStartTime must be before EventEndTime.",
        }
    # TestReplay::test_start_replay_error_duplicate_name_same_archive
    started = await api.call(
        "start_replay",
        ReplayName="r",
        EventSourceArn=archive["ArchiveArn"],
        Destination={"Arn": bus_arn},
        **window,
    )
    assert sorted(started) == ["ReplayArn", "ReplayStartTime", "State"]
    again = await start("r")
    assert again["Error"] == {
        "Code": "ResourceAlreadyExistsException",
        "Message": "Replay r already exists.",
    }
    # TestReplay::test_describe_replay_error_unknown_replay
    missing = await api.error("describe_replay", ReplayName="gone")
    assert missing["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Replay gone does not exist.",
    }
    # TestReplay::test_list_replays_with_prefix: a finished replay's members
    for _ in range(200):
        listed = (await api.call("list_replays", NamePrefix="r"))["Replays"]
        if listed and listed[0]["State"] == "COMPLETED":
            break
        await asyncio.sleep(0.05)
    (replay,) = listed
    assert sorted(replay) == [
        "EventEndTime",
        "EventSourceArn",
        "EventStartTime",
        "ReplayEndTime",
        "ReplayName",
        "ReplayStartTime",
        "State",
    ]
