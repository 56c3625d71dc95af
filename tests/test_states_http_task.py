"""The HTTP Task (``arn:aws:states:::http:invoke``) against a real local HTTP
server, through the runtime's ``connection`` resources."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import build_runtime, load_config
from pipelines.runtime import Runtime
from plugins.states.executions import executions_of
from plugins.states.http_task import url_encoded

from .httpserver import Answer, ScriptedServer
from .recorder import plugin_manager

CONNECTION_ARN = (
    "arn:aws:events:us-east-1:000000000000:connection/{name}/8f1e0c1e-0000-0000-0000-000000000000"
)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    made = await ScriptedServer().start()
    try:
        yield made
    finally:
        await made.close()


def _task(parameters: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::http:invoke",
                "Parameters": parameters,
                "End": True,
                **more,
            }
        },
    }


async def _runtime(
    tmp_path: Path,
    server: ScriptedServer,
    definition: dict[str, Any],
    machine_type: str = "EXPRESS",
    state_path: Path | None = None,
) -> Runtime:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        f"""resources:
  keyed:
    type: connection
    authorization_type: API_KEY
    api_key: {{name: x-api-key, value: s3cret}}
    parameters:
      header: {{x-team: payments}}
      query: {{source: pipelines}}
      body: {{added: from-connection}}
  oauth:
    type: connection
    authorization_type: OAUTH_CLIENT_CREDENTIALS
    oauth:
      authorization_endpoint: {server.url}/token
      http_method: POST
      client_id: client
      client_secret: secret
  flow:
    type: state_machine
    state_machine_type: {machine_type}
    definition: {json.dumps(json.dumps(definition))}
