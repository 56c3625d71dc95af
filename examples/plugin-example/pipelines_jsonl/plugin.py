"""The ``jsonl`` target type: append each payload to a file as one JSON line.

Settings:

- ``path`` (required): the file. A relative path is relative to the working
  directory of the pipelines process (not to the config file), fixed when the
  target starts. The directory must exist; the file is created when needed.
- ``fsync`` (default false): fsync the file after each write batch, so what
  was delivered survives a crash of the machine, not only of the process.
- ``max_bytes`` (optional): when the next line would take the file past this
  size, the file is renamed to ``<path>.1`` (replacing the previous one) and a
  new one started. A line is never split: one longer than ``max_bytes`` fills
  a new file alone.

Deliveries that arrive while a batch is being written wait for the lock and
then go together in the next batch: one write (and one fsync) for all of
them. A delivery returns once its line is written. A failed write is the
retryable error ``WriteFailed``; a payload that is not JSON (an object a
function destination returned, say) is ``InvalidPayload``, not retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, Where
from pipelines.hookspecs import hookimpl
from pipelines.targets import (
    DeliveryContext,
    Target,
    TargetServices,
    TargetType,
    check_keys,
    number_setting,
)

SETTINGS = {"path", "fsync", "max_bytes"}

#: For ``pipelines schema`` (editor completion); ``create`` does the real checks.
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "path": {
            "type": "string",
            "minLength": 1,
            "description": "the file to append to; relative to the process's working directory",
        },
        "fsync": {
            "type": "boolean",
            "default": False,
            "description": "fsync after each write batch",
        },
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            "description": "rotate the file to <path>.1 before it would grow past this size",
        },
    },
    "required": ["path"],
}


def encode(payload: Any) -> bytes:
    """One JSON line: compact, and UTF-8 rather than \\u escapes so it reads as
    the event did. JSON escapes newlines inside strings, so a line stays one line."""
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode() + b"\n"
    except (TypeError, ValueError) as exc:  # ValueError: NaN, or a lone surrogate
        raise DeliveryError("InvalidPayload", f"not JSON: {exc}", retryable=False) from None


class JsonlTarget(Target):
    def __init__(self, name: str, path: Path, fsync: bool, max_bytes: int | None) -> None:
        self.where = f"target {name}"
        self.path = path
        self.fsync = fsync
        self.max_bytes = max_bytes
        # One batch at a time touches the file, so lines never interleave.
        self._lock = asyncio.Lock()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        # Flushes in progress. They are our own tasks, not the runtime's
        # (services.spawn): the runtime cancels its tasks at shutdown, and a
        # write in a worker thread cannot be cancelled, so a flush must run to
        # its end to release the lock and answer every delivery in its batch.
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def rotated(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    async def start(self, services: TargetServices) -> None:
        # Fix a relative path now: a later chdir in the process must not move the file.
        self.path = self.path.absolute()
        # Fail at start on a mistyped directory, rather than as retries later.
        if not self.path.parent.is_dir():
            raise ConfigError(
                Where(self.where) / "path", f"directory {self.path.parent} does not exist"
            )

    async def deliver(self, payload: Any, context: DeliveryContext) -> None:
        line = encode(payload)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, written))
        flush = asyncio.create_task(self._flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)
        # Cancelling this delivery cancels only ``written``; the flush goes on.
        await written

    async def stop(self) -> None:
        # Deliveries cancelled at shutdown may have left a write running in its
        # thread: wait for it, so that nothing touches the file after stop.
        if self._flushes:
            await asyncio.wait(set(self._flushes))

    async def _flush(self) -> None:
        """Write every pending line as one batch (none left: an earlier flush took ours)."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await asyncio.to_thread(self._write, [line for line, _ in batch])
            except OSError as exc:
                message = f"{self.where}: cannot write {self.path}: {exc}"
                _answer(batch, lambda: DeliveryError("WriteFailed", message, retryable=True))
            except Exception as exc:  # a bug: the deliveries fail with it (and are logged)
                bug = exc  # a name the lambda may keep: ``exc`` is unset after this block
                _answer(batch, lambda: bug)
            except BaseException:  # cancelled as the event loop closes: nobody may wait on
                for _, written in batch:
                    written.cancel()
                raise
            else:
                _answer(batch, None)

    def _write(self, lines: list[bytes]) -> None:
        """In a worker thread: append the lines, rotating where the next would overflow."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        chunk: list[bytes] = []
        for line in lines:
            if self.max_bytes is not None and size > 0 and size + len(line) > self.max_bytes:
                self._append(chunk)  # what still fits ends the current file
                os.replace(self.path, self.rotated)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._append(chunk)

    def _append(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = memoryview(b"".join(chunk))
        # A raw descriptor rather than a buffered file: on failure we know
        # exactly what reached the file and can take it back.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(fd, data) :]
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                # Remove a partial batch: the retry writes it again, and a
                # half line would break every reader of the file.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def _answer(
    batch: list[tuple[bytes, asyncio.Future[None]]], error: Callable[[], BaseException] | None
) -> None:
    """Resolve each delivery of a batch: written, or failed with a fresh ``error()``."""
    for _, written in batch:
        if written.done():  # its delivery was cancelled meanwhile: nobody is waiting
            continue
        if error is None:
            written.set_result(None)
        else:
            written.set_exception(error())


class JsonlTargetType(TargetType):
    name = "jsonl"
    description = "Append each payload as one JSON line to a file (optional fsync and rotation)"
    settings_schema = SETTINGS_SCHEMA

    def create(self, name: str, config: Mapping[str, Any]) -> JsonlTarget:
        # "target <name>" is the prefix pipelines expects in ConfigError.where:
        # it maps "target orders.path" back to the YAML line of that setting.
        where = Where(f"target {name}")
        check_keys(where, config, SETTINGS)
        path = config.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(where / "path", "is required: the file to append JSON lines to")
        fsync = config.get("fsync", False)
        if not isinstance(fsync, bool):
            raise ConfigError(where / "fsync", f"must be true or false, not {fsync!r}")
        max_bytes = None
        if config.get("max_bytes") is not None:
            limit = number_setting(where, config, "max_bytes", 0, 1, float("inf"), integer=True)
            max_bytes = int(limit)
        return JsonlTarget(name, Path(path), fsync, max_bytes)


@hookimpl
def register_targets(register: Callable[[TargetType], None]) -> None:
    register(JsonlTargetType())
