"""The web console: pages under ``/console`` on the runner's HTTP port.

``Console.handle`` answers every request under the prefix (the endpoint
hands them over: ``ApiServer.mount``). Everything but the login asks for
the token printed at start: ``/console/login?token=...`` (the link logged)
sets it as a cookie (HttpOnly, SameSite=Strict, path ``/console``); a
script may send ``Authorization: Bearer TOKEN`` instead. Compared in
constant time. Requests from another host than this one (not loopback) are
refused whatever they carry, and a POST must come from the console's own
pages (its ``Origin``).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from pipelines.console import views
from pipelines.console.host import ConsoleHost, StoreT
from pipelines.console.html import PREFIX, action_form, esc, facts, listing, notice, page, table
from pipelines.console.html import field_input as render_field
from pipelines.console.rates import Rates
from pipelines.console.sections import Section, SectionError
from pipelines.errors import PipelinesError

log = logging.getLogger("pipelines.console")

COOKIE = "pipelines_console"
#: The live tap sends at most TAP_SHOWN events (the newest) every TAP_TICK seconds.
TAP_SHOWN, TAP_TICK = 25, 0.25
#: Seconds between comments on an idle tap stream (proxies close silent ones).
TAP_HEARTBEAT = 15.0
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    # The console's own files only: no inline script, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # (no-referrer would make a browser send "Origin: null" with its POSTs)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Page = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _Stores:
    """The stores sections open on the runtime's state database, once each."""

    def __init__(self, host: ConsoleHost) -> None:
        self.host = host
        self._stores: dict[type[Any], Any] = {}
        self._lock = asyncio.Lock()

    async def store(self, store_type: type[StoreT], *, where: str) -> StoreT:
        async with self._lock:
            found = self._stores.get(store_type)
            if found is None:
                if self.host.state_path is None:
                    raise SectionError(f"{where} needs a state database (the config's `state`)")
                found = await self.host.open_store(store_type, where=where)
                self._stores[store_type] = found
        store: StoreT = found
        return store

    def resource_names(self) -> list[str]:
        return self.host.resource_names()

    async def close(self) -> None:
        async with self._lock:
            stores, self._stores = self._stores, {}
        for store in stores.values():
            await store.close()