"""
    )
    return await build_runtime(load_config([path]), state_path=state_path, plugins=plugin_manager())


async def _run(runtime: Runtime, given: Any = None) -> dict[str, Any]:
    async with runtime:
        answer: dict[str, Any] = await executions_of(runtime).start_sync_execution(
            "flow", json.dumps(given if given is not None else {})
        )
    return answer


async def test_a_post_goes_out_with_the_connections_credentials_and_aws_headers(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.script("/orders", [Answer(201, '{"id": 7}', headers={"X-Trace": "abc"})])
    definition = _task(
        {
            "ApiEndpoint": f"{server.url}/orders",
            "Method": "POST",
            "Authentication": {"ConnectionArn": CONNECTION_ARN.format(name="keyed")},
            "Headers": {"x-order": "A1"},
            "QueryParameters": {"dry": "no"},
            "RequestBody": {"item.$": "$.item", "qty": 2},
        }
    )
    answer = await _run(await _runtime(tmp_path, server, definition), {"item": "book"})
    assert answer["status"] == "SUCCEEDED", answer
    (seen,) = server.requests
    assert (seen.method, seen.path) == ("POST", "/orders")
    assert seen.query == {"dry": "no", "source": "pipelines"}
    assert seen.headers["x-api-key"] == "s3cret"
    assert seen.headers["x-team"] == "payments"
    assert seen.headers["x-order"] == "A1"
    assert seen.headers["user-agent"] == "Amazon|StepFunctions|HttpInvoke|us-east-1"
    assert seen.headers["range"] == "bytes=0-262144"
    assert seen.headers["content-type"] == "application/json; charset=UTF-8"
    assert seen.json() == {"item": "book", "qty": 2, "added": "from-connection"}
    output = json.loads(answer["output"])
    assert (output["StatusCode"], output["StatusText"]) == (201, "Created")
    assert output["ResponseBody"] == {"id": 7}
    assert output["Headers"]["X-Trace"] == ["abc"]
    assert output["Headers"]["Content-Type"] == ["application/json; charset=utf-8"]


async def test_a_standard_machine_checkpoints_an_http_tasks_result_and_goes_on(
    tmp_path: Path, server: ScriptedServer
) -> None:
    """A STANDARD execution saves each state's output in its checkpoint: the
    result's header names (aiohttp's own str subclass) must be plain keys."""
    server.script("/orders", [Answer(200, '{"id": 7}', headers={"X-Trace": "abc"})])
    keyed = {"ConnectionArn": CONNECTION_ARN.format(name="keyed")}
    definition = _task(
        {"ApiEndpoint": f"{server.url}/orders", "Method": "GET", "Authentication": keyed}
    )
    definition["States"]["Call"].pop("End")
    definition["States"]["Call"]["Next"] = "Done"
    definition["States"]["Done"] = {"Type": "Pass", "OutputPath": "$.Headers", "End": True}
    runtime = await _runtime(tmp_path, server, definition, "STANDARD", tmp_path / "state.db")
    async with runtime:
        executions = executions_of(runtime)
        started = await executions.start_execution("flow", "{}")
        async with asyncio.timeout(30):
            while (done := await executions.describe_execution(started["executionArn"]))[
                "status"
            ] == "RUNNING":
                await asyncio.sleep(0.02)
    assert done["status"] == "SUCCEEDED", (done.get("error"), done.get("cause"))
    assert json.loads(done["output"])["X-Trace"] == ["abc"]


async def test_a_status_outside_2xx_is_an_error_named_by_its_code(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.script("/missing", [Answer(404, '{"message": "no such order"}')])
    definition = _task(
        {
            "ApiEndpoint": f"{server.url}/missing",
            "Method": "GET",
            "Authentication": {"ConnectionArn": "keyed"},
        },
        Catch=[{"ErrorEquals": ["States.Http.StatusCode.404"], "Next": "Gone"}],
    )
    definition["States"]["Call"].pop("End")
    definition["States"]["Call"]["Next"] = "Done"
    definition["States"]["Done"] = {"Type": "Succeed"}
    definition["States"]["Gone"] = {"Type": "Pass", "End": True}
    answer = await _run(await _runtime(tmp_path, server, definition))
    assert answer["status"] == "SUCCEEDED", answer
    caught = json.loads(answer["output"])
    assert caught["Error"] == "States.Http.StatusCode.404"
    cause = json.loads(caught["Cause"])
    assert (cause["StatusCode"], cause["ResponseBody"]) == (404, {"message": "no such order"})
    assert server.requests[0].body == b""  # a GET has no body


async def test_no_answer_is_a_socket_error(tmp_path: Path, server: ScriptedServer) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    definition = _task(
        {
            "ApiEndpoint": f"http://127.0.0.1:{port}/x",
            "Method": "GET",
            "Authentication": {"ConnectionArn": "keyed"},
        }
    )
    answer = await _run(await _runtime(tmp_path, server, definition))
    assert (answer["status"], answer["error"]) == ("FAILED", "States.Http.Socket")


async def test_a_form_body_and_an_oauth_token_fetched_again_when_refused(
    tmp_path: Path, server: ScriptedServer
) -> None:
    definition = {
        "StartAt": "First",
        "States": {
            "First": {
                "Type": "Task",
                "Resource": "arn:aws:states:::http:invoke",
                "Parameters": {
                    "ApiEndpoint": f"{server.url}/secure/form",
                    "Method": "PUT",
                    "Authentication": {"ConnectionArn": CONNECTION_ARN.format(name="oauth")},
                    "RequestBody": {"tags": ["a", "b"], "who": {"name": "ada"}},
                    "Transform": {
                        "RequestBodyEncoding": "URL_ENCODED",
                        "RequestEncodingOptions": {"ArrayFormat": "BRACKETS"},
                    },
                },
                "ResultSelector": {"status.$": "$.StatusCode"},
                "End": True,
            }
        },
    }
    runtime = await _runtime(tmp_path, server, definition)
    async with runtime:
        engine = executions_of(runtime)
        first = await engine.start_sync_execution("flow", "{}")
        server.revoke()  # the token the connection holds is refused: fetched again once
        second = await engine.start_sync_execution("flow", "{}")
    assert (first["status"], second["status"]) == ("SUCCEEDED", "SUCCEEDED"), (first, second)
    assert json.loads(second["output"]) == {"status": 200}
    assert server.tokens_issued == 2
    sent = server.requests[-1]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qsl(sent.body.decode()) == [
        ("tags[]", "a"),
        ("tags[]", "b"),
        ("who[name]", "ada"),
    ]
    assert sent.headers["authorization"] == "Bearer token-2"


async def test_a_connection_the_runtime_does_not_have_fails_the_task(
    tmp_path: Path, server: ScriptedServer
) -> None:
    definition = _task(
        {
            "ApiEndpoint": f"{server.url}/x",
            "Method": "GET",
            "Authentication": {"ConnectionArn": CONNECTION_ARN.format(name="nobody")},
        }
    )
    answer = await _run(await _runtime(tmp_path, server, definition))
    assert (answer["status"], answer["error"]) == (
        "FAILED",
        "EventBridge.ResourceNotFoundException",
    )
    assert server.requests == []


def test_array_formats_of_a_form_body() -> None:
    body = {"a": [1, "x"], "n": {"m": True}}
    assert urllib.parse.unquote(url_encoded(body, "INDICES")) == "a[0]=1&a[1]=x&n[m]=true"
    assert urllib.parse.unquote(url_encoded(body, "BRACKETS")) == "a[]=1&a[]=x&n[m]=true"
    assert urllib.parse.unquote(url_encoded(body, "REPEAT")) == "a=1&a=x&n[m]=true"
    assert urllib.parse.unquote(url_encoded(body, "COMMAS")) == "a=1,x&n[m]=true"
