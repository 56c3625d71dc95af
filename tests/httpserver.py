"""A real local HTTP server for the HTTP targets' tests.

``ScriptedServer`` listens on 127.0.0.1 (aiohttp, in the test's event loop),
records every request (method, path, query, headers, body) and answers each
from its script: ``script(path, [Answer, ...])`` queues answers for a path
(the last one repeats); the default is 200 ``{"ok": true}``. An answer can
be slow (``delay``) or carry headers (``Retry-After``). ``/token`` is an
OAuth 2.0 client-credentials endpoint: it checks the client's Basic
credentials, issues numbered tokens, and ``revoke()`` makes the current one
answer 401 at ``/secure/...`` paths.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Answer:
    status: int = 200
    body: str = '{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    time: float
    #: The path as sent, escapes kept.
    raw_path: str = ""

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class ScriptedServer:
    def __init__(self, client_id: str = "client", client_secret: str = "secret") -> None:
        self.requests: list[Seen] = []
        self.token_requests: list[Seen] = []
        self._scripts: dict[str, list[Answer]] = {}
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens_issued = 0
        self.token_life = 3600
        self.valid_token: str | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    def script(self, path: str, answers: list[Answer]) -> None:
        self._scripts[path] = list(answers)

    def revoke(self) -> None:
        self.valid_token = None

    async def start(self, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        app = web.Application()
        app.router.add_route("*", "/token", self._token)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Seen]:
        async def enough() -> None:
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.requests

    async def _seen(self, request: web.Request) -> Seen:
        return Seen(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            asyncio.get_running_loop().time(),
            request.raw_path.split("?", 1)[0],
        )

    async def _token(self, request: web.Request) -> web.Response:
        seen = await self._seen(request)
        self.token_requests.append(seen)
        pair = f"{self.client_id}:{self.client_secret}".encode()
        if seen.headers.get("authorization") != "Basic " + base64.b64encode(pair).decode():
            return web.json_response({"error": "invalid_client"}, status=401)
        form = dict(urllib.parse.parse_qsl(seen.body.decode())) if seen.body else seen.query
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        self.tokens_issued += 1
        self.valid_token = f"token-{self.tokens_issued}"
        return web.json_response(
            {
                "access_token": self.valid_token,
                "token_type": "Bearer",
                "expires_in": self.token_life,
            }
        )

    async def _handle(self, request: web.Request) -> web.Response:
        seen = await self._seen(request)
        self.requests.append(seen)
        self.arrived.set()
        token = seen.headers.get("authorization")
        if request.path.startswith("/secure/") and token != f"Bearer {self.valid_token}":
            return web.json_response({"message": "token expired"}, status=401)
        queued = self._scripts.get(request.path)
        answer = Answer()
        if queued:
            answer = queued.pop(0) if len(queued) > 1 else queued[0]
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(
            status=answer.status,
            text=answer.body,
            headers=answer.headers,
            content_type="application/json",
        )
