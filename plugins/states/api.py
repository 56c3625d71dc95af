"""The stepfunctions service (JSON 1.0, ``AWSStepFunctions.*``) on the endpoint.

Registered through the ``register_services`` hook. Operations translate
AWS's names to the runtime's ``Executions`` (``executions_of``) and the
``StatesStore`` and back; the interpreter and the store keep Step
Functions' semantics.

**State machines are resources.** The machines this API sees are the
runtime's ``state_machine`` resources, declared in the YAML or made here:
``CreateStateMachine`` puts a resource of that name
(``Runtime.put_resource``), so a rule can target it by its ARN, and records
in the state database that the API made it, so that after a restart the
first stepfunctions request makes it a resource again (with its last
definition). ``UpdateStateMachine`` replaces the resource (a new revision;
running executions go on with the definition they started with);
``DeleteStateMachine`` stops its running executions, removes the resource
(refused while a rule targets it) and forgets the machine, its executions
staying describable. A YAML machine updated or deleted here gets its
config's definition back at the pipeline's next start or reload.

EXPRESS executions are answered by ``StartSyncExecution`` (and started by
``StartExecution``); as on AWS, DescribeExecution, GetExecutionHistory and
StopExecution refuse their ARNs (``Resource type not valid in this context:
express``) and ListExecutions an EXPRESS machine. See docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.api import ApiError, Call, Service
from pipelines.api.services import page
from pipelines.api.wire import constraint_failed, validation_failed
from pipelines.errors import ConfigError, ResourceNotFoundError
from plugins.states.definition import express_problems, validate
from plugins.states.executions import (
    ExecutionError,
    Executions,
    Machine,
    executions_of,
    machine_arn,
    valid_name,
)
from plugins.states.redrive import redrive_fields
from plugins.states.store import ENDED, EXPRESS, RUNNING, STANDARD, MachineRecord, StatesStore

log = logging.getLogger("plugins.states")

stepfunctions = Service("stepfunctions")

#: ListStateMachines', ListExecutions' and GetExecutionHistory's page size
#: without maxResults (or with 0), as AWS's.
PAGE = 100
#: ValidateStateMachineDefinition's diagnostics without maxResults.
DIAGNOSTICS = 100
#: What DescribeStateMachine answers for settings that are accepted and not kept.
LOGGING = {"level": "OFF", "includeExecutionData": False}
TRACING = {"enabled": False}


@dataclass
class _Context:
    """What the service keeps while an endpoint serves it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: whether the machines the API made in earlier runs are resources again
    restored: bool = False


async def _store(call: Call) -> StatesStore:
    return await call.store(StatesStore, where="the stepfunctions API")


def _engine(call: Call) -> Executions | None:
    try:
        return executions_of(call.runtime)
    except ExecutionError:  # no state machine runs in this runtime
        return None


def _settings(definition: str, machine_type: str, role_arn: str) -> dict[str, Any]:
    return {"definition": definition, "state_machine_type": machine_type, "role_arn": role_arn}


async def _context(call: Call) -> tuple[_Context, StatesStore]:
    """The service's context and store, the API's machines of earlier runs restored."""
    context = call.kept("stepfunctions", _Context)
    store = await _store(call)
    if not context.restored:
        async with context.lock:
            if not context.restored:
                names = call.runtime.resource_names()
                for record in await store.made_by_api():
                    if record.name in names:
                        continue
                    settings = _settings(record.definition, record.machine_type, record.role_arn)
                    try:
                        await call.runtime.put_resource(record.name, "state_machine", settings)
                    except Exception:
                        log.exception(
                            "state machine %s (made by the API) not restored", record.name
                        )
                context.restored = True
    return context, store


# -- ARNs ----------------------------------------------------------------------------


def _invalid_arn(arn: str, why: str | None = None) -> ApiError:
    return ApiError("InvalidArn", f"Invalid Arn: '{why or arn}'")


def _machine_name(arn: str) -> str:
    """The name a state machine ARN gives (``InvalidArn`` for any other text)."""
    if not arn.startswith("arn:"):
        raise _invalid_arn(arn, f"Invalid ARN prefix: {arn}")
    parts = arn.split(":")
    if len(parts) != 7 or parts[2] != "states" or parts[5] != "stateMachine" or not parts[6]:
        raise _invalid_arn(arn)
    return parts[6]


