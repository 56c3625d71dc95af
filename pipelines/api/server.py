"""The AWS-compatible endpoint: one HTTP port, every served service's wire protocol.

A request is routed as AWS routes it: the service from the SigV4 credential
scope of its ``Authorization`` header, else from its ``X-Amz-Target``
prefix; the operation from ``X-Amz-Target`` (a form's ``Action`` in the query
protocol, the path ``/service/PREFIX/operation/OP`` in Smithy RPC v2 CBOR);
the region from the scope. A REST-JSON service (scheduler, pipes) names
its operation by the method and path instead (``rest``). The request is
read by the operation's input
shape, the operation runs, and its answer (or error) is written in the
protocol the request came in. Served with aiohttp,
the one HTTP stack of the project.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler
from botocore.model import ServiceModel

from pipelines.api import cbor
from pipelines.api.errors import ApiError, not_implemented, translate
from pipelines.api.query import error_xml, read_query, write_xml
from pipelines.api.rest import error_body, operation_of, read_rest, routes_of, write_rest
from pipelines.api.services import STARTING_WAIT, ApiHost, Call, Kept, Service
from pipelines.api.sigv4 import AccessKey, verify
from pipelines.api.wire import read_input, write_output
from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION, new_event_id
from pipelines.routes import HttpRequest, Route

log = logging.getLogger("pipelines.api")


class _OneLineMalformed(logging.Filter):
    """aiohttp logs a request it cannot parse (``Content-Length: abc``) with
    its parser's traceback; that is the client's mistake: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = " ".join(str(error.message).split())
            record.msg = f"{record.getMessage()}: malformed HTTP request ({reason})"
            record.args = ()
            record.exc_info = None
            if record.levelno > logging.WARNING:  # (aiohttp's own debug lines stay debug)
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: The logger given to aiohttp's server (its protocol errors), one line each.
http_log = logging.getLogger("pipelines.api.http")
http_log.addFilter(_OneLineMalformed())

#: ``Credential=AKID/20261204/us-east-1/events/aws4_request`` in a SigV4 header.
_SCOPE = re.compile(r"Credential=([^/\s,]+)/\d{8}/([^/\s,]+)/([^/\s,]+)/aws4_request")
#: The same scope in a presigned URL's ``X-Amz-Credential``.
_QUERY_SCOPE = re.compile(r"([^/\s,]+)/\d{8}/([^/\s,]+)/([^/\s,]+)/aws4_request")
#: A handler of every request under a path prefix that reads HTTP itself
#: (the web console: pages, files, a stream of server-sent events).
Mounted = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

