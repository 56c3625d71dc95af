"""EventBridge Pipes' API (REST-JSON) on the AWS endpoint.

**Pipes are resources.** Every pipe this API sees is a ``pipe`` resource of
the runtime, declared under ``pipes:`` or made here: CreatePipe writes the
pipe to ``PipeStore`` (``origin`` ``api``) and puts a resource of that name
(``Runtime.put_resource``); UpdatePipe replaces it; DeletePipe removes both.
When a runtime starts, ``restore.restore_pipes`` (the plugin's
``register_restorers``) makes the API's pipes resources again, each in its
saved desired state; the first pipes request does too, for a runtime
started without the plugin's hooks. A config's pipe updated or deleted here gets its config back
at the pipeline's next start or reload.

Requests are read and checked by botocore's model (``pipelines.api.rest``);
what the model cannot say (a resource that does not exist, a source that is
neither a queue nor a stream, ranges per source kind, more than 5 filters)
is a ``ValidationException`` with the pipe's own check's words. The
settings are AWS's parameters in the config's snake_case
(``SourceParameters.SqsQueueParameters.BatchSize`` is
``source_parameters.batch_size``), so one check serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.api import ApiError, Call, Service
from pipelines.api.services import page
from pipelines.errors import ConfigError, ResourceNotFoundError
from plugins.pipes.definition import bus_name, resource_name
from plugins.pipes.pipe import ORIGIN, PipeTarget, pipe_arn
from plugins.pipes.restore import made_again
from plugins.pipes.store import PipeRecord, PipeStore

pipes = Service("pipes")
_TOKEN = ApiError("ValidationException", "The NextToken is not valid.")
PAGE = 100


@dataclass
class _Context:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    restored: bool = False


async def _store(call: Call) -> PipeStore:
    store = await call.store(PipeStore, where="the pipes API")
    context = call.kept("pipes", _Context)
    if not context.restored:
        async with context.lock:
            if not context.restored:
                await _restore(call, store)
                context.restored = True
    return store


async def _restore(call: Call, store: PipeStore) -> None:
    await made_again(call.runtime, store)


def _not_found(name: str) -> ApiError:
    return ApiError("NotFoundException", f"Pipe {name} does not exist.", 404)


def _pipe(call: Call, name: str) -> PipeTarget:
    try:
        found = call.runtime.resource(name)
    except ResourceNotFoundError:
        raise _not_found(name) from None
    if not isinstance(found, PipeTarget):
        raise _not_found(name)
    return found


def _pipes(call: Call) -> list[PipeTarget]:
    found = []
    for name in sorted(call.runtime.resource_names()):
        with contextlib.suppress(ResourceNotFoundError):
            resource = call.runtime.resource(name)
            if isinstance(resource, PipeTarget):
                found.append(resource)
    return found


# -- AWS's parameters and the settings ------------------------------------------------

_SOURCE_KEYS = {
    "BatchSize": "batch_size",
    "MaximumBatchingWindowInSeconds": "maximum_batching_window_in_seconds",
    "StartingPosition": "starting_position",
    "ParallelizationFactor": "parallelization_factor",
    "MaximumRecordAgeInSeconds": "maximum_record_age_in_seconds",
    "MaximumRetryAttempts": "maximum_retry_attempts",
    "OnPartialBatchItemFailure": "on_partial_batch_item_failure",
}
#: Source kinds the API takes, and where their parameters go.
_SOURCE_KINDS = ("SqsQueueParameters", "KinesisStreamParameters")
_UNSUPPORTED_SOURCES = (
    "DynamoDBStreamParameters",
    "ActiveMQBrokerParameters",
    "RabbitMQBrokerParameters",
    "ManagedStreamingKafkaParameters",
    "SelfManagedKafkaParameters",
)


def _source_settings(given: Mapping[str, Any], settings: dict[str, Any]) -> None:
    for kind in _UNSUPPORTED_SOURCES:
        if kind in given:
            raise ApiError(
                "ValidationException",
                f"SourceParameters.{kind}: pipelines reads queues and streams only",
            )
    filters = given.get("FilterCriteria")
    if filters is not None:
        settings["filters"] = [item.get("Pattern", "") for item in filters.get("Filters") or []]
    for kind in _SOURCE_KINDS:
        parameters = given.get(kind)
        if parameters is None:
            continue
        source = dict(settings.get("source_parameters") or {})
        for key, value in parameters.items():
            if key in _SOURCE_KEYS:
                source[_SOURCE_KEYS[key]] = value
            elif key == "StartingPositionTimestamp":
                when = value
                source["starting_position_timestamp"] = (
                    when.timestamp() if isinstance(when, dt.datetime) else float(when)
                )
            elif key == "DeadLetterConfig":
                source["dead_letter_config"] = {"arn": value["Arn"]} if value.get("Arn") else {}
        settings["source_parameters"] = source


def _target_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if "InputTemplate" in given:
        target["input_template"] = given["InputTemplate"]
    queue = given.get("SqsQueueParameters") or {}
    if "MessageGroupId" in queue:
        target["message_group_id"] = queue["MessageGroupId"]
    bus = given.get("EventBridgeEventBusParameters") or {}
    if "Source" in bus:
        target["source"] = bus["Source"]
    if "DetailType" in bus:
        target["detail_type"] = bus["DetailType"]
    return target


def _log_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    log_settings: dict[str, Any] = {"level": given.get("Level", "OFF")}
    group = (given.get("CloudwatchLogsLogDestination") or {}).get("LogGroupArn")
    if group:
        log_settings["log_group"] = group
    if given.get("IncludeExecutionData"):
        log_settings["include_execution_data"] = list(given["IncludeExecutionData"])
    return log_settings


def settings_of(params: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CreatePipe's or UpdatePipe's parameters as a pipe's settings (over ``base``)."""
    settings: dict[str, Any] = dict(base or {})
    for key, name in (("Source", "source"), ("Target", "target"), ("Enrichment", "enrichment")):
        if key in params:
            settings[name] = params[key] or None
    if "Description" in params:
        settings["description"] = params["Description"]
    if "DesiredState" in params:
        settings["desired_state"] = params["DesiredState"]
    if "RoleArn" in params:
        settings["role_arn"] = params["RoleArn"]
    if "Tags" in params:
        settings["tags"] = dict(params["Tags"])
    if "SourceParameters" in params:
        _source_settings(params["SourceParameters"], settings)
    if "EnrichmentParameters" in params:
        template = params["EnrichmentParameters"].get("InputTemplate")
        settings["enrichment_parameters"] = {} if template is None else {"input_template": template}
    if "TargetParameters" in params:
        settings["target_parameters"] = _target_settings(params["TargetParameters"])
    if "LogConfiguration" in params:
        settings["log_configuration"] = _log_settings(params["LogConfiguration"])
    return {key: value for key, value in settings.items() if value is not None}


