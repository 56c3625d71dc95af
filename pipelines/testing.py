"""Config unit tests: what ``pipelines test`` runs (as Redpanda Connect's ``test`` does).

A test file, named ``*.test.yaml``, sits next to the pipeline it tests::

    config: pipeline.yaml               # the config under test (or a list), relative to this file
    mock_config: MockConfigFile.json    # optional: a Step Functions Local mock file
    tests:
      - name: big orders reach the warehouse
        environment: {REGION: eu}       # ${VAR}s for this test, over the process's environment
        now: 2026-03-01T09:00:00Z       # the clock's start (default: the real time)
        input:                          # PutEvents entries; a Detail may be a mapping
          - {Source: shop, DetailType: OrderPlaced, Detail: {order: 1, total: 150}}
        mocks:                          # resources replaced by a stand-in that records ...
          warehouse: {}                 # ... and succeeds
          payments: {fail: card declined, retryable: false}   # ... and fails
        state_machines:                 # Task states answered by a Step Functions Local mock file
          orders-flow: HappyPath        # resource -> the test case (of the file's mock_config)
        run_for: 3600                   # seconds of simulated time after the input (default 0)
        expect:                         # resource -> every payload it accepted, in any order
          warehouse:
            - {order: 1, total: 150}                        # an exact payload
            - pattern: {total: [{numeric: [">", 100]}]}     # an event pattern over the payload
          failed-payments:
            - pattern: {detail: {order: [1]}}
              attributes: {ERROR_CODE: MockFailure}         # dead-letter attributes (a subset)
          audit: []                     # accepted nothing

Each test runs the real pipeline in process, on a fresh state database in a
temporary directory and a manual clock: after the input, the clock moves from
timer to timer (retries, schedules) until ``run_for`` seconds have passed.
Resources that are not mocked run for real. Resources absent from ``expect``
are not checked. An item that is a mapping with ``pattern`` or ``equals``
(and optionally ``attributes``) is a matcher; anything else is an exact payload.
A pattern is matched against the payload, or against the JSON a string
payload holds (a queue message's body).

``state_machines`` gives a ``state_machine`` resource's Task states the
mocked responses of a test case in Step Functions Local's MockConfigFile
format (``plugins.states.mocking``): ``name: TestCase`` takes the test case
of the state machine ``name`` in the file's ``mock_config``; the long form
``name: {test_case: HappyPath, state_machine: OrderFlow, mock_config: other.json}``
names the state machine as the mock file does and another file. Task states
the test case does not name call their resources for real. The clock moves
on only once the executions wait (for a timer, a task token) or have ended.
A resource takes part through two optional methods: ``mock_tasks(file,
case, machine)`` and ``activity()`` (``(busy, progress)``).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.clock import ManualClock, settle
from pipelines.config import (
    PipelineConfig,
    build_runtime,
    load_config,
    load_yaml,
    locate,
)
from pipelines.errors import (
    ConfigError,
    ConfigInvalid,
    DeliveryError,
    PatternError,
    PipelinesError,
    Problem,
    Where,
    unknown_setting,
)
from pipelines.patterns import compile_pattern
from pipelines.process import tuned_process
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext, Target, TargetServices, check_keys

SUFFIX = ".test.yaml"
FILE_KEYS = {"config", "tests", "mock_config"}
CASE_KEYS = {
    "name", "environment", "now", "input", "mocks", "state_machines", "run_for", "expect",
}  # fmt: skip
MACHINE_KEYS = {"test_case", "state_machine", "mock_config"}
MOCK_KEYS = {"fail", "code", "retryable"}
SKIP_DIRECTORIES = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pipelines"}
#: Real time allowed for the pipeline to go quiet between clock moves.
QUIET_TIMEOUT = 30.0
#: Real time a resource's progress (``activity``) must stay still to count as quiet.
STILL = 0.005


class _Invalid(Exception):
    """A test's own declaration is wrong: each failure is located (file:line:column)."""

    def __init__(self, *failures: str) -> None:
        super().__init__(*failures)
        self.failures = failures


