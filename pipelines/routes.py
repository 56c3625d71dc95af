"""HTTP routes a plugin serves on the runner's port, without touching HTTP itself.

A source that takes requests (a webhook) adds a handler for a path while
it runs (``TargetServices.routes``); the endpoint (``pipelines.api``)
answers a request whose path has a handler with it, and any other as an
AWS request. A handler sees an ``HttpRequest`` (method, path, query,
headers with lower-case names, the body) and returns an ``HttpResponse``:
the engine reads and writes HTTP, a plugin never does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pipelines.errors import PipelinesError


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, str]
    #: Names in lower case; a repeated header's values joined with ", ".
    headers: Mapping[str, str]
    body: bytes
    remote: str = ""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    handler: Handler
    #: The largest body the handler takes; a larger one is answered 413 unread.
    max_body: int


class Routes:
    """The paths served besides AWS's APIs, by exact path."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        #: The port's URL as its server reports it (``http://127.0.0.1:4010``),
        #: for URLs handed out (SNS's SigningCertURL); None while none serves.
        self.base_url: str | None = None
        # Set while sources that will add paths are starting: a request
        # meanwhile waits for them (``wait``) instead of being taken for AWS's.
        self._starting: asyncio.Event | None = None

    def expect(self) -> None:
        """Sources serving paths are about to start: requests wait for ``ready``."""
        if self._starting is None:
            self._starting = asyncio.Event()

    def ready(self) -> None:
        """The sources have started (or failed to): requests stop waiting."""
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.set()

    async def wait(self, path: str, timeout: float) -> Route | None:
        """The route of ``path``, once the sources expected have started."""
        starting = self._starting
        if starting is not None and path not in self._routes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(starting.wait(), timeout)
        return self._routes.get(path)

    def add(self, path: str, handler: Handler, *, max_body: int) -> Callable[[], None]:
        """Serve ``path`` with ``handler``; the function returned removes it.
        A path served twice is an error naming it."""
        if not path.startswith("/"):
            raise PipelinesError(f"a served path starts with '/', not {path!r}")
        if path in self._routes:
            raise PipelinesError(f"the path {path} is served twice")
        route = Route(path, handler, max_body)
        self._routes[path] = route

        def remove() -> None:
            if self._routes.get(path) is route:
                del self._routes[path]

        return remove

    def find(self, path: str) -> Route | None:
        return self._routes.get(path)

    def __len__(self) -> int:
        return len(self._routes)