def _source_parameters(pipe: PipeTarget) -> dict[str, Any]:
    settings = pipe.spec.settings
    given = settings.get("source_parameters") or {}
    described: dict[str, Any] = {}
    names = {value: key for key, value in _SOURCE_KEYS.items()}
    parameters = {names[key]: value for key, value in given.items() if key in names}
    if "starting_position_timestamp" in given:
        parameters["StartingPositionTimestamp"] = given["starting_position_timestamp"]
    if (given.get("dead_letter_config") or {}).get("arn"):
        parameters["DeadLetterConfig"] = {"Arn": given["dead_letter_config"]["arn"]}
    kind = pipe.source.kind if pipe.source is not None else ""
    if kind == "aws:kinesis" or "starting_position" in given:
        parameters.setdefault("BatchSize", 100)
        described["KinesisStreamParameters"] = parameters
    else:
        parameters.setdefault("BatchSize", 10)
        parameters.setdefault("MaximumBatchingWindowInSeconds", 0)
        described["SqsQueueParameters"] = {
            key: value
            for key, value in parameters.items()
            if key in ("BatchSize", "MaximumBatchingWindowInSeconds")
        }
    if pipe.spec.filter_texts:
        described["FilterCriteria"] = {
            "Filters": [{"Pattern": text} for text in pipe.spec.filter_texts]
        }
    return described