def _checked_execution_arn(arn: str) -> str:
    """A STANDARD execution's ARN (``InvalidArn`` for an EXPRESS one, as AWS)."""
    if not arn.startswith("arn:"):
        raise _invalid_arn(arn, f"Invalid ARN prefix: {arn}")
    parts = arn.split(":")
    if len(parts) >= 6 and parts[5] == "express":
        raise _invalid_arn(arn, "Resource type not valid in this context: express")
    if len(parts) != 8 or parts[2] != "states" or parts[5] != "execution":
        raise _invalid_arn(arn)
    return arn


def _machine(call: Call, arn: str) -> Machine:
    """The running machine ``arn`` names, or ``StateMachineDoesNotExist``."""
    name = _machine_name(arn)
    engine = _engine(call)
    machine = None if engine is None else engine.machines.get(name)
    if machine is None:
        raise ApiError("StateMachineDoesNotExist", f"State Machine Does Not Exist: '{arn}'")
    return machine


def revision_id(arn: str, revision: int) -> str | None:
    """The revisionId AWS gives once a machine was updated (none before)."""
    if revision <= 1:
        return None
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{arn}#{revision}"))


def _definition_problems(definition: str, machine_type: str) -> list[Any]:
    problems = validate(definition)
    if not problems and machine_type == EXPRESS:
        problems = express_problems(definition)
    return problems


def _checked_definition(definition: str, machine_type: str) -> None:
    problems = _definition_problems(definition, machine_type)
    if problems:
        raise ApiError("InvalidDefinition", str(problems[0]))


def _page_of(
    items: list[Any], params: Mapping[str, Any], limit: int = PAGE
) -> tuple[list[Any], str | None]:
    size = params.get("maxResults") or limit
    invalid = ApiError("InvalidToken", f"Invalid Token: '{params.get('nextToken')}'")
    return page(items, params.get("nextToken"), size, invalid)


# -- state machines --------------------------------------------------------------------


def _describe_machine(record: MachineRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stateMachineArn": record.arn,
        "name": record.name,
        "status": "ACTIVE",
        "definition": record.definition,
        "roleArn": record.role_arn,
        "type": record.machine_type,
        "creationDate": record.created,
        "loggingConfiguration": LOGGING,
        "tracingConfiguration": TRACING,
    }
    revision = revision_id(record.arn, record.revision)
    if revision is not None:
        out["revisionId"] = revision
    return out


async def _record(call: Call, store: StatesStore, arn: str) -> MachineRecord:
    machine = _machine(call, arn)
    record = await store.machine(machine.name)
    if record is None:  # a runtime without a state database: EXPRESS machines in memory
        raise ApiError("StateMachineDoesNotExist", f"State Machine Does Not Exist: '{arn}'")
    return record


