"""The events service (EventBridge's API) over the runtime's buses and rules.

The engine serves it itself: buses, rules and PutEvents are the engine's.
Each operation is a thin translation between AWS's names and the library's
(``Bus.put_rule``, ``Runtime.put_events``...), so a rule made through the
API is the same object a YAML config makes. Targets name resources by ARN
(``arn:aws:sqs:REGION:ACCOUNT:orders`` is the resource ``orders``, of type
``queue``); region and account in a given ARN are not compared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pipelines.api.errors import ApiError, validation
from pipelines.api.services import Call, Service, page, resource_of
from pipelines.bus import Bus
from pipelines.errors import CodedError, ConfigError, PatternError, ResourceNotFoundError, Where
from pipelines.event import TIME_SIZE, entry_size, new_event_id
from pipelines.patterns import evaluate_pattern
from pipelines.policy import (
    PUT_EVENTS,
    PUT_RULE,
    BusPolicy,
    Caller,
    access_denied,
    permission_statement,
)

events = Service("events")

#: ListRules and the other List* operations answer at most this many per page.
PAGE = 100


def _bus_name(given: str | None) -> str:
    """A bus named by name or ARN (``arn:aws:events:...:event-bus/NAME``)."""
    if not given:
        return "default"
    return given.rsplit("event-bus/", 1)[-1] if given.startswith("arn:") else given


def _bus(call: Call, given: str | None) -> Bus:
    name = _bus_name(given)
    try:
        return call.runtime.bus(name)
    except (KeyError, ResourceNotFoundError):
        raise ApiError("ResourceNotFoundException", f"Event bus {name} does not exist.") from None


def _page(items: Sequence[Any], params: Mapping[str, Any], key: str) -> dict[str, Any]:
    """One page of ``items`` as ``{key: [...], "NextToken": ...}``."""
    invalid = validation("The NextToken is not valid.")
    found, token = page(items, params.get("NextToken"), params.get("Limit") or PAGE, invalid)
    return {key: found, "NextToken": token} if token else {key: found}


# -- PutEvents and patterns --------------------------------------------------


@events.operation()
async def put_events(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    # The entries as read go to the runtime as they are (it takes a bus by
    # name or ARN too); one pass here adds up their sizes and finds the buses.
    entries: list[dict[str, Any]] = params["Entries"]
    buses = {bus.name for bus in call.runtime.buses()}
    missing = any(_bus_name(entry.get("EventBusName")) not in buses for entry in entries)
    limit = call.runtime.limits.entries.max_entry_size
    # The entries' sizes (UTF-8 bytes of their strings, 14 for a Time) add up
    # to no more than the body's bytes and 14 each: a body that small needs
    # no adding up (the usual request, far under the limit).
    bounded = call.body_size is not None and call.body_size + TIME_SIZE * len(entries) <= limit
    if not bounded and sum(entry_size(entry) for entry in entries) > limit:
        raise validation("Total size of the entries in the request is over the limit.")
    caller = _caller(call)
    if not missing:
        return await call.runtime.put_events(entries, caller=caller)
    # AWS answers an entry for a bus that does not exist with an EventId and
    # delivers it nowhere (recorded: test_put_events_nonexistent_event_bus).
    found = [_bus_name(entry.get("EventBusName")) in buses for entry in entries]
    known = [entry for entry, exists in zip(entries, found, strict=True) if exists]
    result = await call.runtime.put_events(known, caller=caller) if known else {"Entries": []}
    answers = iter(result["Entries"])
    merged = [next(answers) if exists else {"EventId": new_event_id()} for exists in found]
    failed = sum(1 for answer in merged if "ErrorCode" in answer)
    return {"FailedEntryCount": failed, "Entries": merged}


@events.operation()
async def test_event_pattern(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    try:
        event = orjson.loads(params["Event"])
    except orjson.JSONDecodeError:
        raise validation("Parameter Event is not valid.") from None
    missing = [
        key
        for key in ("id", "account", "source", "time", "region", "detail-type")
        if not isinstance(event, dict) or key not in event
    ]
    if missing:
        raise validation(f"Parameter Event is not valid. Missing fields: {', '.join(missing)}")
    try:
        return {"Result": evaluate_pattern(params["EventPattern"], event)}
    except PatternError as error:
        raise ApiError("InvalidEventPatternException", str(error)) from None


# -- buses -------------------------------------------------------------------


def _describe_bus(bus: Bus, *, policy: bool = False) -> dict[str, Any]:
    described: dict[str, Any] = {
        "Name": bus.name,
        "Arn": bus.arn,
        "CreationTime": bus.created,
        "LastModifiedTime": bus.created,
    }
    if bus.description:
        described["Description"] = bus.description
    if bus.dead_letter_arn:
        described["DeadLetterConfig"] = {"Arn": bus.dead_letter_arn}
    text = bus.policy.text()
    if policy and text is not None:  # AWS leaves it out without one (recorded)
        described["Policy"] = text
    return described


def _bus_settings(bus: Bus, params: Mapping[str, Any]) -> dict[str, Any]:
    """CreateEventBus's and UpdateEventBus's Description and DeadLetterConfig
    (KMS keys and log configs are not taken: there is nothing to encrypt or log with)."""
    if "Description" in params:
        bus.description = params["Description"]
    if "DeadLetterConfig" in params:
        bus.dead_letter_arn = params["DeadLetterConfig"].get("Arn") or None
    answer: dict[str, Any] = {}
    if bus.description:
        answer["Description"] = bus.description
    if bus.dead_letter_arn:
        answer["DeadLetterConfig"] = {"Arn": bus.dead_letter_arn}
    return answer


@events.operation()
async def create_event_bus(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = params["Name"]
    if name in {bus.name for bus in call.runtime.buses()}:
        raise ApiError("ResourceAlreadyExistsException", f"Event bus {name} already exists.")
    if params.get("EventSourceName"):
        raise validation("Partner event sources are not served by pipelines.")
    # A bus made through the API is its caller's (another account's caller
    # makes a bus only the policy lets the runner's own account put to).
    await call.runtime.policies.forget(name)
    bus = call.runtime.create_bus(name, account=call.account)
    return {"EventBusArn": bus.arn, **_bus_settings(bus, params)}


@events.operation()
async def update_event_bus(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _own_bus(call, params.get("Name"), "events:UpdateEventBus")
    return {"Arn": bus.arn, "Name": bus.name, **_bus_settings(bus, params)}


@events.operation()
async def describe_event_bus(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return _describe_bus(_bus(call, params.get("Name")), policy=True)


@events.operation()
async def list_event_buses(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    prefix = params.get("NamePrefix", "")
    buses = sorted(call.runtime.buses(), key=lambda bus: bus.name)
    found = [_describe_bus(bus) for bus in buses if bus.name.startswith(prefix)]
    return _page(found, params, "EventBuses")


@events.operation()
async def delete_event_bus(call: Call, params: dict[str, Any]) -> None:
    name = _bus_name(params["Name"])
    if name == "default":
        raise validation("Cannot delete event bus default.")
    _own_bus(call, name, "events:DeleteEventBus")
    await call.runtime.delete_bus(name)
    await call.runtime.policies.forget(name)


# -- bus permissions (pipelines.policy) ------------------------------------------


def _caller(call: Call) -> Caller:
    return Caller(call.account, call.org)


def _own_bus(call: Call, given: str | None, action: str) -> Bus:
    """A bus only its own account may change (its policy, its settings)."""
    bus = _bus(call, given)
    if call.account != bus.account:
        raise ApiError("AccessDeniedException", access_denied(call.account, action, bus.arn))
    return bus


@events.operation()
async def put_permission(call: Call, params: dict[str, Any]) -> None:
    bus = _own_bus(call, params.get("EventBusName"), "events:PutPermission")
    try:
        if params.get("Policy") is not None:
            if any(key in params for key in ("Action", "Principal", "StatementId", "Condition")):
                raise validation(
                    "Policy cannot be given with Action, Principal, StatementId or Condition."
                )
            policy = BusPolicy.parse(Where("Policy"), params["Policy"])
        else:
            missing = [k for k in ("Action", "Principal", "StatementId") if k not in params]
            if missing:
                raise validation(
                    f"Parameter(s) {', '.join(missing)} must be specified (or a Policy)."
                )
            statement = permission_statement(
                bus.arn,
                statement_id=params["StatementId"],
                principal=params["Principal"],
                action=params["Action"],
                condition=params.get("Condition"),
            )
            policy = bus.policy.with_statement(statement)
    except ConfigError as error:
        raise validation(str(error)) from None
    await call.runtime.policies.put(bus, policy)


@events.operation()
async def remove_permission(call: Call, params: dict[str, Any]) -> None:
    bus = _own_bus(call, params.get("EventBusName"), "events:RemovePermission")
    if params.get("RemoveAllPermissions"):
        if params.get("StatementId"):
            raise validation("StatementId cannot be given with RemoveAllPermissions.")
        await call.runtime.policies.put(bus, BusPolicy())
        return
    if not params.get("StatementId"):
        raise validation("Parameter StatementId must be specified (or RemoveAllPermissions).")
    try:
        policy = bus.policy.without(params["StatementId"])
    except CodedError as error:
        raise ApiError(error.code, error.message) from None
    await call.runtime.policies.put(bus, policy)


# -- rules -------------------------------------------------------------------


@events.operation()
async def put_rule(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _bus(call, params.get("EventBusName"))
    if call.account != bus.account:  # another account's bus: its policy decides
        rule_arn = bus.rule_arn(params["Name"])
        if not bus.policy.allows(_caller(call), PUT_RULE, [bus.arn, rule_arn]):
            raise ApiError("AccessDeniedException", access_denied(call.account, PUT_RULE, rule_arn))
    pattern = params.get("EventPattern")
    schedule = params.get("ScheduleExpression")
    if pattern is None and schedule is None:
        raise validation("Parameter(s) EventPattern or ScheduleExpression must be specified.")
    if schedule is not None and bus.name != "default":
        raise validation("ScheduleExpression is supported only on the default event bus.")
    state = params.get("State", "ENABLED")
    if state not in ("ENABLED", "DISABLED"):
        raise validation(f"State {state} is not supported by pipelines.")
    try:
        return bus.put_rule(
            params["Name"],
            pattern=pattern,
            schedule=schedule,
            state=state,
            description=params.get("Description", ""),
        )
    except PatternError as error:
        raise ApiError("InvalidEventPatternException", str(error)) from None
    except ConfigError as error:
        if schedule is not None and "schedule" in str(error.location):
            raise validation("Parameter ScheduleExpression is not valid.") from None
        raise


def _rule(bus: Bus, name: str) -> dict[str, Any]:
    try:
        return _shown_rule(bus.describe_rule(name))
    except ResourceNotFoundError as error:
        raise ApiError("ResourceNotFoundException", str(error)) from None


def _shown_rule(described: dict[str, Any]) -> dict[str, Any]:
    # AWS leaves out a Description that was never given.
    return {key: value for key, value in described.items() if value != "" or key != "Description"}


@events.operation()
async def describe_rule(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    return {
        **_rule(_bus(call, params.get("EventBusName")), params["Name"]),
        "CreatedBy": call.account,
    }


@events.operation()
async def list_rules(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _bus(call, params.get("EventBusName"))
    rules = [_shown_rule(rule) for rule in bus.list_rules(params.get("NamePrefix", ""))]
    return _page(rules, params, "Rules")


@events.operation()
async def enable_rule(call: Call, params: dict[str, Any]) -> None:
    bus = _bus(call, params.get("EventBusName"))
    _rule(bus, params["Name"])
    bus.enable_rule(params["Name"])


@events.operation()
async def disable_rule(call: Call, params: dict[str, Any]) -> None:
    bus = _bus(call, params.get("EventBusName"))
    _rule(bus, params["Name"])
    bus.disable_rule(params["Name"])


@events.operation()
async def delete_rule(call: Call, params: dict[str, Any]) -> None:
    bus = _bus(call, params.get("EventBusName"))
    name = params["Name"]
    if name not in {rule["Name"] for rule in bus.list_rules(name)}:
        return  # AWS: deleting a rule that does not exist succeeds
    if bus.list_targets_by_rule(name) and not params.get("Force"):
        raise validation("Rule can't be deleted since it has targets.")
    await bus.delete_rule(name, force=bool(params.get("Force")))


@events.operation()
async def list_rule_names_by_target(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _bus(call, params.get("EventBusName"))
    wanted = resource_of(call, params["TargetArn"])
    names = [
        rule["Name"]
        for rule in bus.list_rules()
        if any(target["resource"] == wanted for target in bus.list_targets_by_rule(rule["Name"]))
    ]
    return _page(names, params, "RuleNames")


# -- targets -----------------------------------------------------------------


#: A target's HttpParameters (API destinations) in AWS's names and ours.
_HTTP_PARAMETERS = (
    ("PathParameterValues", "path_parameter_values"),
    ("HeaderParameters", "header_parameters"),
    ("QueryStringParameters", "query_string_parameters"),
)


def _target_config(
    call: Call, target: Mapping[str, Any], resource: str | None = None
) -> dict[str, Any]:
    """A PutTargets target in the library's names (``Bus.put_targets``)."""
    resource = resource or resource_of(call, target["Arn"])
    if resource is None:
        raise validation(f"No resource of this pipeline has the ARN {target['Arn']}.")
    config: dict[str, Any] = {"id": target["Id"], "resource": resource}
    if "Input" in target:
        config["input"] = target["Input"]
    if "InputPath" in target:
        config["input_path"] = target["InputPath"]
    if "InputTransformer" in target:
        transformer = target["InputTransformer"]
        config["input_transformer"] = {
            "input_paths_map": transformer.get("InputPathsMap", {}),
            "input_template": transformer["InputTemplate"],
        }
    if "RetryPolicy" in target:
        policy = target["RetryPolicy"]
        config["retry_policy"] = {
            key: policy[aws]
            for key, aws in (
                ("maximum_retry_attempts", "MaximumRetryAttempts"),
                ("maximum_event_age", "MaximumEventAgeInSeconds"),
            )
            if aws in policy
        }
    if "HttpParameters" in target:
        given = target["HttpParameters"]
        config["http_parameters"] = {
            ours: given[aws] for aws, ours in _HTTP_PARAMETERS if given.get(aws) is not None
        }
    dead_letter = target.get("DeadLetterConfig", {}).get("Arn")
    if dead_letter:
        named = resource_of(call, dead_letter)
        if named is None:
            raise validation(f"No resource of this pipeline has the ARN {dead_letter}.")
        config["dead_letter"] = named
    return config


