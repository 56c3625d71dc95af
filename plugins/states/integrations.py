"""Task states calling the runtime's resources: the ``TaskRunner`` of executions.

``RuntimeTasks`` performs a Task state's call on the resources of the
runtime its execution runs in (``TargetServices.resource``), as Step
Functions' integrations do:

- a ``function`` resource as Lambda: ``arn:aws:lambda:REGION:ACCOUNT:function:NAME``
  (the result is the function's return) or ``arn:aws:states:::lambda:invoke``
  with ``FunctionName`` and ``Payload`` (the result in AWS's shape:
  ``Payload``, ``StatusCode``, ``ExecutedVersion``, ``SdkHttpMetadata``...);
  ``InvocationType: Event`` answers at once (``StatusCode`` 202) and runs
  the function in the background;
- a ``queue`` resource: ``sqs:sendMessage`` (``QueueUrl`` or the queue's
  name, ``MessageBody``, ``DelaySeconds``, ``MessageAttributes``,
  ``MessageGroupId``, ``MessageDeduplicationId``);
- a ``topic`` resource: ``sns:publish`` (``TopicArn``, ``Message``,
  ``Subject``, ``MessageAttributes``, ``MessageGroupId``);
- a ``stream`` resource: ``aws-sdk:kinesis:putRecord`` (also spelled
  ``kinesis:putRecord``; ``StreamName`` or ``StreamARN``, ``Data``,
  ``PartitionKey``, ``ExplicitHashKey``);
- the runtime's buses: ``events:putEvents`` (``Entries``; a failed entry
  fails the task with ``EventBridge.FailedEntry``);
- another ``state_machine`` resource: ``states:startExecution`` (the
  start's ``ExecutionArn`` and ``StartDate``), ``.sync`` (the child's
  DescribeExecution, its Output as text) and ``.sync:2`` (Output as JSON);
  a child's failure fails the task with ``States.TaskFailed``.

Each of them also as ``.waitForTaskToken``: the token is recorded before
the call (``$$.Task.Token`` goes in the Parameters), the call's answer is
the ``TaskSubmitted`` event, and the task ends with SendTaskSuccess or
SendTaskFailure (``Executions.send_task_*``). ``http:invoke`` calls an
HTTP API through a ``connection`` resource (``plugins.states.http_task``).
Activities are not served yet: such a task fails with ``States.TaskFailed``
naming the resource.

A resumed attempt (``TaskRequest.resumed``: its call was made before its
execution stopped) is not called again: a ``.waitForTaskToken`` one waits
for its token, a ``states:startExecution`` is made again under the same
child name (a start is idempotent by name), any other fails with
``tasks.interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from pipelines.errors import CodedError, DeliveryError, PipelinesError
from pipelines.targets import DeliveryContext, Target, payload_text
from plugins.states.errors import StatesError
from plugins.states.interpreter import Execution
from plugins.states.store import SUCCEEDED, ExecutionRecord
from plugins.states.tasks import TaskRequest, interrupted

if TYPE_CHECKING:
    from plugins.states.executions import Executions

Json = Any


def _text(value: Json) -> str:
    """A parameter that is text in AWS's API: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _sdk_metadata(request_id: str) -> dict[str, Json]:
    return {
        "SdkHttpMetadata": {
            "AllHttpHeaders": {"x-amzn-RequestId": [request_id]},
            "HttpHeaders": {"x-amzn-RequestId": request_id},
            "HttpStatusCode": 200,
        },
        "SdkResponseMetadata": {"RequestId": request_id},
    }


def _last(value: str, separator: str) -> str:
    return value.rsplit(separator, 1)[-1]