def _arn_of(call: Call, reference: str | None) -> str:
    """A pipe's setting naming a resource, as the ARN AWS shows."""
    if not reference:
        return ""
    if reference.startswith("arn:"):
        return reference
    bus = bus_name(reference)
    if bus is not None:
        return f"arn:aws:events:{call.region}:{call.account}:event-bus/{bus}"
    try:
        return call.runtime.resource_arn(resource_name(reference))
    except ResourceNotFoundError:
        return reference


def _target_parameters(pipe: PipeTarget) -> dict[str, Any]:
    given = pipe.spec.settings.get("target_parameters") or {}
    described: dict[str, Any] = {}
    if "input_template" in given:
        described["InputTemplate"] = given["input_template"]
    if "message_group_id" in given:
        described["SqsQueueParameters"] = {"MessageGroupId": given["message_group_id"]}
    bus = {
        aws: given[key]
        for key, aws in (("source", "Source"), ("detail_type", "DetailType"))
        if key in given
    }
    if bus:
        described["EventBridgeEventBusParameters"] = bus
    return described


def _times(record: PipeRecord | None) -> dict[str, Any]:
    if record is None:
        return {}
    return {"CreationTime": record.created, "LastModifiedTime": record.modified}


async def _summary(store: PipeStore, pipe: PipeTarget) -> dict[str, Any]:
    return {
        "Arn": pipe.arn,
        "Name": pipe.name,
        "DesiredState": pipe.desired_state,
        "CurrentState": pipe.current_state,
        **_times(await store.get(pipe.name)),
    }


# -- operations ------------------------------------------------------------------------


def _check_references(call: Call, settings: Mapping[str, Any]) -> None:
    """The resources a pipe names must exist (AWS checks its role can reach them)."""
    names = set(call.runtime.resource_names())
    for key in ("source", "target", "enrichment"):
        reference = settings.get(key)
        if not reference:
            continue
        bus = bus_name(reference) if key == "target" else None
        if bus is not None:
            if bus not in {known.name for known in call.runtime.buses()}:
                raise ApiError("ValidationException", f"Target {reference} does not exist.")
            continue
        if resource_name(reference) not in names:
            raise ApiError("ValidationException", f"{key.title()} {reference} does not exist.")


def _check_source(call: Call, settings: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """What depends on the source's kind, which the API knows before the pipe starts."""
    reference = str(settings.get("source", ""))
    arn = _arn_of(call, resource_name(reference))
    kind = arn.split(":")[2] if arn.startswith("arn:") else ""
    if kind not in ("sqs", "kinesis"):
        raise ApiError(
            "ValidationException", f"Source {reference} is neither a queue nor a stream."
        )
    wrong = "KinesisStreamParameters" if kind == "sqs" else "SqsQueueParameters"
    if wrong in given:
        raise ApiError(
            "ValidationException", f"SourceParameters.{wrong} does not fit the source {reference}."
        )
    source = settings.get("source_parameters") or {}
    if kind == "kinesis" and "starting_position" not in source:
        raise ApiError(
            "ValidationException",
            "SourceParameters.KinesisStreamParameters.StartingPosition is required.",
        )
    wide = source.get("batch_size", 10) > 10
    if kind == "sqs" and wide and source.get("maximum_batching_window_in_seconds", 0) < 1:
        raise ApiError(
            "ValidationException",
            "MaximumBatchingWindowInSeconds must be at least 1 with a BatchSize above 10.",
        )


async def _put(
    call: Call, name: str, settings: dict[str, Any], previous: Mapping[str, Any] | None = None
) -> PipeTarget:
    """Put the pipe resource; a setting its check refuses is a ValidationException
    (and the pipe as it was, ``previous``'s settings, or none, is put back)."""
    try:
        made = await call.runtime.put_resource(name, "pipe", {**settings, ORIGIN: "api"})
    except ConfigError as exc:
        messages = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in exc.errors]
        raise ApiError("ValidationException", "; ".join(messages)) from None
    assert isinstance(made, PipeTarget)
    if made.refusal is not None:  # settings that cannot run: AWS refuses the request
        refusal = made.refusal
        if previous is None:
            await call.runtime.delete_resource(name)
        else:
            await call.runtime.put_resource(name, "pipe", {**previous, ORIGIN: made.origin})
        messages = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in refusal.errors]
        raise ApiError("ValidationException", "; ".join(messages))
    return made