def _aws_target(call: Call, declared: Mapping[str, Any]) -> dict[str, Any]:
    """A rule target as ListTargetsByRule answers it."""
    target: dict[str, Any] = {
        "Id": declared["id"],
        "Arn": _target_arn(call, declared["resource"]),
    }
    given = declared.get("input")
    if given is not None:
        target["Input"] = given if isinstance(given, str) else orjson.dumps(given).decode()
    if declared.get("input_path") is not None:
        target["InputPath"] = declared["input_path"]
    transformer = declared.get("input_transformer")
    if transformer is not None:
        target["InputTransformer"] = {
            "InputPathsMap": transformer.get("input_paths_map") or {},
            "InputTemplate": transformer["input_template"],
        }
    policy = declared.get("retry_policy")
    if policy:
        target["RetryPolicy"] = {
            aws: policy[key]
            for key, aws in (
                ("maximum_retry_attempts", "MaximumRetryAttempts"),
                ("maximum_event_age", "MaximumEventAgeInSeconds"),
            )
            if key in policy
        }
    http = declared.get("http_parameters")
    if http:
        target["HttpParameters"] = {
            aws: http[ours] for aws, ours in _HTTP_PARAMETERS if ours in http
        }
    if declared.get("dead_letter"):
        target["DeadLetterConfig"] = {"Arn": call.runtime.resource_arn(declared["dead_letter"])}
    return target


