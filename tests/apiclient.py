"""An events API client for tests: a started runtime and endpoint, boto3 calls in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from pipelines.api import ApiServer, served_services
from pipelines.runtime import Runtime

from .recorder import Recorder, plugin_manager

PLUGINS = plugin_manager()


def endpoint_of(process: subprocess.Popen[str]) -> str:
    """The URL a ``pipelines run --api`` subprocess reports among the first
    lines of its stderr (which must be a text pipe)."""
    assert process.stderr is not None
    for _ in range(5):
        found = re.search(r"AWS endpoint: (http://\S+)", process.stderr.readline())
        if found:
            return found.group(1)
    raise AssertionError("the runner did not report its endpoint")


def boto(service: str, url: str, **config: Any) -> Any:
    """A boto3 client of ``service`` for the endpoint at ``url``, with test credentials."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=botocore.config.Config(**config) if config else None,
    )


#: The AWS CLI's credentials in tests (any key: the endpoint does not check them).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_cli(url: str, *args: str, ok: bool = True) -> Any:
    """``aws --endpoint-url URL ARGS`` (the AWS CLI in a subprocess): its JSON
    answer; with ``ok=False`` it must fail, and its stderr is returned."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "--endpoint-url", url, *args],
        env={**os.environ, **CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if not ok:
        assert done.returncode != 0, done.stdout
        return done.stderr
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


async def aws_call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """``client.operation(**params)`` in a thread (boto3 blocks), without its metadata."""
    method: Callable[..., dict[str, Any]] = getattr(client, operation)
    answered = await asyncio.to_thread(method, **params)
    answered.pop("ResponseMetadata")
    return answered


async def aws_refusal(
    client: Any, operation: str, **params: Any
) -> botocore.exceptions.ClientError:
    """The error AWS's client raises for the call (the test fails if it succeeds)."""
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await aws_call(client, operation, **params)
    return raised.value


async def json_answer(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    """Send ``request`` (off the event loop); its status and JSON body, an
    error's too."""

    def send() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return await asyncio.to_thread(send)


class Api:
    """A started runtime and endpoint, and a boto3 events client for it."""

    def __init__(self, runtime: Runtime, server: ApiServer) -> None:
        self.runtime = runtime
        self.server = server
        self.client = boto("events", server.url)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await aws_call(self.client, operation, **params)

    async def error(self, operation: str, **params: Any) -> dict[str, Any]:
        response: dict[str, Any] = (await aws_refusal(self.client, operation, **params)).response
        return response

    async def raw(
        self, target: str, body: bytes, scope: str = "events"
    ) -> tuple[int, dict[str, Any]]:
        """A request as a client without botocore's own checks would send it."""
        request = urllib.request.Request(
            self.server.url,
            data=body,
            headers={
                "X-Amz-Target": target,
                "Content-Type": "application/x-amz-json-1.1",
                "Authorization": f"AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/{scope}/"
                "aws4_request, SignedHeaders=host, Signature=00",
            },
        )
        return await json_answer(request)

    def recorder(self, name: str) -> Recorder:
        target = self.runtime.resource(name)
        assert isinstance(target, Recorder)
        return target


async def started_api(tmp_path: Path) -> AsyncIterator[Api]:
    """A runtime with a queue ``orders`` and recorders ``audit`` and ``dead``, served."""
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=PLUGINS)
    runtime.add_resource("orders", "queue", {})
    runtime.add_resource("audit", "recorder", {})
    runtime.add_resource("dead", "recorder", {})
    server = ApiServer(runtime, served_services(PLUGINS), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Api(runtime, server)
    finally:
        await server.close()