#: AWS's largest requests among the served operations carry 5 MiB of data
#: (Kinesis PutRecords; Firehose PutRecordBatch 4 MiB), in base64 inside JSON
#: (4/3 more), so 8 MiB: the operations then refuse by their own limits.
MAX_BODY = 8 * 1024 * 1024


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
    """Finds a request's service among the served ones."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = dict(services)
        self._by_signing: dict[str, Service] = {}
        self._by_target: dict[str, Service] = {}
        self._rest: list[Service] = []
        #: Services that take the query protocol, by their API version (an
        #: unsigned form's ``Version`` names its service).
        self._by_version: dict[str, Service] = {}
        versions: dict[str, list[Service]] = {}
        for service in self.services.values():
            meta = service.model.metadata
            if meta.get("protocol") == "query" or service.xml_names:
                versions.setdefault(meta["apiVersion"], []).append(service)
            self._by_signing[meta.get("signingName", meta["endpointPrefix"])] = service
            self._by_signing.setdefault(meta["endpointPrefix"], service)
            if "targetPrefix" in meta:
                self._by_target[meta["targetPrefix"]] = service
            if meta.get("protocol") == "rest-json":
                self._rest.append(service)
        self._by_version = {v: found[0] for v, found in versions.items() if len(found) == 1}

    def service(
        self,
        signing_name: str | None,
        target: str | None,
        request: web.BaseRequest | None = None,
    ) -> Service:
        prefix = (target or "").rpartition(".")[0]
        service = self._by_target.get(prefix) if prefix else None
        if service is None and signing_name is not None:
            service = self._by_signing.get(signing_name)
        if service is None and signing_name is None and not prefix and request is not None:
            service = self._by_path(request)
        if service is None:
            named = signing_name or prefix or "no service"
            raise ApiError(
                "UnknownService",
                f"{named!r} is not a service this endpoint serves"
                f" (served: {', '.join(sorted(self.services))})",
            )
        return service

    async def by_form(self, request: web.BaseRequest) -> Service | None:
        """An unsigned query-protocol request (a form, or a GET with its
        Action in the URL): the service whose API version its ``Version``
        gives, as AWS's query API reference's examples send it."""
        if not _query_form(request):
            return None
        try:
            # As ``_Request.read`` reads it (aiohttp keeps the form for it).
            form = await request.post() if request.method == "POST" else request.query
        except Exception:  # too large, or not a form: the caller's refusal stands
            return None
        version = form.get("Version")
        return self._by_version.get(version) if isinstance(version, str) else None

    def _by_path(self, request: web.BaseRequest) -> Service | None:
        """An unsigned request of a REST-JSON service: the one whose
        operations have its method and path (the first served, if several)."""
        path = request.raw_path.partition("?")[0] or "/"
        for service in self._rest:
            if routes_of(service.model).find(request.method, path, request.query) is not None:
                return service
        return None


class _Request:
    """One request in its protocol: JSON (``X-Amz-Target``), query (a form) or
    Smithy RPC v2 CBOR (``/service/PREFIX/operation/OP`` with ``Smithy-Protocol``)."""

    def __init__(self, service: Service, request: web.BaseRequest, request_id: str) -> None:
        self.service = service
        self.request_id = request_id
        meta = service.model.metadata
        target = request.headers.get("X-Amz-Target")
        self.operation = (target or "").rpartition(".")[2] or None
        self.protocol = "json"
        smithy = _smithy_operation(request)
        if smithy is not None:
            self.protocol = "cbor"
            self.operation = smithy
        elif target is None and meta.get("protocol") == "rest-json":
            self.protocol = "rest"
        elif meta.get("protocol") == "query" or (
            # A JSON service still takes the query protocol from clients that
            # send it (SQS's older SDKs): a form without X-Amz-Target, or a GET
            # with its Action in the URL (AWS's query API reference's examples).
            target is None and _query_form(request)
        ):
            self.protocol = "query"
        self.version = meta.get("jsonVersion", "1.0")
        self.form: Mapping[str, str] = {}
        # botocore's JSON and CBOR clients of a service that came from the query
        # protocol say so; AWS answers them the model's statuses (404 and so
        # on), other clients of those protocols 400 for every modelled error.
        self.query_mode = request.headers.get("x-amzn-query-mode", "").lower() == "true"
        #: The body's size once read (a form's is not kept: None).
        self.body_size: int | None = None

    @property
    def query(self) -> bool:
        return self.protocol == "query"

    @property
    def model(self) -> ServiceModel:
        """The model the request is read and answered by (a query request's
        has the XML names a JSON service's model may lack)."""
        return self.service.query_model if self.query else self.service.model

    async def read(self, request: web.BaseRequest) -> dict[str, Any]:
        """The operation's parameters (sets ``operation`` from a form's Action)."""
        model = self.model
        if self.protocol == "cbor" and cbor.MODEL_PROTOCOL not in model.metadata.get(
            "protocols", [model.metadata.get("protocol")]
        ):
            raise ApiError(
                "UnknownOperationException",
                f"{self.service.name} does not take the {cbor.MODEL_PROTOCOL} protocol",
            )
        if self.protocol == "rest":
            self.operation, labels = operation_of(
                model, request.method, request.raw_path, request.query
            )
            body = await request.read()
            self.body_size = len(body)
            return read_rest(
                model.operation_model(self.operation),
                labels,
                request.query,
                request.headers,
                body,
                validation_code=self.service.validation_code,
                enums=self.service.check_enums,
            )
        if self.query:
            form = await request.post() if request.method == "POST" else request.query
            self.form = self._with_path({key: str(value) for key, value in form.items()}, request)
            self.operation = self.form.get("Action")
        if not self.operation:
            wanted = "an Action parameter" if self.query else "X-Amz-Target"
            raise ApiError(
                "UnknownOperationException",
                f"no operation given for {self.service.name} ({wanted} is required)",
            )
        if self.operation not in model.operation_names:
            raise ApiError(
                "InvalidAction" if self.query else "UnknownOperationException",
                f"{self.service.name} has no operation {self.operation!r}",
            )
        op_model = model.operation_model(self.operation)
        enums = self.service.check_enums
        if self.query:
            return read_query(op_model, self.form, enums=enums)
        body = await request.read()
        self.body_size = len(body)
        code = self.service.validation_code
        if self.protocol == "cbor":
            return cbor.read_cbor(op_model, body, validation_code=code, enums=enums)
        return read_input(op_model.input_shape, body, validation_code=code, enums=enums)

    def _with_path(self, form: dict[str, str], request: web.BaseRequest) -> dict[str, str]:
        """A form sent to a resource's own URL names it by that URL when it
        does not name it itself (older SDKs post to the queue's URL)."""
        name = self.service.path_parameter
        if name is not None and name not in form and request.path.strip("/"):
            form[name] = str(request.url.with_query(None))
        return form

    def answer(self, result: Mapping[str, Any]) -> web.Response:
        op_model = self.model.operation_model(self.operation)
        if self.query:
            return web.Response(
                body=write_xml(op_model, result, self.request_id),
                headers={"Content-Type": "text/xml", "x-amzn-RequestId": self.request_id},
            )
        if self.protocol == "rest":
            status, headers, body = write_rest(op_model, result)
            headers["x-amzn-RequestId"] = self.request_id
            if body is not None:
                headers.setdefault("Content-Type", "application/json")
            return web.Response(status=status, body=body, headers=headers)
        if self.protocol == "cbor":
            headers = {"Smithy-Protocol": cbor.PROTOCOL, "x-amzn-RequestId": self.request_id}
            body = cbor.write_cbor(op_model, result)
            if body:  # an operation without output answers no body and no type
                headers["Content-Type"] = cbor.CONTENT_TYPE
            return web.Response(body=body, headers=headers)
        return web.Response(
            body=orjson.dumps(write_output(op_model.output_shape, result)),
            headers={
                "Content-Type": f"application/x-amz-json-{self.version}",
                "x-amzn-RequestId": self.request_id,
            },
        )

    def error(self, error: ApiError) -> web.Response:
        declared = self.service.query_errors.get(error.code)
        if declared is not None:  # what the model lacks (botocore's sqs model)
            shape_name, query_code = declared.type, declared.query
            status = declared.status if error.status == 400 else error.status
        else:
            shape_name, query_code, status = _error_shape(self.service.model, error)
        headers = {"x-amzn-RequestId": self.request_id}
        if self.query:
            if declared is not None and declared.query_message is not None:
                error = ApiError(
                    error.code,
                    declared.query_message,
                    error.status,
                    sender_fault=error.sender_fault,
                )
            namespace = self.model.metadata.get("xmlNamespace", "")
            detail = self.service.query_error_detail
            body = error_xml(error, query_code, namespace, self.request_id, detail=detail)
            headers["Content-Type"] = "text/xml"
            return web.Response(status=status, body=body, headers=headers)
        error_type = shape_name
        if "awsQueryCompatible" in self.service.model.metadata:
            # What botocore reads back as the error's code for a service that
            # moved from the query protocol to JSON (SQS) or CBOR (CloudWatch);
            # ``__type`` is the shape qualified by the service's namespace, as
            # SQS answers it (botocore drops the namespace).
            fault = "Sender" if error.sender_fault else "Receiver"
            headers["x-amzn-query-error"] = f"{query_code};{fault}"
            prefix = self.service.model.metadata["endpointPrefix"]
            error_type = f"com.amazonaws.{prefix}#{shape_name}"
            if not self.query_mode and status < 500 and error.status == 400:
                status = 400
        if self.protocol == "rest":
            # botocore reads the code from this header, the message from the
            # body's ``message`` or ``Message``.
            headers["Content-Type"] = "application/json"
            headers["x-amzn-ErrorType"] = shape_name
            body = error_body(self.service.model, shape_name, error.message)
            return web.Response(status=status, body=body, headers=headers)
        if self.protocol == "cbor":
            headers["Content-Type"] = cbor.CONTENT_TYPE
            headers["Smithy-Protocol"] = cbor.PROTOCOL
            body = cbor.error_cbor(shape_name, error.message)
            return web.Response(status=status, body=body, headers=headers)
        headers["Content-Type"] = f"application/x-amz-json-{self.version}"
        headers["x-amzn-ErrorType"] = shape_name
        body = orjson.dumps({"__type": error_type, "message": error.message})
        return web.Response(status=status, body=body, headers=headers)


def _target(request: web.BaseRequest) -> str | None:
    """``X-Amz-Target``, or its equivalent in a Smithy RPC v2 request's path."""
    target = request.headers.get("X-Amz-Target")
    if target is None and _smithy_operation(request) is not None:
        found = cbor.PATH.fullmatch(request.path)
        assert found is not None
        target = f"{found.group(1)}.{found.group(2)}"
    return target


def _smithy_operation(request: web.BaseRequest) -> str | None:
    """The operation of a Smithy RPC v2 CBOR request, or None for another protocol."""
    if request.headers.get("Smithy-Protocol", "").lower() != cbor.PROTOCOL:
        return None
    found = cbor.PATH.fullmatch(request.path)
    return found.group(2) if found else None


@functools.cache
def _error_codes(model: ServiceModel) -> dict[str, tuple[str, str, int | None]]:
    """Each error shape by its name and by its query code: (name, code, status)."""
    by_name: dict[str, tuple[str, str, int | None]] = {}
    by_code: dict[str, tuple[str, str, int | None]] = {}
    for name in model.shape_names:
        shape = model.shape_for(name)
        if not shape.metadata.get("exception"):
            continue
        error = shape.metadata.get("error", {})
        entry = (name, error.get("code", name), error.get("httpStatusCode"))
        by_name[name] = entry
        by_code.setdefault(entry[1], entry)
    # A shape's own name wins over another's code (CloudWatch's ResourceNotFound
    # is a shape, and DashboardNotFoundError's code).
    return {**by_code, **by_name}


def _error_shape(model: ServiceModel, error: ApiError) -> tuple[str, str, int]:
    """An error's shape name, query code and status by the model: an operation
    may raise either name (``NotFoundException`` or ``NotFound``); the model's
    status applies unless the error sets its own."""
    entry = _error_codes(model).get(error.code)
    if entry is None:
        return error.code, error.code, error.status
    name, code, status = entry
    return name, code, status if status is not None and error.status == 400 else error.status


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Where and how the endpoint serves (a config's ``api``)."""

    host: str = "127.0.0.1"
    port: int = 0
    #: With keys, every request must be signed by one of them (strict mode).
    access_keys: Mapping[str, AccessKey] = field(default_factory=dict)
    #: PEM files: serve HTTPS.
    certificate: Path | None = None
    key: Path | None = None
    #: Serve the web console under /console (``pipelines.console``).
    console: bool = False


def _account(access_key: str | None, default: str = DEFAULT_ACCOUNT) -> str:
    # As LocalStack does: a 12-digit access key acts as that account (any
    # other key as the runner's own account).
    if access_key is not None and len(access_key) == 12 and access_key.isdigit():
        return access_key
    return default


class ApiServer:
    """Serves ``services`` for ``runtime`` as ``settings`` say until closed."""

    def __init__(
        self,
        runtime: ApiHost,
        services: Mapping[str, Service],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        settings: ApiSettings | None = None,
    ) -> None:
        self.runtime = runtime
        self.router = Router(services)
        self.settings = settings or ApiSettings(host, port)
        self.host = self.settings.host
        self.port = self.settings.port
        self._runner: web.ServerRunner | None = None
        #: The stores and values services keep while this endpoint serves.
        self.keeping = Kept()
        self._mounts: dict[str, Mounted] = {}

    def mount(self, prefix: str, handler: Mounted) -> None:
        """Answer ``prefix`` and every path under it (``prefix/...``) with
        ``handler`` (the console), before sources' paths and AWS's APIs."""
        self._mounts[prefix.rstrip("/")] = handler

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.settings.certificate is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def _tls(self) -> ssl.SSLContext | None:
        if self.settings.certificate is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.certificate, self.settings.key)
        return context

    async def start(self) -> None:
        """Bind the port (an error if it is taken) and serve."""
        # aiohttp's low-level server: every request, whatever its method and
        # path, goes to one handler, without an application's router and
        # middlewares in between (the protocols route by headers and paths).
        server = web.Server(
            self._handle, request_factory=self._request, access_log=None, logger=http_log
        )
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, reuse_address=True, ssl_context=self._tls()
        )
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:  # the port picked when 0 was asked for
            self.port = runner.addresses[0][1]
        self.runtime.routes.base_url = self.url

    @staticmethod
    def _request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """A request whose body may be up to ``MAX_BODY`` bytes."""
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_BODY,
        )

    async def close(self) -> None:
        """Stop taking requests; those in flight finish (aiohttp's shutdown),
        long polls at once with what they have (``Kept.stop``); then what
        services kept is closed (their stores)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            self.keeping.stop()
            try:
                await runner.cleanup()
            finally:
                await self.keeping.close()
        else:
            await self.keeping.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._mounts:
            top = "/" + request.path.split("/", 2)[1]
            mounted = self._mounts.get(top)
            if mounted is not None:
                return await mounted(request)
        routes = self.runtime.routes
        route = routes.find(request.path)
        if route is None and request.path != "/":
            # Sources add their paths as they start, after the port opened:
            # a request meanwhile waits for them (AWS's APIs are served at "/").
            route = await routes.wait(request.path, STARTING_WAIT)
        if route is not None:
            return await _routed(route, request)
        request_id = new_event_id()  # a version 4 UUID, as AWS's request ids are
        scope = _SCOPE.search(request.headers.get("Authorization", "")) or _QUERY_SCOPE.match(
            request.query.get("X-Amz-Credential", "")
        )
        try:
            service = self.router.service(
                scope.group(3) if scope else None, _target(request), request
            )
        except ApiError as error:
            found = None
            if scope is None and _target(request) is None:
                found = await self.router.by_form(request)
            if found is None:
                return _unrouted(error, request_id)
            service = found
        wire = _Request(service, request, request_id)
        access_key = scope.group(1) if scope else None
        try:
            if self.settings.access_keys:
                access_key = await self._verify(request, wire)
            params = await wire.read(request)
            function = service.operations.get(wire.operation or "")
            if function is None:
                raise not_implemented(service.name, wire.operation or "")
            call = Call(
                runtime=self.runtime,
                service=service.name,
                operation=wire.operation or "",
                region=scope.group(2) if scope else DEFAULT_REGION,
                account=self._account_of(access_key),
                access_key=access_key,
                base_url=f"{request.scheme}://{request.host}",
                keeping=self.keeping,
                org=self._org_of(access_key),
                body_size=wire.body_size,
            )
            result = await function(call, params)
        except web.HTTPRequestEntityTooLarge:
            too_large = ApiError("RequestEntityTooLarge", f"the body is over {MAX_BODY} bytes", 413)
            return wire.error(too_large)
        except ApiError as error:
            return wire.error(error)
        except Exception as exc:
            if isinstance(exc, ConnectionResetError) and request.transport is None:
                # The client hung up mid-request (before its body ended):
                # nobody is left to answer and nothing failed here.
                log.info("%s %s: the client closed the connection", service.name, wire.operation)
                return wire.error(ApiError("RequestAborted", "the client closed the connection"))
            known = translate(exc)
            if known is None:
                log.exception("%s %s failed", service.name, wire.operation)
                known = ApiError(
                    "InternalFailure", f"{type(exc).__name__}: {exc}", 500, sender_fault=False
                )
            return wire.error(known)
        return wire.answer(result or {})

    def _account_of(self, access_key: str | None) -> str:
        known = self.settings.access_keys.get(access_key or "")
        if known is not None:
            return known.account
        return _account(access_key, self.runtime.account)

    def _org_of(self, access_key: str | None) -> str | None:
        known = self.settings.access_keys.get(access_key or "")
        return known.org if known is not None else None

    async def _verify(self, request: web.BaseRequest, wire: _Request) -> str:
        headers = {name.lower(): ",".join(request.headers.getall(name)) for name in request.headers}
        return verify(
            request.method,
            # The path and query as they arrived: a signature covers their
            # encoding (``request.url`` would decode %2F in the query).
            f"{request.scheme}://{request.host}{request.raw_path}",
            headers,
            await request.read(),
            self.settings.access_keys,
            dt.datetime.now(dt.UTC),
            query=wire.query,
        )


async def _routed(route: Route, request: web.BaseRequest) -> web.Response:
    """A request to a path a source serves (a webhook), answered by its handler."""
    if request.content_length is not None and request.content_length > route.max_body:
        return _plain(413, f"the body is over {route.max_body} bytes")
    body = await request.content.read(route.max_body + 1)
    if len(body) > route.max_body:
        return _plain(413, f"the body is over {route.max_body} bytes")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    seen = HttpRequest(
        request.method, request.path, dict(request.query), headers, body, request.remote or ""
    )
    try:
        answer = await route.handler(seen)
    except Exception:
        log.exception("the handler of %s failed", route.path)
        return _plain(500, "internal error")
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


def _plain(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _query_form(request: web.BaseRequest) -> bool:
    """Whether a request without X-Amz-Target is of the query protocol: a
    form, or a GET with its Action in the URL."""
    return request.content_type == "application/x-www-form-urlencoded" or (
        request.method == "GET" and "Action" in request.query
    )


def _unrouted(error: ApiError, request_id: str) -> web.Response:
    """An error for a request of no served service (its protocol is unknown: JSON)."""
    return web.Response(
        status=error.status,
        body=orjson.dumps({"__type": error.code, "message": error.message}),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": error.code,
        },
    )