@pipes.operation()
async def create_pipe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    store = await _store(call)
    name = params["Name"]
    if name in call.runtime.resource_names():
        raise ApiError("ConflictException", f"Pipe {name} already exists.", 409)
    settings = settings_of(params)
    _check_references(call, settings)
    _check_source(call, settings, params.get("SourceParameters") or {})
    desired = settings.get("desired_state", "RUNNING")
    await store.put(name, "api", settings, desired)
    try:
        pipe = await _put(call, name, settings)
    except BaseException:
        await store.delete(name)
        raise
    answer = await _summary(store, pipe)
    return {
        **answer,
        "CurrentState": "CREATING" if pipe.current_state != "START_FAILED" else "CREATE_FAILED",
    }


@pipes.operation()
async def update_pipe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    store = await _store(call)
    name = params["Name"]
    pipe = _pipe(call, name)
    base = {key: value for key, value in pipe.spec.settings.items()}
    # UpdatePipe replaces what it names; an absent enrichment keeps the old one.
    settings = settings_of(params, base)
    _check_references(call, settings)
    _check_source(call, settings, params.get("SourceParameters") or {})
    settings["desired_state"] = params.get("DesiredState", pipe.desired_state)
    previous = await store.get(name)
    await store.put(name, "api", settings, settings["desired_state"], current_state="UPDATING")
    try:
        updated = await _put(call, name, settings, base)
    except BaseException:
        if previous is not None:
            await store.put(
                name,
                previous.origin,
                previous.settings,
                previous.desired_state,
                declared_state=previous.declared_state,
            )
        raise
    return {**await _summary(store, updated), "CurrentState": "UPDATING"}


@pipes.operation()
async def describe_pipe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    store = await _store(call)
    pipe = _pipe(call, params["Name"])
    settings = pipe.spec.settings
    described: dict[str, Any] = {
        "Arn": pipe.arn,
        "Name": pipe.name,
        "Description": settings.get("description", ""),
        "DesiredState": pipe.desired_state,
        "CurrentState": pipe.current_state,
        "Source": _arn_of(call, settings.get("source")),
        "SourceParameters": _source_parameters(pipe),
        "Target": _arn_of(call, settings.get("target")),
        "TargetParameters": _target_parameters(pipe),
        "Tags": dict(settings.get("tags") or {}),
        **_times(await store.get(pipe.name)),
    }
    if pipe.state_reason:
        described["StateReason"] = pipe.state_reason
    if settings.get("enrichment"):
        described["Enrichment"] = _arn_of(call, settings["enrichment"])
        template = (settings.get("enrichment_parameters") or {}).get("input_template")
        described["EnrichmentParameters"] = {} if template is None else {"InputTemplate": template}
    if settings.get("role_arn"):
        described["RoleArn"] = settings["role_arn"]
    log_settings = settings.get("log_configuration")
    if log_settings:
        described["LogConfiguration"] = {
            "Level": log_settings.get("level", "OFF"),
            **(
                {
                    "CloudwatchLogsLogDestination": {
                        "LogGroupArn": _arn_of(call, log_settings["log_group"])
                    }
                }
                if log_settings.get("log_group")
                else {}
            ),
            **(
                {"IncludeExecutionData": log_settings["include_execution_data"]}
                if log_settings.get("include_execution_data")
                else {}
            ),
        }
    return described