@dataclass
class CaseResult:
    """One test's outcome: passed when it has no failures."""

    file: Path
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def discover(path: str | Path = ".") -> list[Path]:
    """Test files: ``path`` itself, or every ``*.test.yaml`` under it."""
    root = Path(path)
    if root.is_file():
        return [root]
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIP_DIRECTORIES)
        found += [Path(directory) / f for f in sorted(files) if f.endswith(SUFFIX)]
    return found


async def run_tests(path: str | Path = ".") -> list[CaseResult]:
    """Run every test under ``path``; a broken test file is one failed result."""
    results = []
    for file in discover(path):
        results += await run_file(file)
    return results


async def run_file(file: Path) -> list[CaseResult]:
    data, loader = load_yaml(file, {})
    problems = list(loader.problems)
    if not problems:
        problems = _check_file(file, data, loader.positions)
    if problems:
        return [CaseResult(file, "(test file)", [str(p) for p in problems])]
    configs = data["config"] if isinstance(data["config"], list) else [data["config"]]
    paths = [file.parent / str(c) for c in configs]
    mock_config = data.get("mock_config")
    results = []
    for index, case in enumerate(data["tests"]):
        name = str(case.get("name", f"tests[{index}]")) if isinstance(case, dict) else ""
        at = _at(file, loader.positions, ("tests", index))
        try:
            failures = await _run_case(paths, case, index, at, (file.parent, mock_config))
        except ConfigInvalid as exc:
            failures = [str(p) for p in exc.problems]
        except _Invalid as exc:
            failures = list(exc.failures)
        except PipelinesError as exc:  # a resource that cannot start, a missing module
            failures = [at((), f"{name}: {exc}")]
        results.append(CaseResult(file, name, failures))
    return results


def _at(file: Path, positions: Any, base: tuple[str | int, ...]) -> Any:
    def at(path: tuple[str | int, ...], message: str) -> str:
        return str(locate(positions, (*base, *path), str(file), message))

    return at


def _check_file(
    file: Path, data: Any, positions: Mapping[tuple[str | int, ...], tuple[str, int, int]]
) -> list[Problem]:
    def at(path: tuple[str | int, ...], message: str) -> Problem:
        return locate(positions, path, str(file), message)

    if not isinstance(data, dict):
        return [at((), "a test file is a mapping with config and tests")]
    problems = []
    for key in data:
        if key not in FILE_KEYS:
            problems.append(at((key,), f"{key}: {unknown_setting(str(key), FILE_KEYS)}"))
    if "mock_config" in data and not isinstance(data["mock_config"], str):
        problems.append(at(("mock_config",), "mock_config: a mock file's path"))
    if not isinstance(data.get("config"), str | list):
        problems.append(
            at(("config",), "config: the pipeline file to test (or a list) is required")
        )
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        return [*problems, at(("tests",), "tests: a list of tests is required")]
    return problems


# -- running one test ---------------------------------------------------------


