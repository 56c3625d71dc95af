"""Bus permissions: policies, their enforcement on every entry point, and a
bus as a rule target (bus to bus, across accounts, one hop).

Recorded AWS answers used as facts (LocalStack's AWS-validated snapshots,
tests/aws/services/events/test_events.snapshot.json): the statement
PutPermission writes (an account principal as its root ARN, the bus ARN as
Resource), a whole Policy document replacing the statements (with
``events:ListRules`` and a ``Service`` principal accepted), no ``Policy`` in
DescribeEventBus once every permission is removed, and the errors
"Statement with the provided id does not exist." and "Event bus NAME does
not exist." (ResourceNotFoundException).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pluggy
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.api.server import ApiSettings
from pipelines.api.sigv4 import AccessKey
from pipelines.config import ConfigInvalid, build_runtime, load_config
from pipelines.errors import CodedError, ConfigError, Where
from pipelines.event import is_forwarded
from pipelines.policy import (
    MAX_POLICY_BYTES,
    PUT_EVENTS,
    PUT_RULE,
    BusPolicy,
    Caller,
    PolicyLengthExceeded,
    permission_statement,
)
from pipelines.runtime import Runtime

from .helpers import eventually
from .recorder import Recorder, plugin_manager

OWNER, OTHER, THIRD = "111111111111", "222222222222", "333333333333"
ORG = "o-abcdef1234"
KEYS = {
    "AKIDOWNER": AccessKey("owner-secret", OWNER),
    "AKIDOTHER": AccessKey("other-secret", OTHER, ORG),
    "AKIDTHIRD": AccessKey("third-secret", THIRD),
}
BUS_ARN = f"arn:aws:events:us-east-1:{OWNER}:event-bus/shared"


def plugins() -> pluggy.PluginManager:
    """The installed plugins, the recorder, and the eventbus plugin (registered
    here until the installed package lists its entry point)."""
    import plugins.eventbus

    manager = plugin_manager()
    if not any(p is plugins.eventbus for p in manager.get_plugins()):
        manager.register(plugins.eventbus, name="eventbus")
    return manager


PLUGINS = plugins()


# -- the policy itself ---------------------------------------------------------


def test_put_permission_writes_the_statement_aws_writes() -> None:
    statement = permission_statement(BUS_ARN, statement_id="s1", principal=OTHER)
    assert statement == {
        "Sid": "s1",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
        "Action": "events:PutEvents",
        "Resource": BUS_ARN,
    }
    everyone = permission_statement(BUS_ARN, statement_id="s2", principal="*")
    assert everyone["Principal"] == "*"
    org = permission_statement(
        BUS_ARN,
        statement_id="s3",
        principal="*",
        condition={"Type": "StringEquals", "Key": "aws:PrincipalOrgID", "Value": ORG},
    )
    assert org["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ORG}}


def test_a_statement_id_replaces_its_statement_and_removing_an_unknown_one_is_refused() -> None:
    policy = BusPolicy().with_statement(
        permission_statement(BUS_ARN, statement_id="a", principal=OTHER)
    )
    policy = policy.with_statement(permission_statement(BUS_ARN, statement_id="a", principal=THIRD))
    assert [s["Principal"] for s in policy.statements] == [{"AWS": f"arn:aws:iam::{THIRD}:root"}]
    with pytest.raises(CodedError) as refused:
        policy.without("nope")
    assert (refused.value.code, refused.value.message) == (
        "ResourceNotFoundException",
        "Statement with the provided id does not exist.",
    )
    assert policy.without("a").document is None


@pytest.mark.parametrize(
    ("statement", "path", "wording"),
    [
        ({"Effect": "Allow", "Principal": "*", "Action": "events:Explode"}, ("Action",), "not an EventBridge action"),
        ({"Effect": "Allow", "Principal": "*", "Action": ["events:PutEvents", "sqs:SendMessage"]}, ("Action", 1), "not an EventBridge action"),
        ({"Effect": "Allow", "Principal": {"AWS": "12345"}, "Action": "events:PutEvents"}, ("Principal", "AWS"), "is not a principal"),
        ({"Effect": "Allow", "Principal": {"Federated": "x"}, "Action": "events:PutEvents"}, ("Principal", "Federated"), "unknown principal type"),
        ({"Effect": "Maybe", "Principal": "*", "Action": "events:PutEvents"}, ("Effect",), "Allow or Deny"),
        ({"Effect": "Allow", "Principal": "*", "Action": "events:PutEvents", "Condition": {"NumericWobbly": {"a": "1"}}}, ("Condition", "NumericWobbly"), "unknown condition operator"),
    ],
)  # fmt: skip
def test_a_policy_aws_would_refuse_is_refused_at_its_json_path(
    statement: dict[str, Any], path: tuple[Any, ...], wording: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        BusPolicy.parse(Where("Policy"), {"Version": "2012-10-17", "Statement": [statement]})
    assert refused.value.path == ("Statement", 0, *path)
    assert wording in refused.value.message


def test_a_document_aws_accepts_is_kept_as_given() -> None:
    # Recorded: a whole Policy with a Service principal and events:ListRules.
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "s5",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "events:ListRules",
                "Resource": "*",
            }
        ],
    }
    policy = BusPolicy.parse(Where("Policy"), json.dumps(document))
    assert json.loads(policy.text() or "") == document
    # A service principal is no account: it lets no caller put.
    assert not policy.allows(Caller(OTHER), PUT_EVENTS, [BUS_ARN])


def test_a_policy_over_10_kb_is_refused() -> None:
    statements = [
        permission_statement(BUS_ARN, statement_id=f"s{i:03d}", principal=OTHER) for i in range(200)
    ]
    with pytest.raises(PolicyLengthExceeded) as refused:
        BusPolicy.parse(Where("Policy"), {"Version": "2012-10-17", "Statement": statements})
    assert refused.value.code == "PolicyLengthExceededException"
    assert str(MAX_POLICY_BYTES) in refused.value.message


def test_allow_needs_a_matching_statement_and_deny_wins() -> None:
    policy = BusPolicy.parse(
        Where("Policy"),
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": "events:*"},
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "events:PutEvents",
                    "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG}},
                },
                {
                    "Effect": "Deny",
                    "Principal": {"AWS": "*"},
                    "Action": "events:PutEvents",
                    "Condition": {"StringLike": {"events:source": "forbidden.*"}},
                },
            ],
        },
    )
    assert policy.allows(Caller(OTHER, source="shop"), PUT_EVENTS, [BUS_ARN])
    assert policy.allows(Caller(OTHER), PUT_RULE, [BUS_ARN])
    assert not policy.allows(Caller(OTHER, source="forbidden.x"), PUT_EVENTS, [BUS_ARN])
    assert policy.allows(Caller(THIRD, ORG, source="shop"), PUT_EVENTS, [BUS_ARN])
    assert not policy.allows(Caller(THIRD, None, source="shop"), PUT_EVENTS, [BUS_ARN])
    assert not policy.allows(Caller(THIRD, ORG), PUT_RULE, [BUS_ARN])
    assert not BusPolicy().allows(Caller(OTHER), PUT_EVENTS, [BUS_ARN])


# -- through the API, with two accounts' keys ---------------------------------------


class Accounts:
    def __init__(self, runtime: Runtime, server: ApiServer) -> None:
        self.runtime = runtime
        self.owner = _client(server.url, "AKIDOWNER", "owner-secret")
        self.other = _client(server.url, "AKIDOTHER", "other-secret")
        self.third = _client(server.url, "AKIDTHIRD", "third-secret")


def _client(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "events",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


async def _call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await asyncio.to_thread(getattr(client, operation), **params)
    answer.pop("ResponseMetadata")
    return answer


async def _error(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await _call(client, operation, **params)
    error: dict[str, Any] = raised.value.response["Error"]
    return error


@pytest.fixture
async def accounts(tmp_path: Path) -> AsyncIterator[Accounts]:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS, account=OWNER)
    runtime.create_bus("shared")
    runtime.add_resource("seen", "recorder", {})
    server = ApiServer(runtime, served_services(PLUGINS), settings=ApiSettings(access_keys=KEYS))
    await server.start()
    try:
        async with runtime:
            rule = runtime.bus("shared")
            rule.put_rule("all", pattern={"source": [{"prefix": ""}]})
            await rule.put_targets("all", [{"id": "seen", "resource": "seen"}])
            yield Accounts(runtime, server)
    finally:
        await server.close()


def _entry(bus: str, source: str = "team") -> dict[str, str]:
    return {"EventBusName": bus, "Source": source, "DetailType": "d", "Detail": "{}"}


async def test_another_accounts_entries_need_the_bus_policy_each_entry_alone(
    accounts: Accounts,
) -> None:
    refused = await _call(accounts.other, "put_events", Entries=[_entry("shared")])
    assert refused["FailedEntryCount"] == 1
    assert refused["Entries"] == [
        {
            "ErrorCode": "AccessDeniedException",
            "ErrorMessage": f"User: arn:aws:iam::{OTHER}:root is not authorized to perform:"
            f" events:PutEvents on resource: {BUS_ARN} because no resource-based policy"
            " allows the events:PutEvents action",
        }
    ]
    await _call(
        accounts.owner,
        "put_permission",
        EventBusName="shared",
        Action="events:PutEvents",
        Principal=OTHER,
        StatementId="team-other",
    )
    # By name or by ARN; the default bus has no policy: that entry alone fails.
    mixed = await _call(
        accounts.other,
        "put_events",
        Entries=[_entry("shared"), _entry("default"), _entry(BUS_ARN)],
    )
    assert mixed["FailedEntryCount"] == 1
    codes = [entry.get("ErrorCode") for entry in mixed["Entries"]]
    assert codes == [None, "AccessDeniedException", None]
    seen = accounts.runtime.resource("seen")
    assert isinstance(seen, Recorder)
    await eventually(lambda: len(seen.received) == 2)
    # The event is the putting account's (AWS's ``account`` field).
    assert {r.payload["account"] for r in seen.received} == {OTHER}
    # The bus's own account needs no policy; an account the policy does not name does.
    own = await _call(accounts.owner, "put_events", Entries=[_entry("shared")])
    assert own["FailedEntryCount"] == 0
    third = await _call(accounts.third, "put_events", Entries=[_entry("shared")])
    assert third["Entries"][0]["ErrorCode"] == "AccessDeniedException"
    await _call(
        accounts.owner, "remove_permission", EventBusName="shared", StatementId="team-other"
    )
    again = await _call(accounts.other, "put_events", Entries=[_entry("shared")])
    assert again["FailedEntryCount"] == 1


async def test_an_organization_condition_lets_in_the_accounts_of_that_organization(
    accounts: Accounts,
) -> None:
    await _call(
        accounts.owner,
        "put_permission",
        EventBusName="shared",
        Action="events:PutEvents",
        Principal="*",
        StatementId="org",
        Condition={"Type": "StringEquals", "Key": "aws:PrincipalOrgID", "Value": ORG},
    )
    member = await _call(accounts.other, "put_events", Entries=[_entry("shared")])
    assert member["FailedEntryCount"] == 0
    outsider = await _call(accounts.third, "put_events", Entries=[_entry("shared")])
    assert outsider["Entries"][0]["ErrorCode"] == "AccessDeniedException"


async def test_describe_event_bus_shows_the_policy_as_aws_records_it(accounts: Accounts) -> None:
    for sid, principal in (("s1", OWNER), ("s2", OTHER), ("s3", "*"), ("s3", "*")):
        await _call(
            accounts.owner,
            "put_permission",
            EventBusName="shared",
            Action="events:PutEvents",
            Principal=principal,
            StatementId=sid,
        )
    described = await _call(accounts.owner, "describe_event_bus", Name="shared")
    assert json.loads(described["Policy"]) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "s1",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OWNER}:root"},
                "Action": "events:PutEvents",
                "Resource": BUS_ARN,
            },
            {
                "Sid": "s2",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                "Action": "events:PutEvents",
                "Resource": BUS_ARN,
            },
            {
                "Sid": "s3",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": BUS_ARN,
            },
        ],
    }
    await _call(
        accounts.owner, "remove_permission", EventBusName="shared", RemoveAllPermissions=True
    )
    assert "Policy" not in await _call(accounts.owner, "describe_event_bus", Name="shared")


async def test_permission_errors_are_aws_s(accounts: Accounts) -> None:
    missing = await _error(
        accounts.owner, "remove_permission", EventBusName="shared", StatementId="x"
    )
    assert missing == {
        "Code": "ResourceNotFoundException",
        "Message": "Statement with the provided id does not exist.",
    }
    no_bus = await _error(
        accounts.owner,
        "put_permission",
        EventBusName="nope",
        Action="events:PutEvents",
        Principal="*",
        StatementId="s",
    )
    assert no_bus == {
        "Code": "ResourceNotFoundException",
        "Message": "Event bus nope does not exist.",
    }
    bad = await _error(
        accounts.owner,
        "put_permission",
        EventBusName="shared",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "events:Fly"}],
            }
        ),
    )
    assert bad["Code"] == "ValidationException"
    assert bad["Message"].startswith("Policy.Statement[0].Action: 'events:Fly'")
    large = [
        {
            "Sid": f"s{i}",
            "Effect": "Allow",
            "Principal": {"AWS": OTHER},
            "Action": "events:PutEvents",
        }
        for i in range(200)
    ]
    too_long = await _error(
        accounts.owner,
        "put_permission",
        EventBusName="shared",
        Policy=json.dumps({"Version": "2012-10-17", "Statement": large}),
    )
    assert too_long["Code"] == "PolicyLengthExceededException"
    # Only the bus's own account changes its policy.
    foreign = await _error(
        accounts.other,
        "put_permission",
        EventBusName="shared",
        Action="events:PutEvents",
        Principal=OTHER,
        StatementId="me",
    )
    assert foreign["Code"] == "AccessDeniedException"


async def test_put_rule_on_another_accounts_bus_needs_events_put_rule(accounts: Accounts) -> None:
    pattern = json.dumps({"source": ["team"]})
    refused = await _error(
        accounts.other, "put_rule", Name="mine", EventBusName=BUS_ARN, EventPattern=pattern
    )
    assert refused["Code"] == "AccessDeniedException"
    assert "events:PutRule" in refused["Message"]
    # PutEvents alone does not let it put rules.
    await _call(
        accounts.owner,
        "put_permission",
        EventBusName="shared",
        Action="events:PutEvents",
        Principal=OTHER,
        StatementId="events",
    )
    still = await _error(
        accounts.other, "put_rule", Name="mine", EventBusName="shared", EventPattern=pattern
    )
    assert still["Code"] == "AccessDeniedException"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "rules",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                "Action": ["events:PutRule", "events:PutTargets"],
                "Resource": f"arn:aws:events:us-east-1:{OWNER}:rule/shared/*",
            }
        ],
    }
    await _call(accounts.owner, "put_permission", EventBusName="shared", Policy=json.dumps(policy))
    made = await _call(
        accounts.other, "put_rule", Name="mine", EventBusName="shared", EventPattern=pattern
    )
    assert made["RuleArn"] == f"arn:aws:events:us-east-1:{OWNER}:rule/shared/mine"


async def test_a_bus_made_through_the_api_is_its_callers(accounts: Accounts) -> None:
    made = await _call(accounts.other, "create_event_bus", Name="others", Description="theirs")
    assert made["EventBusArn"] == f"arn:aws:events:us-east-1:{OTHER}:event-bus/others"
    assert made["Description"] == "theirs"
    own = await _call(accounts.other, "put_events", Entries=[_entry("others")])
    assert own["FailedEntryCount"] == 0
    foreign = await _call(accounts.owner, "put_events", Entries=[_entry("others")])
    assert foreign["Entries"][0]["ErrorCode"] == "AccessDeniedException"
    updated = await _error(accounts.owner, "update_event_bus", Name="others", Description="mine")
    assert updated["Code"] == "AccessDeniedException"


# -- durable: policies made through the API survive a restart --------------------------


async def test_a_policy_put_through_the_api_survives_a_restart(state_location: str) -> None:
    first = Runtime(state_path=state_location, account=OWNER)
    first.create_bus("shared")
    async with first:
        bus = first.bus("shared")
        made = bus.policy.with_statement(
            permission_statement(bus.arn, statement_id="s", principal=OTHER)
        )
        await first.policies.put(bus, made)
    second = Runtime(state_path=state_location, account=OWNER)
    second.create_bus("shared")
    async with second:
        kept = second.bus("shared").policy
        assert [s["Sid"] for s in kept.statements] == ["s"]
        answer = await second.put_events([_entry("shared")], caller=Caller(OTHER))
        assert answer["FailedEntryCount"] == 0
        refused = await second.put_events([_entry("shared")], caller=Caller(THIRD))
        assert refused["Entries"][0]["ErrorCode"] == "AccessDeniedException"


YAML_POLICY = """\
account: "111111111111"
state: state.db
buses:
  shared:
    statements:
      - Sid: team
        Effect: Allow
        Principal: {{AWS: "{principal}"}}
        Action: events:PutEvents