@pipes.operation()
async def list_pipes(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    store = await _store(call)
    found = []
    for pipe in _pipes(call):
        source = _arn_of(call, pipe.spec.settings.get("source"))
        target = _arn_of(call, pipe.spec.settings.get("target"))
        if not pipe.name.startswith(params.get("NamePrefix", "")):
            continue
        if params.get("DesiredState") not in (None, pipe.desired_state):
            continue
        if params.get("CurrentState") not in (None, pipe.current_state):
            continue
        if not source.startswith(params.get("SourcePrefix", "")):
            continue
        if not target.startswith(params.get("TargetPrefix", "")):
            continue
        entry = {**await _summary(store, pipe), "Source": source, "Target": target}
        if pipe.state_reason:
            entry["StateReason"] = pipe.state_reason
        if pipe.spec.enrichment:
            entry["Enrichment"] = _arn_of(call, pipe.spec.enrichment)
        found.append(entry)
    shown, token = page(found, params.get("NextToken"), params.get("Limit") or PAGE, _TOKEN)
    return {"Pipes": shown, **({"NextToken": token} if token else {})}


#: What StartPipe and StopPipe answer as the current state, as AWS does: the
#: transition under way (DescribePipe shows where it ended).
_TRANSITIONS = {"RUNNING": "STARTING", "STOPPED": "STOPPING"}


async def _set_state(call: Call, name: str, state: str) -> dict[str, Any]:
    store = await _store(call)
    pipe = _pipe(call, name)
    before = pipe.current_state
    await pipe.set_desired(state)
    answer = await _summary(store, pipe)
    if before != state:
        answer["CurrentState"] = _TRANSITIONS[state]
    return answer


@pipes.operation()
async def start_pipe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return await _set_state(call, params["Name"], "RUNNING")


@pipes.operation()
async def stop_pipe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    return await _set_state(call, params["Name"], "STOPPED")


@pipes.operation()
async def delete_pipe(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    store = await _store(call)
    name = params["Name"]
    pipe = _pipe(call, name)
    answer = {**await _summary(store, pipe), "CurrentState": "DELETING"}
    await call.runtime.delete_resource(name)
    await store.delete(name)
    return answer


def _tagged(call: Call, arn: str) -> PipeTarget:
    name = arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn
    pipe = _pipe(call, name)
    if arn.startswith("arn:") and arn.split(":")[5:] != pipe_arn(name).split(":")[5:]:
        raise _not_found(name)
    return pipe


async def _retag(call: Call, pipe: PipeTarget, tags: dict[str, str]) -> None:
    """Tags are settings: the pipe's are saved and it is put again with them."""
    store = await _store(call)
    settings = {**pipe.spec.settings, "tags": tags}
    record = await store.get(pipe.name)
    origin = record.origin if record is not None else pipe.origin
    await store.put(
        pipe.name,
        origin,
        settings,
        pipe.desired_state,
        declared_state=record.declared_state if record is not None else None,
        current_state=pipe.current_state,
    )
    pipe.spec = dataclasses.replace(pipe.spec, settings=settings, tags=tags)


@pipes.operation()
async def tag_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    pipe = _tagged(call, params["resourceArn"])
    await _retag(call, pipe, {**(pipe.spec.settings.get("tags") or {}), **params["tags"]})
    return {}


@pipes.operation()
async def untag_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    pipe = _tagged(call, params["resourceArn"])
    removed = set(params["tagKeys"])
    tags = {k: v for k, v in (pipe.spec.settings.get("tags") or {}).items() if k not in removed}
    await _retag(call, pipe, tags)
    return {}


@pipes.operation()
async def list_tags_for_resource(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    await _store(call)
    pipe = _tagged(call, params["resourceArn"])
    return {"tags": dict(pipe.spec.settings.get("tags") or {})}