async def _run_case(
    paths: list[Path], case: Any, index: int, at: Any, mock_config: tuple[Path, Any]
) -> list[str]:
    if not isinstance(case, dict):
        return [at((), f"tests[{index}]: a test is a mapping (name, input, expect, ...)")]
    try:
        check_keys(Where(f"tests[{index}]"), case, CASE_KEYS)
    except ConfigError as exc:
        return [at(error.path, f"{error.where}: {error.message}") for error in exc.errors]
    environment = case.get("environment") or {}
    if not isinstance(environment, dict):
        return [at(("environment",), "environment: a mapping of variable names to values")]
    environ = {**os.environ, **{str(k): str(v) for k, v in environment.items()}}
    config = load_config(paths, environ=environ)
    clock = ManualClock(_start(case, at))
    run_for = case.get("run_for", 0)
    if isinstance(run_for, bool) or not isinstance(run_for, int | float) or run_for < 0:
        return [at(("run_for",), "run_for: seconds of simulated time, a number >= 0")]
    expect = case.get("expect") or {}
    if not isinstance(expect, dict):
        return [at(("expect",), "expect: a mapping of resource names to what they receive")]
    # A test runner, like pytest with its rootdir: the config's functions
    # import from beside it while its case runs, and sys.path is put back after.
    with (
        tempfile.TemporaryDirectory(prefix="pipelines-test-") as directory,
        tuned_process([config.directory], switch_interval=None),
    ):
        runtime = await build_runtime(config, clock=clock, state_path=Path(directory) / "state.db")
        captures = await _capture(runtime, config, case.get("mocks") or {}, at)
        reports = _mock_tasks(captures, case.get("state_machines") or {}, mock_config, at)
        failures: list[str] = []
        for name in expect:
            if name not in captures:
                failures.append(at(("expect", name), f"expect.{name}: no resource named {name!r}"))
        async with runtime:
            failures += await _put(runtime, case.get("input") or [], at)
            await _run(runtime, clock, float(run_for), list(captures.values()))
    for name, problems in reports.items():
        failures += [at(("state_machines", name), f"state_machines.{name}: {p}") for p in problems]
    for name, expected in expect.items():
        if name in captures:
            failures += _compare(name, expected, captures[name].received, at)
    return failures


def _start(case: dict[str, Any], at: Any) -> float:
    now = case.get("now")
    if now is None:
        return datetime.now().timestamp()
    if isinstance(now, datetime):  # YAML reads an unquoted timestamp itself
        moment = now
    else:
        try:
            moment = datetime.fromisoformat(str(now).replace("Z", "+00:00"))
        except ValueError:
            raise _Invalid(at(("now",), f"now: not an ISO 8601 time: {now!r}")) from None
    if moment.tzinfo is None:
        raise _Invalid(at(("now",), "now: give a time zone (2026-03-01T09:00:00Z)"))
    return moment.timestamp()


async def _put(runtime: Runtime, entries: Any, at: Any) -> list[str]:
    if not isinstance(entries, list):
        return [at(("input",), "input: a list of PutEvents entries")]
    prepared = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("Detail"), dict | list):
            entry = {**entry, "Detail": json.dumps(entry["Detail"])}
        prepared.append(entry)
    failures = []
    for start in range(0, len(prepared), 10):
        result = await runtime.put_events(prepared[start : start + 10])
        for offset, outcome in enumerate(result["Entries"]):
            if "ErrorCode" in outcome:
                index = start + offset
                failures.append(
                    at(
                        ("input", index),
                        f"input[{index}]: {outcome['ErrorCode']}: {outcome['ErrorMessage']}",
                    )
                )
    return failures


async def _run(
    runtime: Runtime, clock: ManualClock, run_for: float, resources: list[_Recording]
) -> None:
    """Let the pipeline deliver what it can, the clock moving from timer to
    timer (retries, schedules) for ``run_for`` simulated seconds. Resources
    that work on their own (a state machine's executions) are waited for
    too: until each is not busy and its progress stood still for a moment."""
    active = [
        activity
        for recording in resources
        if (activity := getattr(recording.inner, "activity", None)) is not None
    ]

    last: list[Any] = []

    async def quiet() -> None:
        deadline = asyncio.get_running_loop().time() + QUIET_TIMEOUT
        while True:
            await runtime.wait_until_idle(QUIET_TIMEOUT)
            if not active:
                return
            before = [activity() for activity in active]
            if before != last:  # moved since the clock last moved: let it settle a while
                await asyncio.sleep(STILL)
            await settle()
            after = [activity() for activity in active]
            if before == after and not any(busy for busy, _ in after):
                last[:] = after
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the state machines were not quiet within {QUIET_TIMEOUT} s")

    await quiet()
    await clock.advance(run_for, quiet=quiet)