"""


async def test_the_configs_policy_applies_until_the_api_changes_it_and_again_once_it_changes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(YAML_POLICY.format(principal=OTHER))
    runtime = await build_runtime(load_config([path]))
    async with runtime:
        bus = runtime.bus("shared")
        assert bus.policy.allows(Caller(OTHER), PUT_EVENTS, [bus.arn])
        await runtime.policies.put(bus, BusPolicy())  # RemoveAllPermissions
    # Same declaration: the API's change stands.
    runtime = await build_runtime(load_config([path]))
    async with runtime:
        assert runtime.bus("shared").policy.document is None
    # A new declaration: the config's is in force.
    path.write_text(YAML_POLICY.format(principal=THIRD))
    runtime = await build_runtime(load_config([path]))
    async with runtime:
        bus = runtime.bus("shared")
        assert bus.policy.allows(Caller(THIRD), PUT_EVENTS, [bus.arn])
        assert not bus.policy.allows(Caller(OTHER), PUT_EVENTS, [bus.arn])


def test_a_bad_policy_in_yaml_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "buses:\n"
        "  shared:\n"
        "    statements:\n"
        "      - Effect: Allow\n"
        "        Principal: {AWS: '12'}\n"
        "        Action: events:PutEvents\n"
        "      - Effect: Allow\n"
        "        Principal: '*'\n"
        "        Action: events:Teleport\n"
        "  other:\n"
        "    account: 'nope'\n"
        "    policy: {Version: '2012-10-17', Statement: [{Effect: Allow, Principal: '*', Action: [events:PutEvents, s3:GetObject]}]}\n"
    )
    with pytest.raises(ConfigInvalid) as raised:
        load_config([path])
    shown = [f"{p.line}:{p.column}: {p.message}" for p in raised.value.problems]
    assert any(
        s.startswith("5:") and "buses.shared.statements[0].Principal.AWS" in s for s in shown
    ), shown
    assert any(s.startswith("9:") and "events:Teleport" in s for s in shown), shown
    assert any(s.startswith("11:") and "buses.other.account" in s for s in shown), shown
    assert any(s.startswith("12:") and "s3:GetObject" in s for s in shown), shown


# -- a bus as a rule target -----------------------------------------------------------


async def _forwarding_runtime(tmp_path: Path, *, policy: bool) -> Runtime:
    """``default`` (the owner's) forwards to ``central`` (another account's),
    which forwards again to ``third``; recorders on central and third, a
    dead letter on the forwarding target."""
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS, account=OWNER)
    central = runtime.create_bus("central", account=OTHER)
    runtime.create_bus("third", account=OTHER)
    if policy:
        central.policy = BusPolicy().with_statement(
            permission_statement(central.arn, statement_id="owner", principal=OWNER)
        )
    runtime.add_resource("to-central", "event_bus", {"bus": "central"})
    runtime.add_resource("to-third", "event_bus", {"bus": "third"})
    for name in ("at-central", "at-third", "dead"):
        runtime.add_resource(name, "recorder", {})
    default = runtime.bus()
    default.put_rule("out", pattern={"source": ["shop"]})
    await default.put_targets(
        "out",
        [
            {
                "id": "c",
                "resource": "to-central",
                "dead_letter": "dead",
                "retry_policy": {"maximum_retry_attempts": 0},
            }
        ],
    )
    central.put_rule("in", pattern={"source": ["shop"]})
    await central.put_targets(
        "in", [{"id": "r", "resource": "at-central"}, {"id": "f", "resource": "to-third"}]
    )
    runtime.bus("third").put_rule("in", pattern={"source": ["shop"]})
    await runtime.bus("third").put_targets("in", [{"id": "r", "resource": "at-third"}])
    return runtime


def _recorder(runtime: Runtime, name: str) -> Recorder:
    found = runtime.resource(name)
    assert isinstance(found, Recorder)
    return found


async def test_an_event_goes_bus_to_bus_across_accounts_once_the_policy_allows_it(
    tmp_path: Path,
) -> None:
    runtime = await _forwarding_runtime(tmp_path, policy=True)
    async with runtime:
        put = await runtime.put_events(
            [{"Source": "shop", "DetailType": "order", "Detail": '{"n": 1}', "Resources": ["r1"]}]
        )
        original = put["Entries"][0]["EventId"]
        central = _recorder(runtime, "at-central")
        await eventually(lambda: len(central.received) == 1)
        forwarded = central.received[0].payload
        assert (forwarded["source"], forwarded["detail-type"], forwarded["detail"]) == (
            "shop",
            "order",
            {"n": 1},
        )
        assert forwarded["resources"] == ["r1"]
        assert forwarded["account"] == OWNER  # the forwarding bus's account
        assert forwarded["id"] != original and is_forwarded(forwarded["id"])
        # One hop: central's rule forwarding to third sends nothing on.
        await asyncio.sleep(0.3)
        assert _recorder(runtime, "at-third").received == []
        assert _recorder(runtime, "dead").received == []


async def test_a_forward_the_target_bus_policy_refuses_goes_to_the_dead_letter(
    tmp_path: Path,
) -> None:
    runtime = await _forwarding_runtime(tmp_path, policy=False)
    async with runtime:
        await runtime.put_events([{"Source": "shop", "DetailType": "order", "Detail": "{}"}])
        dead = _recorder(runtime, "dead")
        await eventually(lambda: len(dead.received) == 1)
        attributes = dead.received[0].context.attributes
        assert attributes["ERROR_CODE"] == "AccessDeniedException"
        assert f"arn:aws:iam::{OWNER}:root is not authorized" in attributes["ERROR_MESSAGE"]
        assert _recorder(runtime, "at-central").received == []


async def test_put_targets_takes_a_bus_arn_and_checks_the_target_bus_policy(
    accounts: Accounts,
) -> None:
    runtime = accounts.runtime
    runtime.create_bus("inbox")
    runtime.create_bus("foreign", account=OTHER)
    await _call(
        accounts.owner, "put_rule", Name="fwd", EventPattern=json.dumps({"source": ["shop"]})
    )
    inbox_arn = f"arn:aws:events:us-east-1:{OWNER}:event-bus/inbox"
    put = await _call(
        accounts.owner, "put_targets", Rule="fwd", Targets=[{"Id": "b", "Arn": inbox_arn}]
    )
    assert put["FailedEntryCount"] == 0
    listed = await _call(accounts.owner, "list_targets_by_rule", Rule="fwd")
    assert [(t["Id"], t["Arn"]) for t in listed["Targets"]] == [("b", inbox_arn)]
    foreign_arn = f"arn:aws:events:us-east-1:{OTHER}:event-bus/foreign"
    refused = await _call(
        accounts.owner, "put_targets", Rule="fwd", Targets=[{"Id": "f", "Arn": foreign_arn}]
    )
    assert refused["FailedEntries"][0]["ErrorCode"] == "AccessDeniedException"
    runtime.bus("inbox").put_rule("in", pattern={"source": ["shop"]})
    await runtime.bus("inbox").put_targets("in", [{"id": "seen", "resource": "seen"}])
    await _call(
        accounts.owner,
        "put_events",
        Entries=[{"Source": "shop", "DetailType": "d", "Detail": "{}"}],
    )
    seen = _recorder(runtime, "seen")
    await eventually(lambda: any(r.payload["source"] == "shop" for r in seen.received))


# -- sources put as their configured account ---------------------------------------------


SOURCES = """
api: 127.0.0.1:0
state: state.db
account: "111111111111"
buses:
  shared:
    statements:
      - {Sid: team, Effect: Allow, Principal: {AWS: "222222222222"}, Action: events:PutEvents}
