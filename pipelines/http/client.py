"""``HttpClient``: requests over one keep-alive pool, answered as ``Sent``.

One client per destination (an API destination, a subscription endpoint):
its pool's connections are kept alive between requests (HTTP/1.1), so a
steady flow of deliveries costs one TCP and TLS handshake, not one each.
TLS certificates are verified unless a destination says otherwise; a CA
file adds a private authority. A request that times out or cannot connect
raises ``RequestFailed``; any answer, whatever its status, is a ``Sent``.
"""

from __future__ import annotations

import email.utils
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp loads with the first client started, not with the plugins
    import aiohttp

#: How much of an answer's body is kept (an error's start goes into a dead
#: letter's attributes); the rest of a larger body is not read at all.
BODY_KEPT = 64 * 1024


class RequestFailed(Exception):
    """No answer: ``code`` is ``Timeout`` or ``ConnectionError``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Sent:
    """What a request got back."""

    status: int
    reason: str
    #: Read case-insensitively (``headers.get("retry-after")``).
    headers: Mapping[str, str]
    #: The body's first ``BODY_KEPT`` bytes.
    body: bytes

    def text(self, limit: int = 256) -> str:
        """The start of the body as text, for a message."""
        return self.body[:limit].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Tls:
    """How a destination's certificate is checked."""

    verify: bool = True
    #: A PEM file of authorities trusted besides the system's.
    ca_file: Path | None = None

    def context(self) -> ssl.SSLContext | bool:
        if not self.verify:
            return False
        if self.ca_file is None:
            return _default_context()
        context = ssl.create_default_context()  # its own: a private authority is added
        context.load_verify_locations(cafile=str(self.ca_file))
        return context


@functools.cache
def _default_context() -> ssl.SSLContext:
    """The system's authorities, loaded once a process: loading them takes
    a quarter of a second (the loop stands still meanwhile), and a context
    is only read once made, so every client verifying with them shares it."""
    return ssl.create_default_context()


#: Headers aiohttp would add: a request that names no User-Agent sends none.
_NO_USER_AGENT = ("User-Agent",)


def _names_user_agent(headers: Mapping[str, str]) -> bool:
    return "User-Agent" in headers or any(name.lower() == "user-agent" for name in headers)


class HttpClient:
    """Sends requests for one destination; ``start`` in the loop that uses it,
    ``close`` when done (its pooled connections are closed)."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        tls: Tls | None = None,
        pool: int = 100,
        body_kept: int = BODY_KEPT,
    ) -> None:
        self.timeout = timeout
        self.tls = tls or Tls()
        self.pool = pool
        #: How much of an answer's body is read (a state machine's HTTP Task keeps 256 KiB).
        self.body_kept = body_kept
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.pool, ssl=self.tls.context())
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=True,
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Sent:
        """One request; its answer, or ``RequestFailed``."""
        import aiohttp

        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                params=params or None,
                data=body,
                allow_redirects=False,
                # Headers go out as the destination's settings give them: no
                # aiohttp User-Agent. Asked per request, only when none is
                # given, since skipping costs aiohttp a header copy a request.
                skip_auto_headers=(
                    None if headers is not None and _names_user_agent(headers) else _NO_USER_AGENT
                ),
            ) as response:
                kept = await _start_of(response, self.body_kept)
                # aiohttp's headers: read case-insensitively, kept as they are.
                return Sent(response.status, response.reason or "", response.headers, kept)
        except TimeoutError:
            raise RequestFailed("Timeout", f"no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise RequestFailed("ConnectionError", str(error) or type(error).__name__) from None


async def _start_of(response: aiohttp.ClientResponse, kept: int = BODY_KEPT) -> bytes:
    """The body's first ``kept`` bytes; a longer body ends the connection
    instead of being read to its end."""
    length = response.content_length
    if length is not None and length <= kept:
        return await response.read()  # the usual small answer: one read
    chunks: list[bytes] = []
    size = 0
    while size < kept:
        chunk = await response.content.read(kept - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    if not response.content.at_eof():
        response.close()
    return b"".join(chunks)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The ``Retry-After`` header as seconds from ``now`` (``headers`` read
    case-insensitively, or with lower-case keys):
    a number of seconds, or an HTTP date; None when absent or unreadable.
    A negative number is kept: EventBridge stops retrying on one."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return float(int(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now


def header_safe(value: Any) -> str:
    """A value as a header may carry it: text without line breaks."""
    return str(value).replace("\r", " ").replace("\n", " ")


__all__ = [
    "BODY_KEPT",
    "HttpClient",
    "RequestFailed",
    "Sent",
    "Tls",
    "header_safe",
    "retry_after",
]
