"""The AWS-compatible endpoint: one HTTP port, every served service's wire protocol.

A request is routed as AWS routes it: the service from the SigV4 credential
scope of its ``Authorization`` header, else from its ``X-Amz-Target``
prefix; the operation from ``X-Amz-Target``; the region from the scope. The
request is read by the operation's input shape, the operation runs, and its
answer (or error) is written in the service's protocol. Served with aiohttp,
the one HTTP stack of the project.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from pipelines.api.errors import ApiError, not_implemented, translate
from pipelines.api.services import ApiHost, Call, QueryError, Service
from pipelines.api.wire import read_input, write_output
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION

log = logging.getLogger("pipelines.api")

#: ``Credential=AKID/20261204/us-east-1/events/aws4_request`` in a SigV4 header.
_SCOPE = re.compile(r"Credential=([^/\s,]+)/\d{8}/([^/\s,]+)/([^/\s,]+)/aws4_request")
#: AWS's largest request body among the served operations is 1 MiB (SQS); a
#: little more leaves room for JSON's own encoding of it.
MAX_BODY = 2 * 1024 * 1024
_JSON_PROTOCOLS = {"json"}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, ``PORT``: on 127.0.0.1) as (host, port)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{text!r}: the port must be 0-65535")
    return host.strip("[]") or "127.0.0.1", number


class Router:
    """Finds a request's service and operation among the served ones."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = dict(services)
        self._by_signing: dict[str, Service] = {}
        self._by_target: dict[str, Service] = {}
        for service in self.services.values():
            meta = service.model.metadata
            self._by_signing[meta.get("signingName", meta["endpointPrefix"])] = service
            if "targetPrefix" in meta:
                self._by_target[meta["targetPrefix"]] = service

    def route(self, signing_name: str | None, target: str | None) -> tuple[Service, str]:
        prefix, _, operation = (target or "").rpartition(".")
        service = self._by_target.get(prefix) if prefix else None
        if service is None and signing_name is not None:
            service = self._by_signing.get(signing_name)
        if service is None:
            named = signing_name or prefix or "no service"
            raise ApiError(
                "UnknownService",
                f"{named!r} is not a service this endpoint serves"
                f" (served: {', '.join(sorted(self.services))})",
                400,
            )
        if service.model.metadata.get("protocol") not in _JSON_PROTOCOLS or not operation:
            raise ApiError(
                "UnknownOperationException",
                f"no operation given for {service.name} (X-Amz-Target is required)",
            )
        return service, operation


class ApiServer:
    """Serves ``services`` for ``runtime`` on ``host:port`` until closed."""

    def __init__(
        self,
        runtime: ApiHost,
        services: Mapping[str, Service],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.runtime = runtime
        self.router = Router(services)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind the port (an error if it is taken) and serve."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:  # the port picked when 0 was asked for
            self.port = runner.addresses[0][1]

    async def close(self) -> None:
        """Stop taking requests; those in flight finish (aiohttp's shutdown),
        long polls at once with what they have; then each service's ``closed``."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            services = list(self.router.services.values())
            for service in services:
                if service.stopping is not None:
                    service.stopping(self.runtime)
            try:
                await runner.cleanup()
            finally:
                for service in services:
                    if service.closed is not None:
                        try:
                            await service.closed(self.runtime)
                        except Exception:
                            log.exception("closing %s failed", service.name)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        scope = _SCOPE.search(request.headers.get("Authorization", ""))
        try:
            service, operation = self.router.route(
                scope.group(3) if scope else None, request.headers.get("X-Amz-Target")
            )
        except ApiError as error:
            return _json_error(None, error, request_id, "1.0")
        version = service.model.metadata.get("jsonVersion", "1.0")
        try:
            body = await request.read()
            answer = await self._call(service, operation, body, scope, request)
        except web.HTTPRequestEntityTooLarge:
            too_large = ApiError("RequestEntityTooLarge", f"the body is over {MAX_BODY} bytes", 413)
            return _json_error(service, too_large, request_id, version)
        except ApiError as error:
            return _json_error(service, error, request_id, version)
        except Exception as exc:
            known = translate(exc)
            if known is None:
                log.exception("%s %s failed", service.name, operation)
                known = ApiError(
                    "InternalFailure", f"{type(exc).__name__}: {exc}", 500, sender_fault=False
                )
            return _json_error(service, known, request_id, version)
        return web.Response(
            body=orjson.dumps(answer),
            headers={
                "Content-Type": f"application/x-amz-json-{version}",
                "x-amzn-RequestId": request_id,
            },
        )

    async def _call(
        self,
        service: Service,
        operation: str,
        body: bytes,
        scope: re.Match[str] | None,
        request: web.Request,
    ) -> Any:
        model = service.model
        if operation not in model.operation_names:
            raise ApiError(
                "UnknownOperationException", f"{service.name} has no operation {operation!r}"
            )
        function = service.operations.get(operation)
        if function is None:
            raise not_implemented(service.name, operation)
        op_model = model.operation_model(operation)
        params = read_input(op_model.input_shape, body, enums=service.check_enums)
        call = Call(
            runtime=self.runtime,
            service=service.name,
            operation=operation,
            region=scope.group(2) if scope else DEFAULT_REGION,
            account=DEFAULT_ACCOUNT,
            access_key=scope.group(1) if scope else None,
            base_url=f"{request.scheme}://{request.host}",
        )
        result = await function(call, params)
        return write_output(op_model.output_shape, result or {})


def query_error(service: Service, code: str, status: int) -> QueryError:
    """How an ``awsQueryCompatible`` service names the error ``code``: the
    error shape's ``error`` in botocore's model when it has one, else what the
    service declares (``Service.query_errors``), else the code itself."""
    declared = service.query_errors.get(code)
    if declared is not None:
        return declared
    for shape in service.model.error_shapes:
        if shape.name == code:
            error = shape.metadata.get("error") or {}
            return QueryError(code, error.get("code", code), error.get("httpStatusCode", status))
    return QueryError(code, code, status)


def _json_error(
    service: Service | None, error: ApiError, request_id: str, version: str
) -> web.Response:
    headers = {
        "Content-Type": f"application/x-amz-json-{version}",
        "x-amzn-RequestId": request_id,
    }
    code, status = error.code, error.status
    if service is not None and "awsQueryCompatible" in service.model.metadata:
        # AWS's answer for such a service (SQS): the shape's name qualified by
        # the service's namespace, the query code and fault in a header (botocore
        # shows the query code as the error's Code, and raises the shape's class).
        named = query_error(service, error.code, error.status)
        code = f"com.amazonaws.{service.model.metadata['endpointPrefix']}#{named.type}"
        status = named.status if error.status == 400 else error.status
        fault = "Sender" if error.sender_fault else "Receiver"
        headers["x-amzn-query-error"] = f"{named.query};{fault}"
    headers["x-amzn-ErrorType"] = code
    return web.Response(
        status=status,
        body=orjson.dumps({"__type": code, "message": error.message}),
        headers=headers,
    )