resources:
  team-to-default: {type: webhook, path: /team/default, account: "222222222222"}
  team-to-shared: {type: webhook, path: /team/shared, bus: shared, account: "222222222222"}
  owner: {type: webhook, path: /owner}
  sink: {type: function, function: "sinkmod:record"}
rules:
  all:
    pattern: {source: [webhook]}
    targets: [{id: t, resource: sink}]
  shared:
    bus: shared
    pattern: {source: [webhook]}
    targets: [{id: t, resource: sink}]
"""


def test_a_webhook_puts_as_its_configured_account(tmp_path: Path) -> None:
    from .apiclient import endpoint_of
    from .helpers import SINK_MODULE, pipelines_command
    from .test_webhook import curl

    (tmp_path / "pipeline.yaml").write_text(SOURCES)
    (tmp_path / "sinkmod.py").write_text(SINK_MODULE)
    sink = tmp_path / "sink.jsonl"
    process = subprocess.Popen(
        [*pipelines_command(), "run", "pipeline.yaml", "--no-control"],
        cwd=tmp_path,
        env={**os.environ, "SINK_FILE": str(sink)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = endpoint_of(process)
        status, text = curl(f"{url}/team/default", b'{"a": 1}')
        assert status == 403, text
        assert json.loads(text)["code"] == "AccessDeniedException"
        assert f"arn:aws:iam::{OTHER}:root is not authorized" in json.loads(text)["message"]
        status, text = curl(f"{url}/team/shared", b'{"a": 2}')
        assert status == 200, text
        status, text = curl(f"{url}/owner", b'{"a": 3}')  # the owner's own bus: no policy needed
        assert status == 200, text
        until = time.monotonic() + 20
        while time.monotonic() < until:
            lines = sink.read_text().splitlines() if sink.exists() else []
            if len(lines) >= 2:
                break
            time.sleep(0.05)
        events = sorted((json.loads(line) for line in lines), key=lambda e: e["detail"]["a"])
        assert [(e["detail"]["a"], e["account"]) for e in events] == [(2, OTHER), (3, OWNER)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def test_an_mqtt_source_takes_an_account_and_refuses_a_wrong_one() -> None:
    from plugins.mqtt.target import MqttType

    made = MqttType().create(
        "m", {"broker": {"host": "localhost"}, "subscribe": ["a/#"], "account": OTHER}
    )
    assert made.caller == Caller(OTHER)
    with pytest.raises(ConfigError) as refused:
        MqttType().create(
            "m", {"broker": {"host": "localhost"}, "subscribe": ["a/#"], "account": "x"}
        )
    assert refused.value.path == ("account",)