class Console:
    """Serves the console of ``host`` with the plugins' ``sections``."""

    def __init__(
        self, host: ConsoleHost, sections: Mapping[str, Section], token: str | None = None
    ) -> None:
        self.host = host
        self.sections = dict(sections)
        self.token = token or secrets.token_urlsafe(24)
        self.rates = Rates()
        self.stores = _Stores(host)
        #: Set when the server closes: open tap streams end at their next tick.
        self._stopping = False
        self._pages: dict[tuple[str, str], Page] = {
            ("GET", "/login"): self._login,
            ("POST", "/login"): self._login,
            ("GET", "/"): self._rules,
            ("GET", "/rules.part"): self._rules_part,
            ("POST", "/rule"): self._rule_state,
            ("GET", "/target"): self._target,
            ("GET", "/target.part"): self._target_part,
            ("GET", "/alarms"): self._alarms,
            ("GET", "/alarm"): self._alarm,
            ("GET", "/alarm.json"): self._alarm_json,
            ("GET", "/archives"): self._archives,
            ("GET", "/archives.part"): self._archives_part,
            ("GET", "/patterns"): self._patterns,
            ("POST", "/patterns"): self._pattern_verdict,
            ("GET", "/tap"): self._tap,
            ("GET", "/tap.events"): self._tap_events,
        }

    def login_url(self, base_url: str) -> str:
        return f"{base_url}{PREFIX}/login?{urlencode({'token': self.token})}"

    # -- lifecycle ------------------------------------------------------------

    def stop(self) -> None:
        """The server is closing: open tap streams end (within a tick)."""
        self._stopping = True

    async def close(self) -> None:
        await self.stores.close()

    # -- requests -------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not _loopback(request.remote):
            return _text(403, "the console answers only this machine (127.0.0.1)")
        path = request.path[len(PREFIX) :] or "/"
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path != "/login" and not self._authorized(request):
            return self._login_form(401)
        if request.method == "POST" and not _same_origin(request):
            return _text(403, "a POST must come from the console's own pages")
        try:
            found = self._pages.get((request.method, path))
            if found is not None:
                return await found(request)
            if path.startswith("/s/"):
                return await self._section(request, path[len("/s/") :])
        except (PipelinesError, ValueError) as error:
            return self._html(page("Error", notice(str(error), "error")), 400)
        except Exception:
            # A page must not take the runner down, nor show a traceback.
            log.exception("console page %s failed", path)
            return self._html(page("Error", notice("internal error (logged)", "error")), 500)
        return self._html(page("Not found", notice(f"no page {path}", "error")), 404)

    def _authorized(self, request: web.BaseRequest) -> bool:
        given = request.cookies.get(COOKIE, "")
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = bearer[len("Bearer ") :]
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _login(self, request: web.BaseRequest) -> web.StreamResponse:
        given = request.query.get("token", "")
        if request.method == "POST":
            given = str((await request.post()).get("token", ""))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return self._login_form(401, "that is not the token this runner printed")
        answer = web.HTTPSeeOther(f"{PREFIX}/")
        answer.set_cookie(COOKIE, self.token, path=PREFIX, httponly=True, samesite="Strict")
        answer.headers.update(SECURITY_HEADERS)
        return answer

    def _login_form(self, status: int, problem: str | None = None) -> web.Response:
        body = (
            notice(problem, "error")
            + "<p>The console needs the token the runner printed when it started"
            " (its log line <code>console: http://…/console/login?token=…</code>).</p>"
            f'<form method=post action="{PREFIX}/login" class=login>'
            "<label>Token <input name=token type=password autocomplete=off></label>"
            "<button type=submit>Sign in</button></form>"
        )
        return self._html(page("Sign in", body), status)

    def _static(self, name: str) -> web.Response:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or suffix not in STATIC_TYPES:
            return _text(404, "no such file")
        try:
            data = resources.files("pipelines.console").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return _text(404, "no such file")
        headers = {"Content-Type": STATIC_TYPES[suffix], "Cache-Control": "max-age=3600"}
        return web.Response(body=data, headers=headers)

    def _html(self, text: str, status: int = 200) -> web.Response:
        headers = {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS}
        return web.Response(status=status, body=text.encode(), headers=headers)

    def _page(self, title: str, body: str, current: str) -> web.Response:
        sections = [(name, section.title) for name, section in sorted(self.sections.items())]
        return self._html(page(title, body, sections, current))

    # -- the engine's pages ---------------------------------------------------

    async def _rules(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._page("Rules and targets", views.rules_page(), "/")

    async def _rules_part(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._html(views.rules_part(self.host, self.rates))

    async def _rule_state(self, request: web.BaseRequest) -> web.StreamResponse:
        form = await request.post()
        bus, rule, state = (str(form.get(name, "")) for name in ("bus", "rule", "state"))
        views.set_rule_state(self.host, bus, rule, state)
        log.info("console: rule %s on bus %s set %s", rule, bus, state)
        return web.HTTPSeeOther(f"{PREFIX}/")

    async def _target(self, request: web.BaseRequest) -> web.StreamResponse:
        bus, rule, target = _args(request, "bus", "rule", "id")
        body = views.target_page(self.host, bus, rule, target)
        return self._page(f"Target {target} of rule {rule}", body, "/")

    async def _target_part(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._html(views.target_part(self.host, *_args(request, "bus", "rule", "id")))

    async def _alarms(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._page("Alarms", views.alarms_page(self.host), "/alarms")

    async def _alarm(self, request: web.BaseRequest) -> web.StreamResponse:
        (name,) = _args(request, "name")
        return self._page(f"Alarm {name}", await views.alarm_page(self.host, name), "/alarms")

    async def _alarm_json(self, request: web.BaseRequest) -> web.StreamResponse:
        (name,) = _args(request, "name")
        body = await views.alarm_json(self.host, name)
        return web.Response(body=body, headers={"Content-Type": "application/json"})

    async def _archives(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._page("Archives and replays", views.archives_page(), "/archives")

    async def _archives_part(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._html(await views.archives_part(self.host))

    async def _patterns(self, request: web.BaseRequest) -> web.StreamResponse:
        body = views.patterns_page(self.host, request.query.get("bus"), request.query.get("rule"))
        return self._page("Pattern tester", body, "/patterns")

    async def _pattern_verdict(self, request: web.BaseRequest) -> web.StreamResponse:
        form = await request.post()
        verdict = views.pattern_verdict(str(form.get("pattern", "")), str(form.get("event", "")))
        return self._html(verdict)

    async def _tap(self, request: web.BaseRequest) -> web.StreamResponse:
        return self._page("Live tap", views.tap_page(self.host, request.query.get("bus")), "/tap")

    async def _tap_events(self, request: web.BaseRequest) -> web.StreamResponse:
        """Server-sent events: what the buses dispatch (``Runtime.tap``), at
        most ``TAP_SHOWN`` events per ``TAP_TICK``: a person reads a few
        events a second, and a bus may dispatch thousands. The observer runs
        on the dispatcher's path, so it only appends to a bounded deque (the
        oldest fall out) and counts; each tick writes what the deque holds in
        one write, with the count of the events not shown."""
        wanted = request.query.get("bus") or None
        shown: collections.deque[dict[str, Any]] = collections.deque(maxlen=TAP_SHOWN)
        seen = 0

        def observe(bus: str, event: dict[str, Any]) -> None:
            nonlocal seen
            if wanted is None or bus == wanted:
                seen += 1
                shown.append({"bus": bus, "event": event})

        answer = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await answer.prepare(request)
        quiet = 0.0
        try:
            with self.host.tap(observe):
                await answer.write(b": tapping\n\n")
                while not self._stopping:
                    await asyncio.sleep(TAP_TICK)
                    if not shown:
                        quiet += TAP_TICK
                        if quiet >= TAP_HEARTBEAT:  # proxies close streams silent too long
                            await answer.write(b": idle\n\n")
                            quiet = 0.0
                        continue
                    items, missed = list(shown), seen - len(shown)
                    shown.clear()
                    seen, quiet = 0, 0.0
                    items[-1]["dropped"] = missed
                    await answer.write(
                        b"".join(b"data: " + orjson.dumps(item) + b"\n\n" for item in items)
                    )
        except ConnectionResetError:
            pass  # the browser went away (noticed at the next write)
        return answer

    # -- the plugins' sections ------------------------------------------------

    async def _section(self, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        name, _, what = rest.partition("/")
        section = self.sections.get(name)
        if section is None:
            return self._html(page("Not found", notice(f"no section {name}", "error")), 404)
        current = f"/s/{name}"
        try:
            if what == "" and request.method == "GET":
                found = await section.listing(self.stores)
                body = listing(found, f"{PREFIX}/s/{name}/item")
                return self._page(section.title, body, current)
            if what == "item" and request.method == "GET":
                return await self._item(request, section)
            if what == "act" and request.method == "POST":
                form = {key: str(value) for key, value in (await request.post()).items()}
                key, action = form.pop("key", ""), form.pop("action", "")
                form.pop("run", None)
                try:
                    done = await section.act(self.stores, key, action, form)
                    outcome = {"done": done}
                except (SectionError, PipelinesError) as error:
                    outcome = {"failed": str(error)}
                query = urlencode({"key": key, **outcome})
                return web.HTTPSeeOther(f"{PREFIX}/s/{name}/item?{query}")
        except SectionError as error:
            return self._page(section.title, notice(str(error), "error"), current)
        return self._html(page("Not found", notice(f"no page {request.path}", "error")), 404)

    async def _item(self, request: web.BaseRequest, section: Section) -> web.StreamResponse:
        params = dict(request.query)
        key = params.pop("key", "")
        done, failed = params.pop("done", None), params.pop("failed", None)
        detail = await section.detail(self.stores, key, params)
        parts = [notice(done), notice(failed, "error"), facts(detail.facts)]
        if detail.search:
            fields = "".join(render_field(item) for item in detail.search)
            parts.append(
                f'<form method=get class=search><input type=hidden name=key value="{esc(key)}">'
                f"{fields}<button type=submit>Search</button></form>"
            )
        for action in detail.actions:
            parts.append(action_form(f"{PREFIX}/s/{section.name}/act", key, action))
        for title, found in detail.tables:
            parts.append(f"<h2>{esc(title)}</h2>" + listing(found))
        if not detail.tables and not detail.facts:
            parts.append(table([], []))
        return self._page(detail.title, "".join(parts), f"/s/{section.name}")


def _args(request: web.BaseRequest, *names: str) -> list[str]:
    missing = [name for name in names if not request.query.get(name)]
    if missing:
        raise ValueError(f"the page needs {', '.join(missing)} in its URL")
    return [request.query[name] for name in names]


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _same_origin(request: web.BaseRequest) -> bool:
    """A browser's POST says where its page came from: it must be this host.
    (A client that sends no Origin, a script with the token, is let through.)"""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, headers=SECURITY_HEADERS)


def registered_sections(manager: Any = None) -> dict[str, Section]:
    """Every plugin's console sections (the ``register_console`` hook), by
    name; a name registered twice is an error naming both plugins."""
    from pipelines.pluginmanager import get_plugin_manager

    manager = manager or get_plugin_manager()
    found: dict[str, tuple[Section, str]] = {}
    for implementation in manager.hook.register_console.get_hookimpls():
        owner = implementation.plugin_name

        def register(section: Section, owner: str = owner) -> None:
            if section.name in found:
                raise PipelinesError(
                    f"console section {section.name!r} is registered by both"
                    f" {found[section.name][1]!r} and {owner!r}"
                )
            found[section.name] = (section, owner)

        implementation.function(register=register)
    return {name: section for name, (section, _) in sorted(found.items())}
