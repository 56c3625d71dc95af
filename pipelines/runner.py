"""Running a pipeline config: what ``pipelines run`` does, as a function.

``run_pipeline`` builds the runtime from a checked config, starts it, and
either feeds it events from JSON lines (exiting once everything is delivered)
or runs until ``stop`` is set (the CLI sets it on SIGINT or SIGTERM). Then it
stops gracefully: intake closed, in-flight work drained within
``shutdown_timeout``, the rest persisted to the state database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.clock import Clock
from pipelines.config import PipelineConfig, build_runtime, load_config, start_problems
from pipelines.control import ControlServer
from pipelines.errors import ConfigError, ConfigInvalid, PipelinesError
from pipelines.limits import Limits
from pipelines.process import settle_heap, tuned_process
from pipelines.reload import reload
from pipelines.runtime import Runtime
from pipelines.store import shown

if TYPE_CHECKING:
    from pipelines.api import ApiServer

log = logging.getLogger("pipelines.runner")

BATCH = 10  # PutEvents' limit
CHUNK = 1 << 20  # bytes per read of a regular input file
MAX_LINE = 16 << 20  # longest input line read from a pipe
WATCH_INTERVAL = 0.5  # seconds between looks at the config files (--watch)


#: Seconds ``run --input`` waits, once its input is in, for retries to come due.
MAX_WAIT = 30.0


@dataclass
class RunReport:
    """What a run did with its input: entries put, the failed ones by line,
    and (with an input) how the deliveries ended: delivered, dead-lettered,
    dropped, or still waiting as retries when the run returned."""

    put: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, message)
    delivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    waiting: int = 0

    def summary(self) -> str:
        refused = f" ({len(self.failed)} refused)" if self.failed else ""
        return (
            f"{self.put} events put{refused}: delivered {self.delivered},"
            f" dead-lettered {self.dead_lettered}, dropped {self.dropped},"
            f" waiting as retries {self.waiting}"
        )


async def run_pipeline(
    config: PipelineConfig,
    *,
    events: Iterable[str] | AsyncIterable[str] | None = None,
    stop: asyncio.Event | None = None,
    reload_requested: asyncio.Event | None = None,
    watch: bool = False,
    control: Path | None = None,
    api: str | None = None,
    shutdown_timeout: float = 10.0,
    clock: Clock | None = None,
    max_wait: float = MAX_WAIT,
    runner: str | None = None,
    console: bool = False,
) -> RunReport:
    """Run ``config`` until ``stop`` is set, or until ``events`` (JSON lines, each
    a PutEvents entry) are all delivered. Raises ``ConfigInvalid`` before
    starting anything when the config has problems.

    Setting ``reload_requested`` (the CLI does on SIGHUP) reloads the config
    files; so does a change to them with ``watch``. See ``pipelines.reload``.

    ``api`` (``HOST:PORT``, else the config's ``api``) serves AWS's APIs for
    the pipeline there (``pipelines.api``). ``runner`` names this runner
    among a cluster's (a PostgreSQL state; default: the host and the pid).
    ``console`` (or the config's ``api: {console: true}``) serves the web
    console on that port (127.0.0.1:0 without one) and logs its login link.
    """
    # The config's functions import from beside it while it runs.
    with tuned_process([config.directory], switch_interval=None):
        return await _run_pipeline(
            config,
            events,
            stop,
            reload_requested,
            watch,
            control,
            api,
            shutdown_timeout,
            clock,
            max_wait,
            runner,
            console,
        )


async def _run_pipeline(
    config: PipelineConfig,
    events: Iterable[str] | AsyncIterable[str] | None,
    stop: asyncio.Event | None,
    reload_requested: asyncio.Event | None,
    watch: bool,
    control: Path | None,
    api: str | None,
    shutdown_timeout: float,
    clock: Clock | None,
    max_wait: float,
    runner: str | None,
    console: bool,
) -> RunReport:
    stop = stop or asyncio.Event()
    reload_requested = reload_requested or asyncio.Event()
    runtime = await build_runtime(
        config, clock=clock, limits=Limits(drain_timeout=shutdown_timeout), runner=runner
    )
    report = RunReport()
    server = ControlServer(runtime, control) if control is not None else None
    console = console or (config.api is not None and config.api.console)
    endpoint = _endpoint(
        runtime, api or ("127.0.0.1:0" if console and not config.api else None), config
    )
    login = _console(runtime, endpoint) if console and endpoint is not None else None
    serving = [n for n in runtime.resource_names() if runtime.resource(n).serves_http]
    if serving and endpoint is None:
        named = ", ".join(f"resource {name!r}" for name in serving)
        verb = "takes" if len(serving) == 1 else "take"
        raise PipelinesError(
            f"{named} {verb} HTTP requests on the runner's port:"
            " give the config an `api: HOST:PORT` (or run with --api HOST:PORT)"
        )
    if serving:
        runtime.routes.expect()  # the port opens first: their requests wait for them
    if endpoint is not None:
        from pipelines.observability import serve_observability

        serve_observability(runtime)  # /metrics, /health, /ready beside AWS's APIs
    started = False
    try:
        if server is not None:
            await server.start()  # first: a socket in use stops us before anything runs
        if endpoint is not None:
            await _listen(endpoint)
            if login is not None:
                log.info("console: %s", login(endpoint.url))
        await _start(runtime, config)
        started = True
        settle_heap()  # what the start built is not walked by every full collection
        rules = sum(len(bus.list_rules()) for bus in runtime.buses())
        log.info(
            "pipeline started: %d rules on %d buses, state %s%s",
            rules,
            len(runtime.buses()),
            shown(config.state) if config.state is not None else "none (in memory)",
            f", control socket {control}" if control is not None else "",
        )
        await _running(runtime, config, events, stop, reload_requested, watch, report, max_wait)
    finally:
        if endpoint is not None:
            await endpoint.close()  # requests in flight finish; no new ones
        if server is not None:
            await server.close()  # no more puts or taps while draining
        if started:
            log.info("stopping: draining for up to %.0f s", shutdown_timeout)
            await runtime.stop(shutdown_timeout)
            log.info("stopped")
    return report


async def _start(runtime: Runtime, config: PipelineConfig) -> None:
    """Start ``runtime`` (it cleans up after itself when that fails); a
    declared resource refusing its settings is reported where the file
    writes them, as ``validate`` reports what it can see."""
    try:
        await runtime.start()
    except ConfigError as exc:
        problems = start_problems(config, exc)
        if problems is None:
            raise
        raise ConfigInvalid(problems) from None


def _endpoint(runtime: Runtime, listen: str | None, config: PipelineConfig) -> ApiServer | None:
    """The AWS endpoint the config's ``api`` and ``--api`` (its address) ask for."""
    if listen is None and config.api is None:
        return None
    from pipelines.api import ApiServer, served_services
    from pipelines.api.server import ApiSettings, parse_listen

    settings = config.api or ApiSettings()
    if listen is not None:
        try:
            host, port = parse_listen(listen)
        except ValueError as error:
            raise PipelinesError(f"--api: {error}") from None
        settings = dataclasses.replace(settings, host=host, port=port)
    return ApiServer(runtime, served_services(), settings=settings)


def _console(runtime: Runtime, endpoint: ApiServer) -> Callable[[str], str]:
    """Mount the web console on the endpoint; the function gives its login
    link once the port is known. The endpoint keeps it: its open streams
    end when the endpoint closes, then its stores close."""
    from pipelines.console.app import Console, registered_sections

    console = Console(runtime, registered_sections())
    endpoint.keeping.value("console", lambda: console, close=Console.close, stop=Console.stop)
    endpoint.mount("/console", console.handle)
    return console.login_url


async def _listen(endpoint: ApiServer) -> None:
    try:
        await endpoint.start()
    except OSError as error:
        raise PipelinesError(
            f"the AWS endpoint cannot listen on {endpoint.host}:{endpoint.port}: {error.strerror}"
        ) from None
    log.info("AWS endpoint: %s", endpoint.url)


async def _running(
    runtime: Runtime,
    config: PipelineConfig,
    events: Iterable[str] | AsyncIterable[str] | None,
    stop: asyncio.Event,
    reload_requested: asyncio.Event,
    watch: bool,
    report: RunReport,
    max_wait: float,
) -> None:
    """Feed the input (if any), watch the files (with ``watch``) and apply
    reloads, until ``stop`` is set or the input is delivered."""
    async with asyncio.TaskGroup() as group:
        feeding = (
            [group.create_task(_feed(runtime, events, report, max_wait))]
            if events is not None
            else []
        )
        watching = [group.create_task(_watch(config.files, reload_requested))] if watch else []
        await _serve(runtime, config, stop, reload_requested, feeding, runtime.limits.drain_timeout)
        for task in feeding + watching:
            task.cancel()


async def _serve(
    runtime: Runtime,
    config: PipelineConfig,
    stop: asyncio.Event,
    reload_requested: asyncio.Event,
    feeding: list[asyncio.Task[None]],
    timeout: float,
) -> None:
    """Until ``stop`` is set or the input is fed: apply each requested reload."""
    while not stop.is_set() and not any(task.done() for task in feeding):
        async with asyncio.TaskGroup() as group:
            waits = [group.create_task(stop.wait()), group.create_task(reload_requested.wait())]
            await asyncio.wait([*waits, *feeding], return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
        if reload_requested.is_set() and not stop.is_set():
            reload_requested.clear()
            config = await _reload_unless_stopped(runtime, config, timeout, stop)


async def _reload_unless_stopped(
    runtime: Runtime, config: PipelineConfig, timeout: float, stop: asyncio.Event
) -> PipelineConfig:
    """A stop signal interrupts a reload's drains: shutdown then persists what
    the reload had not finished (it does not wait for the reload first)."""
    async with asyncio.TaskGroup() as group:
        reloading = group.create_task(_reload(runtime, config, timeout))
        stopping = group.create_task(stop.wait())
        await asyncio.wait([reloading, stopping], return_when=asyncio.FIRST_COMPLETED)
        reloading.cancel()
        stopping.cancel()
    if reloading.cancelled():
        log.warning("reload interrupted by the stop signal")
        return config
    return reloading.result()


async def _reload(runtime: Runtime, config: PipelineConfig, timeout: float) -> PipelineConfig:
    """The config now running: the new one, or the old one when it was refused."""
    log.info("reloading %s", ", ".join(str(f) for f in config.files))
    try:
        new = config.reread() if config.reread is not None else load_config(config.files)
        summary = await reload(runtime, config, new, drain_timeout=timeout)
    except ConfigInvalid as exc:
        log.error("reload refused, the running config is kept: %d problems", len(exc.problems))
        for problem in exc.problems:
            log.error("%s", problem)
        return config
    except Exception as exc:
        # A checked config applies cleanly but for a resource failing to start
        # (it is stopped again): the pipeline must go on with what it has.
        log.error(
            "reload failed part way, the pipeline runs a mix of both configs: %s",
            exc,
            exc_info=not isinstance(exc, PipelinesError),
        )
        return config
    log.info("config reloaded: %s", summary)
    settle_heap(collect=True)  # what the reload replaced is collected, what it built frozen
    return new


def _signature(files: Iterable[Path]) -> tuple[tuple[int, int, int] | None, ...]:
    signature: list[tuple[int, int, int] | None] = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            signature.append(None)
        else:
            signature.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(signature)


async def _watch(files: list[Path], reload_requested: asyncio.Event) -> None:
    """Request a reload when a config file changes (its mtime, size or inode:
    editors that save by renaming are seen too). A stat per file per
    interval costs nothing measurable and needs no extra dependency."""
    seen = _signature(files)
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        now = _signature(files)
        if now != seen:
            await asyncio.sleep(WATCH_INTERVAL)  # let an editor finish writing
            seen = _signature(files)
            reload_requested.set()


def read_lines(source: str) -> AsyncIterator[str]:
    """The lines of a file, or of stdin for ``-``, without blocking the event loop.

    Opened here, so a missing file is a ``PipelinesError`` before anything
    starts. A pipe, FIFO, socket or terminal is read as lines arrive; a
    regular file (or another device) in chunks, each read in a worker thread.
    """
    if source == "-":
        fd = sys.stdin.fileno()
    else:
        try:
            # Non-blocking: opening a FIFO must not wait for its writer here.
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise PipelinesError(f"cannot read {source}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    streamed = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)
    if source == "-":
        return _stream_lines(fd) if streamed else _chunked_lines(os.dup(fd))
    if streamed:
        return _stream_lines(fd, owned=True)
    os.set_blocking(fd, True)
    return _chunked_lines(fd)


async def _chunked_lines(fd: int) -> AsyncIterator[str]:
    """Lines of ``fd`` (which this closes), read in chunks in a worker thread."""
    with os.fdopen(fd, "rb", buffering=0) as file:
        pending = b""
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", errors="replace")
        if pending:
            yield pending.decode("utf-8", errors="replace")


class _Overlong(str):
    """Stands for an input line longer than MAX_LINE (which fails alone)."""


async def _stream_lines(fd: int, *, owned: bool = False) -> AsyncIterator[str]:
    """Lines of a pipe, FIFO, socket or terminal as they arrive. ``owned``: ``fd``
    is ours to close; otherwise (stdin) it is left open and blocking as found."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE, loop=loop)
    # The transport closes what it reads from: give it a duplicate, not stdin.
    pipe = os.fdopen(fd if owned else os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # over MAX_LINE: the reader skips to the next line
                yield _Overlong()
                continue
            if not line:
                return
            yield line.decode("utf-8", errors="replace")
    finally:
        transport.close()
        if not owned:
            os.set_blocking(fd, True)  # the flag is shared: leave the terminal as we found it


async def _feed(
    runtime: Runtime,
    lines: Iterable[str] | AsyncIterable[str],
    report: RunReport,
    max_wait: float,
) -> None:
    """Put the lines' entries in batches of what has arrived (up to 10), so an
    interactive producer sees each event go in at once; then wait until every
    delivery is settled (see ``_settled``)."""
    arrived: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=1_000)
    async with asyncio.TaskGroup() as group:
        group.create_task(_read(lines, arrived))
        done = False
        while not done:
            batch: list[tuple[int, Any]] = []
            item = await arrived.get()
            while item is not None:
                _parse(item, batch, report)
                if len(batch) == BATCH or arrived.empty():
                    break
                item = arrived.get_nowait()
            done = item is None
            if batch:
                await _put(runtime, batch, report)
    await _settled(runtime, max_wait)
    outcomes = runtime.deliverer.outcomes
    report.delivered, report.dead_lettered = outcomes.delivered, outcomes.dead_lettered
    report.dropped, report.waiting = outcomes.dropped, len(runtime.deliverer.retries)


async def _read(
    lines: Iterable[str] | AsyncIterable[str], arrived: asyncio.Queue[tuple[int, str] | None]
) -> None:
    number = 0
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            number += 1
            await arrived.put((number, line))
    else:
        for line in lines:
            number += 1
            await arrived.put((number, line))
    await arrived.put(None)


def _parse(item: tuple[int, str], batch: list[tuple[int, Any]], report: RunReport) -> None:
    number, line = item
    if isinstance(line, _Overlong):
        report.failed.append((number, "LineTooLong", f"longer than {MAX_LINE} bytes"))
        return
    if not line.strip():
        return
    try:
        batch.append((number, json.loads(line)))
    except json.JSONDecodeError as exc:
        report.failed.append((number, "InvalidJSON", exc.msg))


async def _put(runtime: Runtime, batch: list[tuple[int, Any]], report: RunReport) -> None:
    # An entry that is not an object fails alone: "Each entry must be an object."
    result = await runtime.put_events([entry for _, entry in batch])
    for (number, _), outcome in zip(batch, result["Entries"], strict=True):
        if "ErrorCode" in outcome:
            report.failed.append((number, outcome["ErrorCode"], outcome["ErrorMessage"]))
        else:
            report.put += 1


async def _settled(runtime: Runtime, max_wait: float) -> None:
    """Until every delivery is delivered, dead-lettered or dropped, or waits as a
    retry not due within ``max_wait`` seconds (from now): a short retry (an
    outage of a second) is waited for, a 24-hour retry policy is not. What still
    waits is saved by the stop that follows (with a state database)."""
    clock = runtime.clock
    deadline = clock.time() + max_wait
    while True:
        await runtime.wait_until_idle(timeout=None)
        due = runtime.deliverer.retries.next_due()
        if due is None or due > deadline or clock.time() >= deadline:
            return
        await asyncio.sleep(0.05)