@stepfunctions.operation()
async def create_state_machine(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context, store = await _context(call)
    name, definition = params["name"], params["definition"]
    machine_type = params.get("type", STANDARD)
    role = params["roleArn"]
    if not valid_name(name):
        raise ApiError("InvalidName", f"Invalid Name: '{name}'")
    if params.get("publish"):
        raise ApiError(
            "NotImplemented",
            "state machine versions (publish) are not implemented by pipelines",
            501,
        )
    _checked_definition(definition, machine_type)
    arn = machine_arn(name)
    async with context.lock:
        engine = _engine(call)
        running = None if engine is None else engine.machines.get(name)
        if running is not None:
            same = (running.definition, running.machine_type, running.role_arn)
            if same != (definition, machine_type, role):
                raise ApiError(
                    "StateMachineAlreadyExists", f"State Machine Already Exists: '{arn}'"
                )
        elif name in call.runtime.resource_names():
            raise ApiError(
                "ValidationException",
                f"the pipeline has a resource named {name!r} that is not a state machine",
            )
        else:
            await call.runtime.put_resource(
                name, "state_machine", _settings(definition, machine_type, role)
            )
            await store.mark_api(name)
            tags = {tag["key"]: tag.get("value", "") for tag in params.get("tags", [])}
            if tags:
                await store.set_tags(name, tags)
    record = await store.machine(name)
    assert record is not None, "the resource's start recorded it"
    return {"stateMachineArn": arn, "creationDate": record.created}


@stepfunctions.operation()
async def describe_state_machine(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, store = await _context(call)
    return _describe_machine(await _record(call, store, params["stateMachineArn"]))


@stepfunctions.operation()
async def list_state_machines(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, store = await _context(call)
    engine = _engine(call)
    names = set() if engine is None else set(engine.machines)
    records = [record for record in await store.machines() if record.name in names]
    records.sort(key=lambda record: (record.created, record.name))
    items, token = _page_of(records, params)
    answer: dict[str, Any] = {
        "stateMachines": [
            {
                "stateMachineArn": record.arn,
                "name": record.name,
                "type": record.machine_type,
                "creationDate": record.created,
            }
            for record in items
        ]
    }
    if token is not None:
        answer["nextToken"] = token
    return answer


@stepfunctions.operation()
async def update_state_machine(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    context, store = await _context(call)
    arn = params["stateMachineArn"]
    changes = ("definition", "roleArn", "loggingConfiguration", "tracingConfiguration")
    if not any(key in params for key in changes):
        raise ApiError(
            "MissingRequiredParameter",
            "Either the definition, the role ARN, the LoggingConfiguration, or the"
            " TracingConfiguration must be specified",
        )
    if params.get("publish"):
        raise ApiError(
            "NotImplemented",
            "state machine versions (publish) are not implemented by pipelines",
            501,
        )
    async with context.lock:
        machine = _machine(call, arn)
        definition = params.get("definition", machine.definition)
        role = params.get("roleArn", machine.role_arn)
        _checked_definition(definition, machine.machine_type)
        if (definition, role) != (machine.definition, machine.role_arn):
            await call.runtime.put_resource(
                machine.name, "state_machine", _settings(definition, machine.machine_type, role)
            )
    record = await store.machine(machine.name)
    assert record is not None
    return {
        "updateDate": record.updated,
        "revisionId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{record.arn}#{record.revision}")),
    }


@stepfunctions.operation()
async def delete_state_machine(call: Call, params: dict[str, Any]) -> None:
    context, store = await _context(call)
    arn = params["stateMachineArn"]
    name = _machine_name(arn)
    async with context.lock:
        engine = _engine(call)
        if engine is None or name not in engine.machines:
            return  # AWS: deleting a machine that does not exist succeeds
        users = [
            f"rule {d.rule} target {d.target_id}"
            for bus in call.runtime.buses()
            for d in bus.deliveries()
            if d.target is call.runtime.resource(name)
        ]
        if users:
            raise ApiError(
                "ValidationException",
                f"state machine {name} is the target of {', '.join(users)}: remove it first",
            )
        for record in await store.executions(name, RUNNING):
            with contextlib.suppress(ExecutionError):
                await engine.stop_execution(record.arn)
        try:
            await call.runtime.delete_resource(name)
        except (ConfigError, ResourceNotFoundError) as error:
            raise ApiError("ValidationException", str(error)) from None
        await store.delete_machine(name)


@stepfunctions.operation()
async def validate_state_machine_definition(
    call: Call, params: dict[str, Any]
) -> Mapping[str, Any]:
    problems = _definition_problems(params["definition"], params.get("type", STANDARD))
    severity = params.get("severity", "ERROR")
    diagnostics = [problem.diagnostic() for problem in problems]
    if severity not in ("ERROR", "WARNING"):  # a severity above ERROR: none of these
        diagnostics = []
    limit = params.get("maxResults") or DIAGNOSTICS
    return {
        "result": "FAIL" if problems else "OK",
        "diagnostics": diagnostics[:limit],
        "truncated": len(diagnostics) > limit,
    }


# -- executions ----------------------------------------------------------------------------


def _running_engine(call: Call, arn: str) -> Executions:
    engine = _engine(call)
    if engine is None:
        raise ApiError("StateMachineDoesNotExist", f"State Machine Does Not Exist: '{arn}'")
    return engine


@stepfunctions.operation()
async def start_execution(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    await _context(call)
    arn = params["stateMachineArn"]
    machine = _machine(call, arn)
    engine = _running_engine(call, arn)
    return await engine.start_execution(machine.name, params.get("input"), params.get("name"))


@stepfunctions.operation()
async def start_sync_execution(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    await _context(call)
    arn = params["stateMachineArn"]
    machine = _machine(call, arn)
    engine = _running_engine(call, arn)
    ended = await engine.start_sync_execution(machine.name, params.get("input"), params.get("name"))
    took = max(float(ended.get("stopDate", 0.0)) - float(ended["startDate"]), 0.0) * 1000
    ended["billingDetails"] = {
        # Express bills by 100 ms (at least 100) and 64 MB steps
        "billedDurationInMilliseconds": max(100, math.ceil(took / 100) * 100),
        "billedMemoryUsedInMB": 64,
    }
    return ended


async def _execution(call: Call, store: StatesStore, arn: str) -> dict[str, Any]:
    """DescribeExecution's fields of a STANDARD execution, from the runner or the store."""
    engine = _engine(call)
    if engine is not None:
        return await engine.describe_execution(arn)
    record = await store.execution(arn)
    if record is None:
        raise ApiError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
    return record.describe(machine_arn(record.machine))


@stepfunctions.operation()
async def describe_execution(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, store = await _context(call)
    arn = _checked_execution_arn(params["executionArn"])
    described = await _execution(call, store, arn)
    record = await store.execution(arn)
    if record is not None:
        described.update(await redrive_fields(store, record))
    return described


@stepfunctions.operation()
async def redrive_execution(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, store = await _context(call)
    arn = _checked_execution_arn(params["executionArn"])
    engine = _engine(call)
    if engine is None:
        if await store.execution(arn) is None:
            raise ApiError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
        raise ApiError("ExecutionNotRedrivable", "State machine is in DELETING status")
    return await engine.redrive_execution(arn, params.get("clientToken"))


@stepfunctions.operation()
async def describe_state_machine_for_execution(
    call: Call, params: dict[str, Any]
) -> Mapping[str, Any]:
    _, store = await _context(call)
    arn = _checked_execution_arn(params["executionArn"])
    record = await store.execution(arn)
    if record is None:
        raise ApiError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
    machine = await store.machine(record.machine)
    definition = await store.definition(record.machine, record.revision)
    if machine is None or definition is None:
        raise ApiError(
            "StateMachineDoesNotExist",
            f"State Machine Does Not Exist: '{machine_arn(record.machine)}'",
        )
    out: dict[str, Any] = {
        "stateMachineArn": machine.arn,
        "name": machine.name,
        "definition": definition,
        "roleArn": record.role_arn,
        "updateDate": machine.updated,
        "loggingConfiguration": LOGGING,
        "tracingConfiguration": TRACING,
    }
    revision = revision_id(machine.arn, record.revision)
    if revision is not None:
        out["revisionId"] = revision
    return out


@stepfunctions.operation()
async def list_executions(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    await _context(call)
    if "mapRunArn" in params:
        raise ApiError("NotImplemented", "map runs are not implemented by pipelines", 501)
    # The model requires neither (one of the two is): the front door lets both go.
    if "stateMachineArn" not in params:
        null = constraint_failed(None, "stateMachineArn", "Member must not be null")
        raise validation_failed([f"{null} (or give a mapRunArn)"])
    arn = params["stateMachineArn"]
    machine = _machine(call, arn)
    if machine.machine_type == EXPRESS:
        raise ApiError(
            "StateMachineTypeNotSupported",
            "This operation is not supported by this type of state machine",
        )
    engine = _running_engine(call, arn)
    found = await engine.list_executions(machine.name, params.get("statusFilter"))
    redrive_filter = params.get("redriveFilter")
    if redrive_filter is not None:
        redriven = redrive_filter == "REDRIVEN"
        found = [item for item in found if bool(item.get("redriveCount")) == redriven]
    items, token = _page_of(found, params)
    answer: dict[str, Any] = {"executions": items}
    if token is not None:
        answer["nextToken"] = token
    return answer


_DATA = ("input", "output")


def _without_data(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its input and output (``includeExecutionData`` false)."""
    out = dict(event)
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k not in _DATA}
    return out


@stepfunctions.operation()
async def get_execution_history(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, store = await _context(call)
    arn = _checked_execution_arn(params["executionArn"])
    engine = _engine(call)
    if engine is not None:
        events = await engine.get_execution_history(arn)
    else:
        if await store.execution(arn) is None:
            raise ApiError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
        events = [event.to_aws() for event in await store.history(arn)]
    if params.get("reverseOrder"):
        events.reverse()
    if params.get("includeExecutionData") is False:
        events = [_without_data(event) for event in events]
    items, token = _page_of(events, params)
    answer: dict[str, Any] = {"events": items}
    if token is not None:
        answer["nextToken"] = token
    return answer


@stepfunctions.operation()
async def stop_execution(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    _, store = await _context(call)
    arn = _checked_execution_arn(params["executionArn"])
    engine = _engine(call)
    if engine is not None:
        return await engine.stop_execution(arn, params.get("error"), params.get("cause"))
    record = await store.execution(arn)
    if record is None:
        raise ApiError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")
    if record.status in ENDED:
        return {"stopDate": record.stopped}
    raise ApiError(
        "ValidationException",
        f"no state machine of this pipeline runs {record.machine}, whose execution this is",
    )


# -- task tokens ----------------------------------------------------------------------------


def _token_engine(call: Call, token: str) -> Executions:
    engine = _engine(call)
    if engine is None:
        raise ApiError("TaskDoesNotExist", f"Task Does Not Exist: '{token}'")
    return engine


@stepfunctions.operation()
async def send_task_success(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    await _context(call)
    token = params["taskToken"]
    return await _token_engine(call, token).send_task_success(token, params["output"])


@stepfunctions.operation()
async def send_task_failure(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    await _context(call)
    token = params["taskToken"]
    engine = _token_engine(call, token)
    return await engine.send_task_failure(token, params.get("error"), params.get("cause"))


@stepfunctions.operation()
async def send_task_heartbeat(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    await _context(call)
    token = params["taskToken"]
    return await _token_engine(call, token).send_task_heartbeat(token)


# -- tags ----------------------------------------------------------------------------------


async def _tagged(call: Call, arn: str) -> tuple[StatesStore, str]:
    _, store = await _context(call)
    try:
        name = _machine(call, arn).name
    except ApiError as error:
        if error.code == "StateMachineDoesNotExist":
            raise ApiError("ResourceNotFound", f"Resource not found: '{arn}'") from None
        raise
    return store, name


@stepfunctions.operation()
async def tag_resource(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store, name = await _tagged(call, params["resourceArn"])
    tags = await store.tags(name)
    tags.update({tag["key"]: tag.get("value", "") for tag in params["tags"]})
    if len(tags) > 50:
        raise ApiError(
            "TooManyTags", f"Too many tags: a resource has at most 50 ('{params['resourceArn']}')"
        )
    await store.set_tags(name, tags)
    return {}


@stepfunctions.operation()
async def untag_resource(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store, name = await _tagged(call, params["resourceArn"])
    tags = await store.tags(name)
    for key in params["tagKeys"]:
        tags.pop(key, None)
    await store.set_tags(name, tags)
    return {}


@stepfunctions.operation()
async def list_tags_for_resource(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    store, name = await _tagged(call, params["resourceArn"])
    tags = await store.tags(name)
    return {"tags": [{"key": key, "value": value} for key, value in tags.items()]}


# -- TestState ----------------------------------------------------------------------------


@stepfunctions.operation()
async def test_state(call: Call, params: dict[str, Any]) -> Mapping[str, Any]:
    """One state run alone (``plugins.states.teststate``); a Task calls the runtime's
    resources as an execution's would."""
    from plugins.states.integrations import RuntimeTasks
    from plugins.states.teststate import TestStateError
    from plugins.states.teststate import test_state as run_test

    attached = None
    engine = _engine(call)
    if engine is None:  # no machine runs here: an engine for this call's tasks only
        services: Any = call.runtime  # the Runtime: its targets' services too
        engine = attached = await Executions.attach(services, durable=False)
    try:
        return await run_test(
            params,
            tasks=lambda execution: RuntimeTasks(engine, execution),
            clock=engine.clock,
        )
    except TestStateError as error:
        raise ApiError(error.code, error.message) from None
    finally:
        if attached is not None:
            await attached.detach()