# -- state machines' mocked tasks (Step Functions Local's mock files) ------------


def _mock_tasks(
    captures: dict[str, _Recording], machines: Any, mock_config: tuple[Path, Any], at: Any
) -> dict[str, list[str]]:
    """Give each named state machine its test case; what each will have to report."""
    if not isinstance(machines, dict):
        raise _Invalid(at(("state_machines",), "state_machines: a mapping of resource names"))
    directory, default_file = mock_config
    reports: dict[str, list[str]] = {}
    for name, given in machines.items():
        where = ("state_machines", name)
        settings = given if isinstance(given, dict) else {"test_case": given}
        try:
            check_keys(Where(f"state_machines.{name}"), settings, MACHINE_KEYS)
        except ConfigError as exc:
            raise _Invalid(
                *(at((*where, *e.path), f"{e.where}: {e.message}") for e in exc.errors)
            ) from None
        case = settings.get("test_case")
        file = settings.get("mock_config", default_file)
        if not isinstance(case, str):
            raise _Invalid(at(where, f"state_machines.{name}: the test case's name"))
        if not isinstance(file, str):
            raise _Invalid(
                at(where, f"state_machines.{name}: no mock file: give mock_config"
                   " (for the test file, or here)")
            )  # fmt: skip
        recording = captures.get(name)
        mock = getattr(recording.inner, "mock_tasks", None) if recording is not None else None
        if mock is None:
            problem = "no resource of that name" if recording is None else (
                "mocked (mocks)" if recording.inner is None else "not a state machine"
            )  # fmt: skip
            raise _Invalid(at(where, f"state_machines.{name}: {problem}"))
        machine = settings.get("state_machine")
        try:
            reports[name] = mock(directory / file, case, None if machine is None else str(machine))
        except ValueError as exc:
            raise _Invalid(at(where, f"state_machines.{name}: {exc}")) from None
    return reports


# -- recording what resources receive -------------------------------------------


class _Recording(Target):
    """A resource under test: the real one (or a stand-in) that records what it accepts."""

    def __init__(self, inner: Target | None, failure: DeliveryError | None) -> None:
        self.inner = inner
        self.failure = failure
        self.concurrency = inner.concurrency if inner is not None else Target.concurrency
        self.received: list[tuple[Any, dict[str, str]]] = []

    async def start(self, services: TargetServices) -> None:
        if self.inner is not None:
            await self.inner.start(services)

    async def drain(self, timeout: float) -> None:
        if self.inner is not None:
            await self.inner.drain(timeout)

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()

    def note(self, payload: Any) -> None:
        """What the resource got other than by a delivery (a state machine's
        Task calling it): it counts as accepted."""
        self.received.append((payload, {}))

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        result = None
        if self.inner is not None:
            result = await self.inner.deliver(payload, context)
        elif self.failure is not None:
            raise self.failure
        self.received.append((payload, dict(context.attributes)))
        return result


async def _capture(
    runtime: Runtime, config: PipelineConfig, mocks: Any, at: Any
) -> dict[str, _Recording]:
    if not isinstance(mocks, dict):
        raise _Invalid(at(("mocks",), "mocks: a mapping of resource names"))
    captures = {}
    for name in runtime.resource_names():
        if name in mocks:
            recording = _Recording(None, _mock_failure(name, mocks[name], at))
        else:
            recording = _Recording(runtime.resource(name), None)
        await runtime.install(name, recording)
        captures[name] = recording
    for name in mocks:
        if name not in captures:
            known = ", ".join(sorted(config.resources)) or "none declared"
            raise _Invalid(
                at(("mocks", name), f"mocks.{name}: no resource named {name!r} ({known})")
            )
    return captures