#: An event bus's ARN, as a rule target names the bus it forwards to.
_BUS_ARN = re.compile(r"arn:aws[\w-]*:events:[^:]*:(\d{12}):event-bus/([.\-_A-Za-z0-9]{1,64})")
#: The target type forwarding to a bus (the eventbus plugin's), and the name
#: of the resource PutTargets makes for a bus it names by ARN.
BUS_TARGET_TYPE = "event_bus"
BUS_RESOURCE = "event-bus/{}"


async def _bus_target(call: Call, source: Bus, rule: str, arn: str) -> str | None:
    """The resource forwarding to the bus ``arn`` names (made at its first
    use), or None when ``arn`` names no bus. A bus of another account than
    ``source``'s must allow ``source``'s account to put events, as AWS checks
    when the target is put (and this runner again at each delivery)."""
    found = _BUS_ARN.fullmatch(arn)
    if found is None:
        return None
    try:
        bus = call.runtime.bus(found.group(2))
    except ResourceNotFoundError:
        raise validation(f"Event bus {found.group(2)} does not exist.") from None
    if found.group(1) != bus.account:
        raise validation(f"No event bus of this pipeline has the ARN {arn}.")
    if source.account != bus.account:
        asking = Caller(source.account, source_arn=source.rule_arn(rule))
        if not bus.policy.allows(asking, PUT_EVENTS, [bus.arn]):
            raise ApiError("AccessDeniedException", access_denied(source.account, PUT_EVENTS, arn))
    name = BUS_RESOURCE.format(bus.name)
    if name not in call.runtime.resource_names():
        try:
            await call.runtime.put_resource(name, BUS_TARGET_TYPE, {"bus": bus.name})
        except ConfigError:
            raise validation(
                f"An event bus target needs the {BUS_TARGET_TYPE} target type (plugins.eventbus),"
                " which is not installed."
            ) from None
    return name