class RuntimeTasks:
    """The ``TaskRunner`` of one execution (see the module's doc)."""

    def __init__(self, engine: Executions, execution: Execution) -> None:
        self.engine = engine
        self.execution = execution

    @property
    def services(self) -> Any:
        return self.engine.services

    async def run(self, request: TaskRequest) -> Json:
        resource = request.resource
        if request.resource.pattern == "waitForTaskToken":
            return await self._wait_for_token(request)
        if request.resumed and not _restartable(resource.resource_type, resource.resource):
            raise interrupted(request)
        return await self._call(request)

    async def _wait_for_token(self, request: TaskRequest) -> Json:
        token = request.task_token
        assert token is not None
        state = request.context.get("State", {}).get("Name", "")
        if not request.resumed:
            await self.engine.add_token(token, self.execution.arn, state)
            request.submitted(await self._call(request))
            await self.engine.submitted(self.execution.arn, token)
        output, error, cause = await self.engine.await_token(token, request.heartbeat)
        if output is None:
            raise StatesError(error or "", cause)
        return orjson.loads(output)

    async def _call(self, request: TaskRequest) -> Json:
        self.engine.calling += 1
        try:
            return await self._calling(request)
        finally:
            self.engine.calling -= 1

    async def _calling(self, request: TaskRequest) -> Json:
        resource = request.resource
        if resource.kind == "lambda":
            return await self._invoke(resource.arn, request.input, request, raw=True)
        if resource.kind == "activity":
            raise StatesError(
                "States.TaskFailed", f"activities are not supported yet: '{resource.arn}'"
            )
        service = resource.resource_type.removeprefix("aws-sdk:")
        action = resource.resource.split(".", 1)[0]
        parameters = request.input if isinstance(request.input, Mapping) else {}
        handler = _HANDLERS.get((service, action))
        if handler is None:
            raise StatesError(
                "States.TaskFailed",
                f"the resource '{resource.arn}' is not served by this runtime"
                " (served: lambda:invoke, sqs:sendMessage, sns:publish, kinesis:putRecord,"
                " events:putEvents, states:startExecution, http:invoke)",
            )
        return await handler(self, parameters, request)

    def _resource(self, name: str, error_prefix: str, kind: type[Target] | None = None) -> Target:
        """The runtime's resource named ``name`` (or whose queue, topic or
        stream is so named); a task failure in the service's words when none is.
        A config test's stand-in (``pipelines test``) is seen through: the
        resource it wraps is called and the stand-in notes what it got."""
        services = self.services
        try:
            found: Target = services.resource(name)
            if kind is None or isinstance(_real(found), kind):
                return found
        except PipelinesError:
            pass
        names = getattr(services, "resource_names", None)
        if kind is not None and names is not None:
            for other in names():
                target: Target = services.resource(other)
                if isinstance(_real(target), kind) and name in _own_names(_real(target)):
                    return target
        stand_in = self._stand_in(name)
        if stand_in is not None:
            raise StatesError(
                f"{error_prefix}.ResourceNotFoundException",
                f"the resource '{name}' is replaced by a stand-in in this test (mocks):"
                " give its Task state a mocked response (state_machines) instead",
            )
        raise StatesError(
            f"{error_prefix}.ResourceNotFoundException",
            f"no resource named '{name}' in this runtime",
        )

    def _stand_in(self, name: str) -> Target | None:
        """A config test's stand-in with nothing behind it, under ``name``."""
        try:
            found: Target = self.services.resource(name)
        except PipelinesError:
            return None
        wrapped = getattr(found, "inner", _NOTHING)
        return found if wrapped is None else None

    # -- functions (Lambda) ------------------------------------------------------------

    async def _invoke(
        self, function: str, payload: Json, request: TaskRequest, *, raw: bool
    ) -> Json:
        from plugins.function import FunctionTarget

        name = _function_name(function)
        request_id = str(uuid.uuid4())
        context = DeliveryContext(
            self.execution.arn,
            request.context.get("State", {}).get("Name", ""),
            {"id": request_id},
        )
        stand_in = self._stand_in(name)
        try:
            if stand_in is not None:  # a config test's mocked function: it records, and
                result = await stand_in.deliver(payload, context)  # succeeds or fails
            else:
                found = self._resource(name, "Lambda", FunctionTarget)
                target = _real(found)
                assert isinstance(target, FunctionTarget)
                result = await target.invoke(payload, context)
                _note(found, payload)
        except DeliveryError as error:
            raise _lambda_failure(error, request_id) from None
        if raw:
            return result
        return {
            "ExecutedVersion": "$LATEST",
            "Payload": result,
            **_sdk_metadata(request_id),
            "StatusCode": 200,
        }

    async def _lambda_invoke(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        function = parameters.get("FunctionName")
        if not isinstance(function, str):
            raise StatesError("Lambda.InvalidParameterValueException", "FunctionName is required")
        payload = parameters.get("Payload")
        if payload is None:  # none sent: the function receives {} (AWS's recorded TestState)
            payload = {}
        if isinstance(payload, str):
            with contextlib.suppress(orjson.JSONDecodeError):
                payload = orjson.loads(payload)
        if parameters.get("InvocationType") == "Event":
            self.services.spawn(self._in_background(function, payload, request))
            request_id = str(uuid.uuid4())
            return {"Payload": "", **_sdk_metadata(request_id), "StatusCode": 202}
        return await self._invoke(function, payload, request, raw=False)

    async def _in_background(self, function: str, payload: Json, request: TaskRequest) -> None:
        try:
            await self._invoke(function, payload, request, raw=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            from plugins.states.executions import log

            log.warning("an asynchronous invocation of %s failed: %s", function, exc)

    # -- queues, topics, streams, buses ----------------------------------------------

    async def _send_message(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        from pipelines.errors import QueueError
        from plugins.queue.target import QueueTarget

        url = parameters.get("QueueUrl")
        if not isinstance(url, str) or "MessageBody" not in parameters:
            raise StatesError(
                "SQS.MissingParameterException", "QueueUrl and MessageBody are required"
            )
        found = self._resource(_last(url, "/"), "SQS", QueueTarget)
        target = _real(found)
        assert isinstance(target, QueueTarget)
        store = target.store
        if store is None:
            raise StatesError("SQS.ServiceUnavailableException", f"queue {target.queue} is stopped")
        delay = parameters.get("DelaySeconds")
        try:
            sent = await store.send(
                target.queue,
                _text(parameters["MessageBody"]),
                parameters.get("MessageAttributes") or {},
                delay_seconds=delay if isinstance(delay, int) else None,
                group_id=parameters.get("MessageGroupId"),
                deduplication_id=parameters.get("MessageDeduplicationId"),
            )
        except QueueError as error:
            raise StatesError(f"SQS.{error.code}", error.message) from None
        _note(found, _text(parameters["MessageBody"]))
        result: dict[str, Json] = {
            "MD5OfMessageBody": sent.md5_of_body,
            "MessageId": sent.message_id,
        }
        if sent.sequence_number is not None:
            result["SequenceNumber"] = sent.sequence_number
        return {**result, **_sdk_metadata(str(uuid.uuid4()))}

    async def _publish(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        from plugins.topic.target import TopicTarget

        topic = parameters.get("TopicArn") or parameters.get("TargetArn")
        if not isinstance(topic, str) or "Message" not in parameters:
            raise StatesError("SNS.InvalidParameterException", "TopicArn and Message are required")
        found = self._resource(_last(topic, ":"), "SNS", TopicTarget)
        target = _real(found)
        assert isinstance(target, TopicTarget)
        request_id = str(uuid.uuid4())
        context = DeliveryContext(
            self.execution.arn,
            request.context.get("State", {}).get("Name", ""),
            {"id": request_id},
        )
        subject = parameters.get("Subject")
        try:
            message_id = await target.publish(
                _text(parameters["Message"]),
                dict(parameters.get("MessageAttributes") or {}),
                context,
                subject=subject if isinstance(subject, str) else None,
                group_id=parameters.get("MessageGroupId"),
            )
        except (DeliveryError, CodedError) as error:
            raise StatesError(f"SNS.{error.code}", error.message) from None
        _note(found, _text(parameters["Message"]))
        return {"MessageId": message_id, **_sdk_metadata(request_id)}

    async def _put_record(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        from pipelines.errors import StreamError
        from plugins.stream.target import StreamTarget

        stream = parameters.get("StreamName") or parameters.get("StreamARN")
        key = parameters.get("PartitionKey")
        if not isinstance(stream, str) or not isinstance(key, str) or "Data" not in parameters:
            raise StatesError(
                "Kinesis.InvalidArgumentException",
                "StreamName (or StreamARN), Data and PartitionKey are required",
            )
        found = self._resource(_last(stream, "/"), "Kinesis", StreamTarget)
        target = _real(found)
        assert isinstance(target, StreamTarget)
        if target.store is None:
            raise StatesError(
                "Kinesis.ResourceInUseException", f"stream {target.stream} is stopped"
            )
        hash_key = parameters.get("ExplicitHashKey")
        try:
            put: Json = await target.store.put_record(
                target.stream,
                payload_text(parameters["Data"]).encode(),
                key,
                explicit_hash_key=hash_key if isinstance(hash_key, str) else None,
            )
        except StreamError as error:
            raise StatesError(f"Kinesis.{error.code}", error.message) from None
        _note(found, parameters["Data"])
        return put

    async def _put_events(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        entries = parameters.get("Entries")
        if not isinstance(entries, list) or not entries:
            raise StatesError("EventBridge.ValidationException", "Entries is required")
        given = []
        for entry in entries:
            entry = dict(entry) if isinstance(entry, Mapping) else {}
            if "Detail" in entry and not isinstance(entry["Detail"], str):
                entry["Detail"] = _text(entry["Detail"])
            given.append(entry)
        try:
            result: dict[str, Json] = await self.services.put_events(given)
        except PipelinesError as error:
            raise StatesError("EventBridge.InternalException", str(error)) from None
        if result.get("FailedEntryCount"):
            raise StatesError("EventBridge.FailedEntry", orjson.dumps(result).decode())
        return {**result, **_sdk_metadata(str(uuid.uuid4()))}

    # -- HTTP APIs ------------------------------------------------------------------------

    async def _http_invoke(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        from plugins.http.destination import ConnectionTarget
        from plugins.states.http_task import connection_name, invoke

        given = parameters.get("Authentication")
        arn = given.get("ConnectionArn") if isinstance(given, Mapping) else None
        if not isinstance(arn, str) or not arn:
            raise StatesError(
                "States.Runtime",
                "The HTTP Task's Parameters are not valid: "
                "Authentication.ConnectionArn is required",
            )
        found = self._resource(connection_name(arn), "EventBridge", ConnectionTarget)
        connection = _real(found)
        assert isinstance(connection, ConnectionTarget)
        if connection.authorization is None:
            raise StatesError("States.Http.Socket", f"connection {connection.name} is not started")
        result = await invoke(parameters, connection.authorization, request.resource.region)
        _note(found, parameters.get("RequestBody"))
        return result

    # -- nested executions --------------------------------------------------------------

    async def _start_execution(self, parameters: Mapping[str, Json], request: TaskRequest) -> Json:
        from plugins.states.executions import ExecutionError

        machine = parameters.get("StateMachineArn")
        if not isinstance(machine, str):
            raise StatesError("StepFunctions.InvalidArnException", "StateMachineArn is required")
        given_input = parameters.get("Input", {})
        name = parameters.get("Name")
        if not isinstance(name, str):
            # one name per attempt: a resumed attempt starts (or finds) the same child
            state = request.context.get("State", {})
            seed = f"{self.execution.arn}/{state.get('Name')}/{state.get('EnteredTime')}"
            name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/{state.get('RetryCount', 0)}"))
        try:
            started = await self.engine.start_execution(
                machine, _text(given_input), name, parent=self.execution.arn
            )
        except ExecutionError as error:
            raise StatesError(f"StepFunctions.{error.code}Exception", error.message) from None
        pattern = request.resource.pattern
        if not pattern.startswith("sync"):
            return {
                "ExecutionArn": started["executionArn"],
                "StartDate": int(started["startDate"] * 1000),
                **_sdk_metadata(str(uuid.uuid4())),
            }
        self.engine.calling -= 1  # the child runs on its own meanwhile (``activity``)
        try:
            record = await self.engine.wait_for(started["executionArn"])
        finally:
            self.engine.calling += 1
        described = _described(record, self.engine, json_output=pattern == "sync:2")
        if record.status != SUCCEEDED:
            raise StatesError("States.TaskFailed", orjson.dumps(described).decode())
        return described


def _described(record: ExecutionRecord, engine: Executions, *, json_output: bool) -> Json:
    """A ``.sync`` child's DescribeExecution as its parent's result: dates in
    milliseconds; with ``.sync:2`` its Input and Output as JSON."""
    from plugins.states.executions import machine_arn

    out: dict[str, Json] = {
        "ExecutionArn": record.arn,
        "StateMachineArn": machine_arn(record.machine),
        "Name": record.name,
        "Status": record.status,
        "StartDate": int(record.started * 1000),
        "StopDate": int((record.stopped or 0.0) * 1000),
        "Input": orjson.loads(record.input) if json_output else record.input,
        "InputDetails": {"Included": True},
        "RedriveCount": record.redrive_count,
    }
    if record.status == SUCCEEDED and record.output is not None:
        out["Output"] = orjson.loads(record.output) if json_output else record.output
        out["OutputDetails"] = {"Included": True}
    if record.error is not None:
        out["Error"] = record.error
    if record.cause is not None:
        out["Cause"] = record.cause
    return out


def _function_name(function: str) -> str:
    """A function's name from its ARN (``...:function:NAME[:QUALIFIER]``) or the name."""
    if function.startswith("arn:"):
        parts = function.split(":")
        if len(parts) >= 7 and parts[5] == "function":
            return parts[6]
    return function


def _lambda_failure(error: DeliveryError, request_id: str) -> StatesError:
    """A function's failure as Step Functions reports it: its exception's
    type as the error, Lambda's error payload as the cause."""
    if error.code == "Timeout":
        timed_out = {
            "errorMessage": f"Task timed out: {error.message}",
            "errorType": "Sandbox.Timedout",
        }
        return StatesError("Sandbox.Timedout", orjson.dumps(timed_out).decode())
    if error.code == "NotRunning":
        return StatesError("Lambda.ServiceException", error.message)
    cause = error.__cause__
    if error.code == "FunctionError" and cause is not None:
        kind, message = type(cause).__name__, str(cause)
    else:  # a DeliveryError the function raised itself
        kind, message = error.code, error.message
    body: dict[str, Json] = {
        "errorMessage": message,
        "errorType": kind,
        "requestId": request_id,
        "stackTrace": [],
    }
    return StatesError(kind, orjson.dumps(body).decode())


_NOTHING = object()


def _real(target: Target) -> Target:
    """The resource a config test's stand-in wraps (``inner``), or ``target``."""
    inner = getattr(target, "inner", None)
    return inner if isinstance(inner, Target) else target


def _note(found: Target, payload: Json) -> None:
    """Tell a config test's stand-in what its resource got from a task."""
    note = getattr(found, "note", None)
    if note is not None:
        note(payload)


def _own_names(target: Target) -> set[str]:
    """The names a queue, topic or stream resource answers to besides its own."""
    return {
        value
        for attribute in ("queue", "topic", "stream")
        if isinstance(value := getattr(target, attribute, None), str)
    }


def _restartable(service: str, action: str) -> bool:
    """A call made again under the same name finds what the first made."""
    return service == "states" and action.startswith("startExecution")


_HANDLERS: dict[tuple[str, str], Any] = {
    ("lambda", "invoke"): RuntimeTasks._lambda_invoke,
    ("sqs", "sendMessage"): RuntimeTasks._send_message,
    ("sns", "publish"): RuntimeTasks._publish,
    ("kinesis", "putRecord"): RuntimeTasks._put_record,
    ("events", "putEvents"): RuntimeTasks._put_events,
    ("eventbridge", "putEvents"): RuntimeTasks._put_events,
    ("states", "startExecution"): RuntimeTasks._start_execution,
    ("http", "invoke"): RuntimeTasks._http_invoke,
}