def _mock_failure(name: str, mock: Any, at: Any) -> DeliveryError | None:
    mock = mock or {}
    if not isinstance(mock, dict):
        raise _Invalid(at(("mocks", name), f"mocks.{name}: a mapping (or {{}})"))
    try:
        check_keys(Where(f"mocks.{name}"), mock, MOCK_KEYS)
    except ConfigError as exc:
        raise _Invalid(
            *(at(("mocks", name, *e.path), f"{e.where}: {e.message}") for e in exc.errors)
        ) from None
    if "fail" not in mock:
        return None
    return DeliveryError(
        str(mock.get("code", "MockFailure")),
        str(mock["fail"]),
        retryable=bool(mock.get("retryable", True)),
    )


# -- comparing ------------------------------------------------------------------


def _compare(
    name: str, expected: Any, received: list[tuple[Any, dict[str, str]]], at: Any
) -> list[str]:
    """Match each expected item to a distinct received payload; report the rest
    as a diff: ``-`` expected but not received, ``+`` received but not expected."""
    if not isinstance(expected, list):
        return [at(("expect", name), f"expect.{name}: a list of payloads or matchers")]
    matchers = [_matcher(name, index, item, at) for index, item in enumerate(expected)]
    pairs = _pair([accepts for _, accepts in matchers], received)
    missing = [describe for index, (describe, _) in enumerate(matchers) if index not in pairs]
    taken = set(pairs.values())
    left = [r for index, r in enumerate(received) if index not in taken]
    if not missing and not left:
        return []
    lines = [
        at(
            ("expect", name),
            f"{name}: expected {len(expected)}, accepted {len(received)}"
            f" ({len(missing)} missing, {len(left)} unexpected)",
        )
    ]
    lines += [f"  - {text}" for text in missing]
    for payload, attributes in left:
        shown = f" with attributes {_show(attributes)}" if attributes else ""
        lines.append(f"  + {_show(payload)}{shown}")
    return ["\n".join(lines)]


def _pair(accepts: list[Any], received: list[tuple[Any, dict[str, str]]]) -> dict[int, int]:
    """As many (expected, received) pairs as possible: a maximum bipartite
    matching (augmenting paths), so overlapping patterns never fail a test
    that some assignment satisfies. Expected index -> received index."""
    fits = [[r for r, got in enumerate(received) if accept(*got)] for accept in accepts]
    owner: dict[int, int] = {}  # received index -> expected index

    def assign(expected: int, seen: set[int]) -> bool:
        for r in fits[expected]:
            if r not in seen:
                seen.add(r)
                if r not in owner or assign(owner[r], seen):
                    owner[r] = expected
                    return True
        return False

    for expected in range(len(accepts)):
        assign(expected, set())
    return {expected: r for r, expected in owner.items()}


def _matcher(name: str, index: int, item: Any, at: Any) -> tuple[str, Any]:
    attributes: dict[str, Any] = {}
    if isinstance(item, dict) and ("pattern" in item or "equals" in item):
        attributes = item.get("attributes") or {}
        if "pattern" in item:
            try:
                pattern = compile_pattern(item["pattern"])
            except PatternError as exc:
                raise _Invalid(
                    at(("expect", name, index, "pattern"), f"expect.{name}[{index}]: {exc}")
                ) from None
            text = f"pattern {_show(item['pattern'])}"

            def payload_matches(payload: Any) -> bool:
                if isinstance(payload, str):  # a JSON message body (a queue's, raw)
                    try:
                        payload = json.loads(payload)
                    except ValueError:
                        return False
                return isinstance(payload, dict) and pattern.matches(payload)
        else:
            wanted = item["equals"]
            text = _show(wanted)

            def payload_matches(payload: Any) -> bool:
                return bool(payload == wanted)
    else:
        text = _show(item)

        def payload_matches(payload: Any) -> bool:
            return bool(payload == item)

    if attributes:
        text += f" with attributes {_show(attributes)}"

    def accepts(payload: Any, received: Mapping[str, str]) -> bool:
        return payload_matches(payload) and all(
            received.get(k) == str(v) for k, v in attributes.items()
        )

    return text, accepts


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