def _target_arn(call: Call, resource: str) -> str:
    """A rule target's ARN: a bus's own for the resource forwarding to it."""
    prefix = BUS_RESOURCE.format("")
    if resource.startswith(prefix):
        try:
            return call.runtime.bus(resource.removeprefix(prefix)).arn
        except ResourceNotFoundError:
            pass
    return call.runtime.resource_arn(resource)


@events.operation()
async def put_targets(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _bus(call, params.get("EventBusName"))
    _rule(bus, params["Rule"])
    accepted: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for target in params["Targets"]:
        try:
            forwarding = await _bus_target(call, bus, params["Rule"], target["Arn"])
            accepted.append(_target_config(call, target, forwarding))
        except ApiError as error:
            failed.append(
                {"TargetId": target["Id"], "ErrorCode": error.code, "ErrorMessage": error.message}
            )
    present = {target.id for target in bus.rule_targets(params["Rule"])}
    if (
        len(present | {target["id"] for target in accepted})
        > call.runtime.limits.max_targets_per_rule
    ):
        raise ApiError(
            "LimitExceededException", "The requested resource exceeds the maximum number allowed."
        )
    if accepted:
        # The last of several targets with one Id wins, as AWS's does.
        await bus.put_targets(params["Rule"], list({t["id"]: t for t in accepted}.values()))
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


@events.operation()
async def remove_targets(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _bus(call, params.get("EventBusName"))
    _rule(bus, params["Rule"])
    present = {target.id for target in bus.rule_targets(params["Rule"])}
    await bus.remove_targets(params["Rule"], [i for i in params["Ids"] if i in present])
    return {"FailedEntryCount": 0, "FailedEntries": []}


@events.operation()
async def list_targets_by_rule(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    bus = _bus(call, params.get("EventBusName"))
    _rule(bus, params["Rule"])
    targets = [_aws_target(call, target.declared) for target in bus.rule_targets(params["Rule"])]
    return _page(targets, params, "Targets")


# -- archives and replays ----------------------------------------------------


def _archive_name(arn_or_name: str) -> str:
    return arn_or_name.rsplit("archive/", 1)[-1] if arn_or_name.startswith("arn:") else arn_or_name


async def _archive_exists(call: Call, name: str) -> bool:
    try:
        await call.runtime.archives.describe_archive(name)
    except ResourceNotFoundError:
        return False
    return True


@events.operation()
async def create_archive(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = params["ArchiveName"]
    bus = _bus(call, params["EventSourceArn"])
    if await _archive_exists(call, name):
        raise ApiError("ResourceAlreadyExistsException", f"Archive {name} already exists.")
    options: dict[str, Any] = {"bus": bus.name, "retention_days": params.get("RetentionDays", 0)}
    if params.get("EventPattern") is not None:
        options["pattern"] = params["EventPattern"]
    if params.get("Description") is not None:
        options["description"] = params["Description"]
    await call.runtime.archives.create_archive(name, options)
    described = await call.runtime.archives.describe_archive(name)
    return {**_given(described), "State": "ENABLED"}


@events.operation()
async def update_archive(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    name = params["ArchiveName"]
    if not any(key in params for key in ("EventPattern", "RetentionDays", "Description")):
        raise validation(
            "At least one of EventPattern, RetentionDays or Description must be provided."
        )
    try:
        current = await call.runtime.archives.describe_archive(name)
    except ResourceNotFoundError:
        raise ApiError("ResourceNotFoundException", f"Archive {name} does not exist.") from None
    options: dict[str, Any] = {
        "bus": _bus_name(current["EventSourceArn"]),
        "retention_days": params.get("RetentionDays", current["RetentionDays"]),
        "description": params.get("Description", current.get("Description", "")),
        "durability": current.get("Durability", "normal"),
    }
    pattern = params.get("EventPattern", current.get("EventPattern"))
    if pattern is not None:
        options["pattern"] = pattern
    await call.runtime.archives.create_archive(name, options)
    return _given(await call.runtime.archives.describe_archive(name))


def _given(described: Mapping[str, Any]) -> dict[str, Any]:
    """AWS leaves out what is empty (a Description never given, a StateReason)."""
    return {key: value for key, value in described.items() if value not in ("", None)}


@events.operation()
async def describe_archive(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    try:
        return _given(await call.runtime.archives.describe_archive(params["ArchiveName"]))
    except ResourceNotFoundError as error:
        raise ApiError("ResourceNotFoundException", str(error)) from None


@events.operation()
async def list_archives(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = [
        _given(a) for a in await call.runtime.archives.list_archives(params.get("NamePrefix", ""))
    ]
    if params.get("EventSourceArn"):
        source = _bus(call, params["EventSourceArn"]).name
        found = [a for a in found if _bus_name(a["EventSourceArn"]) == source]
    if params.get("State"):
        found = [a for a in found if a["State"] == params["State"]]
    return _page(found, params, "Archives")


@events.operation()
async def delete_archive(call: Call, params: dict[str, Any]) -> None:
    try:
        await call.runtime.archives.delete_archive(params["ArchiveName"])
    except ResourceNotFoundError as error:
        raise ApiError("ResourceNotFoundException", str(error)) from None


def _rule_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn


@events.operation()
async def start_replay(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    destination = params["Destination"]
    bus = _bus(call, destination["Arn"])
    filters = destination.get("FilterArns")
    archive = _archive_name(params["EventSourceArn"])
    if params["EventStartTime"] >= params["EventEndTime"]:
        raise validation(
            "Parameter EventEndTime is not valid."
            " Reason: EventStartTime must be before EventEndTime."
        )
    try:
        source = await call.runtime.archives.describe_archive(archive)
    except ResourceNotFoundError:
        raise validation(
            f"Parameter EventSourceArn is not valid. Reason: Archive {archive} does not exist."
        ) from None
    if _bus_name(source["EventSourceArn"]) != bus.name:
        raise validation(
            "Parameter Destination.Arn is not valid."
            " Reason: Cross event bus replay is not permitted."
        )
    try:
        return await call.runtime.replays.start(
            params["ReplayName"],
            archive,
            params["EventStartTime"],
            params["EventEndTime"],
            bus.name,
            [_rule_name(arn) for arn in filters] if filters else None,
            description=params.get("Description", ""),
        )
    except ResourceNotFoundError as error:
        raise ApiError("ResourceNotFoundException", str(error)) from None


@events.operation()
async def describe_replay(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    try:
        return _given(await call.runtime.replays.describe(params["ReplayName"]))
    except (ResourceNotFoundError, IndexError):
        raise ApiError(
            "ResourceNotFoundException", f"Replay {params['ReplayName']} does not exist."
        ) from None


@events.operation()
async def list_replays(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    found = sorted(
        (_given(r) for r in await call.runtime.replays.list()), key=lambda r: r["ReplayName"]
    )
    prefix = params.get("NamePrefix", "")
    found = [r for r in found if r["ReplayName"].startswith(prefix)]
    if params.get("State"):
        found = [r for r in found if r["State"] == params["State"]]
    if params.get("EventSourceArn"):
        archive = _archive_name(params["EventSourceArn"])
        found = [r for r in found if _archive_name(r["EventSourceArn"]) == archive]
    return _page(found, params, "Replays")


@events.operation()
async def cancel_replay(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    try:
        return await call.runtime.replays.cancel(params["ReplayName"])
    except ResourceNotFoundError as error:
        raise ApiError("ResourceNotFoundException", str(error)) from None
