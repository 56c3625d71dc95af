"""The control channel of a running pipeline: ``pipelines put`` and ``pipelines tap``.

``pipelines run`` listens on a Unix socket, by default ``control.sock`` beside
the state database (in ``.pipelines/`` next to the config when there is no
state database). Only the user who runs the pipeline can use it: the socket
is created mode 0600 (in a directory of mode 0700 when it creates one), so
the kernel refuses other users' connections. (A Unix socket rather than a
localhost port: no port to pick or collide on, and file permissions are the
access control.)

The protocol is JSON lines. A client sends one request per line:

- ``{"op": "put", "entries": [...]}``: PutEvents (up to 10 entries); the
  answer is one line, PutEvents' result (``FailedEntryCount``, ``Entries``).
- ``{"op": "tap", "pattern": {...} | null}``: from then on the server sends
  ``{"tapping": true}`` once it observes, then one line per event a bus
  dispatches that matches the pattern, as ``{"bus": name, "event": {...}}``,
  until the client goes away. A tap that
  reads too slowly misses events rather than slowing the pipeline: the server
  then sends ``{"dropped": n}`` once it catches up.

- ``{"op": "replay-start", "name", "archive", "start", "end", "bus", "rules",
  "speed", "description"}``: StartReplay (times in epoch seconds); the answer
  is its result.
- ``{"op": "replay-cancel", "name": ...}``: CancelReplay.
- ``{"op": "replay-describe", "name": ...}``: DescribeReplay.
- ``{"op": "alarm-set-state", "name", "value", "reason", "reason_data"}``:
  SetAlarmState; answers with the alarm's description.
- ``{"op": "stats"}``: the running pipeline's numbers now
  (``pipelines.snapshot.snapshot``: buses, rules, rule targets, alarms) and
  its resources' ``gauges`` (``[{"resource", "name", "labels", "value"}]``):
  what ``pipelines top`` shows.
- ``{"op": "aws", "service", "operation", "params"}``: one operation of a
  service the endpoint serves (``served_services``: the engine's and the
  plugins'), run in process against this runtime whether or not it has an
  endpoint (``pipelines sfn start`` uses it); ``params`` are the operation's
  (the CLI's own, not read against botocore's model), the answer is its
  ``{"answer": result}`` (dates in epoch seconds), or ``{"error", "code"}``.

A request the server cannot serve gets ``{"error": message}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.errors import ControlError, PatternError, PipelinesError
from pipelines.patterns import compile_pattern
from pipelines.runtime import Runtime
from pipelines.store import private_directory

log = logging.getLogger("pipelines.control")

SOCKET_NAME = "control.sock"
MAX_LINE = 16 << 20
TAP_BUFFER = 10_000  # events a tap client may lag behind before it misses some
MAX_PATH = 107  # sun_path on Linux, without the terminating NUL
#: Seconds a request that arrives while the runtime starts waits for it.
START_WAIT = 30.0


def default_socket(config: PipelineConfig) -> Path:
    """Beside the state database (so one state, one socket), or in
    ``.pipelines`` next to the config when it has none or it is on a server
    (each runner of a cluster on its own machine, or its own --control)."""
    state = config.state
    directory = state.parent if isinstance(state, Path) else config.directory / ".pipelines"
    return directory / SOCKET_NAME


class ControlServer:
    """Serves ``put`` and ``tap`` for ``runtime`` on the Unix socket ``path``."""

    def __init__(self, runtime: Runtime, path: Path) -> None:
        self.runtime = runtime
        self.path = path
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        #: the ``aws`` op's services and what they keep (stores), made at its first use
        self._services: dict[str, Any] | None = None
        self._kept: Any = None

    async def start(self) -> None:
        if len(os.fsencode(self.path)) > MAX_PATH:
            raise ControlError(
                f"control socket path {self.path} is longer than {MAX_PATH} bytes:"
                " give a shorter one with --control"
            )
        private_directory(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            if await _answers(self.path):
                raise ControlError(
                    f"another pipeline is running with control socket {self.path}:"
                    " stop it, or give this one another path with --control"
                )
            self.path.unlink()  # left behind by a pipeline that was killed
        previous = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        except OSError as exc:
            raise ControlError(f"cannot listen on {self.path}: {exc.strerror}") from None
        finally:
            os.umask(previous)

    async def close(self) -> None:
        """Stop listening, end every client's session and remove the socket."""
        if self._server is None:
            return
        self._server.close()
        for writer in self._clients.values():
            writer.transport.abort()  # the session sees its client gone and ends
        if self._clients:
            _, stuck = await asyncio.wait(list(self._clients), timeout=5.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        await self._server.wait_closed()
        self._server = None
        if self._kept is not None:
            self._kept.stop()
            await self._kept.close()
            self._kept = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio.Server starts this task; we own it from here: close() ends it.
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            while line := await reader.readline():
                await self._request(line, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away, or sent a line over MAX_LINE
        except asyncio.CancelledError:
            pass  # close() gave up waiting: end quietly (the server logs a cancelled task)
        finally:
            del self._clients[task]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _request(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
        except json.JSONDecodeError as exc:
            await _send(writer, {"error": f"not JSON: {exc.msg}"})
            return
        if op == "put":
            await _send(writer, await self._put(request.get("entries")))
        elif op == "tap":
            await self._tap(request.get("pattern"), reader, writer)
        elif op in ("replay-start", "replay-cancel", "replay-describe"):
            await _send(writer, await self._replay(op, request))
        elif op == "alarm-set-state":
            await _send(writer, await self._set_alarm_state(request))
        elif op == "aws":
            await _send(writer, await self._aws(request))
        elif op == "stats":
            await _send(writer, await self._stats())
        else:
            await _send(writer, {"error": f"unknown op {op!r} (put, tap, replay-start, ...)"})

    async def _put(self, entries: Any) -> dict[str, Any]:
        if not isinstance(entries, list) or not 1 <= len(entries) <= 10:
            return {"error": "entries: a list of 1 to 10 PutEvents entries"}
        try:
            # The socket opens before the runtime starts (a socket in use must
            # stop the runner first): a put meanwhile waits for the start.
            await self.runtime.wait_running(START_WAIT)
            return await self.runtime.put_events(entries)
        except PipelinesError as exc:
            return {"error": str(exc)}

    async def _replay(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            await self.runtime.wait_running(START_WAIT)
            if op == "replay-cancel":
                return await self.runtime.replays.cancel(str(request.get("name")))
            if op == "replay-describe":
                return await self.runtime.replays.describe(str(request.get("name")))
            return await self.runtime.replays.start(
                request.get("name"),  # type: ignore[arg-type]  # checked by start_replay
                str(request.get("archive")),
                float(request.get("start", 0)),
                float(request.get("end", 0)),
                str(request.get("bus") or "default"),
                request.get("rules"),
                speed=request.get("speed"),
                description=str(request.get("description") or ""),
            )
        except (PipelinesError, TypeError, ValueError) as exc:
            return {"error": str(exc)}

    async def _set_alarm_state(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request.get("name"))
        data = request.get("reason_data")
        try:
            await self.runtime.wait_running(START_WAIT)
            await self.runtime.alarms.set_alarm_state(
                name,
                str(request.get("value")),
                str(request.get("reason") or ""),
                None if data is None else str(data),
            )
            [described] = self.runtime.alarms.describe_alarms([name])
            return described
        except PipelinesError as exc:
            return {"error": str(exc)}

    async def _stats(self) -> dict[str, Any]:
        from pipelines.snapshot import resource_gauges, snapshot

        gauges = [
            {"resource": name, "name": g.name, "labels": dict(g.labels), "value": g.value}
            for name, g in await resource_gauges(self.runtime)
        ]
        return {**snapshot(self.runtime), "gauges": gauges}

    async def _aws(self, request: dict[str, Any]) -> dict[str, Any]:
        from pipelines.api import ApiError, Call, served_services
        from pipelines.api.errors import translate
        from pipelines.api.services import Kept
        from pipelines.event import DEFAULT_ACCOUNT, DEFAULT_REGION

        if self._services is None:
            self._services = served_services(self.runtime.plugins)
            self._kept = Kept()
        name, operation = str(request.get("service")), str(request.get("operation"))
        service = self._services.get(name)
        function = None if service is None else service.operations.get(operation)
        params = request.get("params") or {}
        if function is None or not isinstance(params, dict):
            return {"error": f"{name} {operation} is not served", "code": "UnknownOperation"}
        assert self._kept is not None
        call = Call(
            self.runtime, name, operation, DEFAULT_REGION, DEFAULT_ACCOUNT, None, "", self._kept
        )
        try:
            await self.runtime.wait_running(START_WAIT)
            answer = await function(call, params)
        except Exception as exc:
            error = translate(exc)
            if error is None:
                log.exception("control: %s %s failed", name, operation)
                error = ApiError("InternalFailure", f"{type(exc).__name__}: {exc}")
            return {"error": error.message, "code": error.code}
        return {"answer": dict(answer or {})}

    async def _tap(
        self, pattern: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward what the buses dispatch until the client goes away."""
        try:
            compiled = compile_pattern(pattern) if pattern is not None else None
        except PatternError as exc:
            await _send(writer, {"error": f"pattern: {exc}"})
            return
        seen: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(TAP_BUFFER)
        dropped = 0

        def observe(bus: str, event: dict[str, Any]) -> None:
            nonlocal dropped
            if compiled is None or compiled.matches(event):
                try:
                    seen.put_nowait((bus, event))
                except asyncio.QueueFull:
                    dropped += 1

        async def forward() -> None:
            nonlocal dropped
            with contextlib.suppress(ConnectionError):  # the client went away
                await _send(writer, {"tapping": True})  # from here on, nothing is missed
                while True:
                    bus, event = await seen.get()
                    await _send(writer, {"bus": bus, "event": event})
                    if dropped and seen.empty():
                        await _send(writer, {"dropped": dropped})
                        dropped = 0

        async def until_gone() -> None:
            with contextlib.suppress(ConnectionError):
                await reader.read()  # a tap client sends nothing more: EOF when it leaves

        with self.runtime.tap(observe):
            async with asyncio.TaskGroup() as group:
                gone = group.create_task(until_gone())
                forwarding = group.create_task(forward())
                await asyncio.wait([gone, forwarding], return_when=asyncio.FIRST_COMPLETED)
                gone.cancel()
                forwarding.cancel()


async def _send(writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


async def _answers(path: Path) -> bool:
    """Whether a server listens on the socket ``path``."""
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# -- clients ----------------------------------------------------------------------


async def _connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            f"no pipeline is running with control socket {path}: start one with pipelines run"
        ) from None
    except PermissionError:
        raise ControlError(
            f"{path}: permission denied (the pipeline runs as another user)"
        ) from None


async def put_events(path: Path, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """PutEvents to the pipeline listening on ``path``, in requests of 10 entries;
    one combined result, in order."""
    reader, writer = await _connect(path)
    results: list[dict[str, Any]] = []
    failed = 0
    try:
        for start in range(0, len(entries), 10):
            await _send(writer, {"op": "put", "entries": list(entries[start : start + 10])})
            answer = json.loads(await reader.readline() or b"null")
            if not isinstance(answer, dict) or "error" in answer or "Entries" not in answer:
                message = answer.get("error") if isinstance(answer, dict) else "no answer"
                raise ControlError(f"put refused: {message}")
            results += answer["Entries"]
            failed += answer["FailedEntryCount"]
    finally:
        writer.close()
    return {"FailedEntryCount": failed, "Entries": results}


async def request(path: Path, message: Mapping[str, Any]) -> dict[str, Any]:
    """One request to the pipeline listening on ``path``, and its answer;
    ``ControlError`` with the server's message when it refused."""
    reader, writer = await _connect(path)
    try:
        await _send(writer, message)
        answer = json.loads(await reader.readline() or b"null")
    finally:
        writer.close()
    if not isinstance(answer, dict) or "error" in answer:
        message_text = answer.get("error") if isinstance(answer, dict) else "no answer"
        raise ControlError(f"{message.get('op')} refused: {message_text}")
    return answer


async def tap(path: Path, pattern: Any = None) -> AsyncIterator[dict[str, Any]]:
    """What the pipeline listening on ``path`` sees: ``{"tapping": true}`` once
    the tap is in place, then ``{"bus", "event"}`` (and ``{"dropped": n}``)
    messages, until the pipeline stops."""
    reader, writer = await _connect(path)
    try:
        await _send(writer, {"op": "tap", "pattern": pattern})
        while line := await reader.readline():
            message = json.loads(line)
            if "error" in message:
                raise ControlError(message["error"])
            yield message
    finally:
        writer.close()


async def start_replay(path: Path, name: str, archive: str, **options: Any) -> dict[str, Any]:
    """StartReplay in the pipeline listening on ``path``: ``start`` and ``end``
    (epoch seconds), ``bus``, ``rules``, ``speed``, ``description``."""
    return await request(path, {"op": "replay-start", "name": name, "archive": archive, **options})


async def describe_replay(path: Path, name: str) -> dict[str, Any]:
    return await request(path, {"op": "replay-describe", "name": name})


async def cancel_replay(path: Path, name: str) -> dict[str, Any]:
    return await request(path, {"op": "replay-cancel", "name": name})


async def set_alarm_state(
    path: Path, name: str, value: str, reason: str, reason_data: str | None = None
) -> dict[str, Any]:
    message = {"op": "alarm-set-state", "name": name, "value": value, "reason": reason}
    return await request(path, {**message, "reason_data": reason_data})


async def stats(path: Path) -> dict[str, Any]:
    """The numbers of the pipeline listening on ``path`` now (the ``stats`` op)."""
    return await request(path, {"op": "stats"})


async def aws(
    path: Path, service: str, operation: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """One operation of a served AWS service, run by the pipeline listening on
    ``path``; ``ControlError`` ("CODE: message") when it refused."""
    reader, writer = await _connect(path)
    try:
        await _send(
            writer,
            {"op": "aws", "service": service, "operation": operation, "params": dict(params)},
        )
        answer = json.loads(await reader.readline() or b"null")
    finally:
        writer.close()
    if not isinstance(answer, dict) or not isinstance(answer.get("answer", {}), dict):
        raise ControlError(f"{service} {operation}: no answer")
    if "answer" not in answer:
        raise ControlError(f"{answer.get('code')}: {answer.get('error')}")
    result: dict[str, Any] = answer["answer"]
    return result
