"""Executions recorded on real AWS, as LocalStack's AWS-validated tests recorded them.

LocalStack's ``tests/aws/services/stepfunctions`` holds state machine
definitions (``templates/**.json5``) and, beside its test modules,
``*.snapshot.json`` files with what AWS answered when those definitions ran
(outputs, errors, GetExecutionHistory). The recorded values are facts: the
files our tests read are copied into tests/data/stepfunctions (its README says
from where; nothing of LocalStack's code is used). This module reads them and
compares our executions with them:

- ``recording(module, test)``: one test's recorded content;
- ``template(path)``: a definition, json5 decoded;
- ``same_history(ours, recorded)``: a list of differences (empty when equal).

The recordings were normalised by LocalStack's snapshot transformers: ARNs
and names became ``<ArnPart_0idx>``-style placeholders, times became
``"timestamp"``, the role ARN ``"snf_role_arn"``, JSON text in ``input`` and
``output`` was decoded when it held an object. ``same_history`` lets each
placeholder stand for any text and decodes our JSON text the same way.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import json5
import pytest

from pipelines.clock import ManualClock

RECORDINGS = Path(__file__).resolve().parent / "data" / "stepfunctions"
#: Where the recordings lie in LocalStack's repository (their snapshots' keys start with it).
ROOT = "tests/aws/services/stepfunctions"

Json = Any

#: Recorded values that stand for any value of ours (times, the role ARN).
WILDCARDS = frozenset(
    {
        "timestamp",
        "datetime",
        "start-time",
        "start-date",
        "entered-time",
        "snf_role_arn",
        "date",
        "map_run_arn",
    }
)
_PLACEHOLDER = re.compile(r"<[A-Za-z0-9_:\-]+>")


def available() -> bool:
    return (RECORDINGS / "MANIFEST").exists()


def require_recordings() -> None:
    if not available():
        pytest.fail(f"the AWS recordings are missing from {RECORDINGS}")


@functools.cache
def _show(path: str) -> str:
    return (RECORDINGS / path).read_text()


@functools.cache
def _snapshot(module: str) -> dict[str, Json]:
    loaded: dict[str, Json] = json.loads(_show(module.replace(".py", ".snapshot.json")))
    return loaded


def full_name(module: str, test: str) -> str:
    """``Class::test[param]`` of a test named with or without its class."""
    if "::" in test:
        return test
    names = [key.split("::", 1)[1] for key in _snapshot(module) if key.endswith(f"::{test}")]
    if len(names) != 1:
        raise KeyError(f"{len(names)} recordings of {test} in {module}")
    return names[0]


def recording(module: str, test: str) -> dict[str, Json]:
    """The recorded content of ``module``'s ``test`` (``Class::test_name[param]``)."""
    key = f"{ROOT}/{module}::{full_name(module, test)}"
    snapshot = _snapshot(module)
    if key not in snapshot:
        raise KeyError(f"no recording {key}")
    content: dict[str, Json] = snapshot[key]["recorded-content"]
    return content


def recording_date(module: str, test: str) -> str:
    """When the recording was made: ``"13-11-2024, 15:09:11"``."""
    date: str = _snapshot(module)[f"{ROOT}/{module}::{full_name(module, test)}"]["recorded-date"]
    return date


def map_run_exit_as_since_november_2024(events: list[dict[str, Json]]) -> list[dict[str, Json]]:
    """An older recording's Distributed Map exit numbered as AWS numbers it now.

    Recordings made before 13 November 2024 show MapStateExited pointing at
    MapRunSucceeded (itself pointing at MapRunStarted); every recording since
    (the same definitions recorded again, and new ones) shows MapStateExited
    pointing at MapRunStarted. We follow the current behaviour and read the
    older recordings with that one id moved.
    """
    out = [dict(event) for event in events]
    by_id = {event["id"]: event for event in out if isinstance(event.get("id"), int)}
    for event in out:
        if event["type"] != "MapStateExited":
            continue
        previous = by_id.get(event["previousEventId"])
        if previous is None or previous["type"] != "MapRunSucceeded":
            continue
        started = by_id.get(previous["previousEventId"])
        if started is not None and started["type"] == "MapRunStarted":
            event["previousEventId"] = started["id"]
    return out


def template(path: str) -> dict[str, Json]:
    """A definition from ``templates/`` (``scenarios/statemachines/map_state.json5``)."""
    loaded = json5.loads(_show(f"templates/{path}"))
    # json5 leaves a surrogate pair ("\\ud83c\\udd97") as two code points; JSON joins them
    joined: dict[str, Json] = json.loads(json.dumps(loaded))
    return joined


def recorded_input(events: list[dict[str, Json]]) -> str:
    """The execution's input as the recording shows it, as JSON text."""
    started = events[0]["executionStartedEventDetails"]["input"]
    return started if isinstance(started, str) else json.dumps(started)


# -- comparison --------------------------------------------------------------------------

_JSON_FIELDS = frozenset({"input", "output", "cause", "parameters", "error"})
#: Objects whose every value is JSON text (the recordings decoded those holding an object).
_JSON_MAPS = frozenset({"assignedVariables"})


def decode(value: Json) -> Json:
    """JSON text decoded (the recordings decoded it; an object or not, both sides agree)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _matches_text(recorded: str, ours: str) -> bool:
    if recorded in WILDCARDS or recorded == ours:
        return True
    if "<" not in recorded:
        return False
    pattern = "".join(
        ".+?" if _PLACEHOLDER.fullmatch(part) else re.escape(part)
        for part in re.split(f"({_PLACEHOLDER.pattern})", recorded)
    )
    return re.fullmatch(pattern, ours, re.DOTALL) is not None


def differences(recorded: Json, ours: Json, where: str = "$") -> list[str]:
    """Where ``ours`` differs from ``recorded``, placeholders matching anything."""
    if isinstance(recorded, dict):
        if not isinstance(ours, dict):
            return [f"{where}: recorded an object, got {ours!r}"]
        out = []
        for key in recorded.keys() | ours.keys():
            if key not in ours:
                out.append(f"{where}.{key}: missing (recorded {recorded[key]!r})")
            elif key not in recorded:
                out.append(f"{where}.{key}: not recorded (got {ours[key]!r})")
            else:
                rec, got = recorded[key], ours[key]
                if key in _JSON_FIELDS:
                    rec, got = decode(rec), decode(got)
                elif key in _JSON_MAPS and isinstance(rec, dict) and isinstance(got, dict):
                    rec = {name: decode(value) for name, value in rec.items()}
                    got = {name: decode(value) for name, value in got.items()}
                out += differences(rec, got, f"{where}.{key}")
        return out
    if isinstance(recorded, list):
        if not isinstance(ours, list) or len(ours) != len(recorded):
            return [f"{where}: recorded {recorded!r}, got {ours!r}"]
        out = []
        for index, (rec, got) in enumerate(zip(recorded, ours, strict=True)):
            out += differences(rec, got, f"{where}[{index}]")
        return out
    if isinstance(recorded, str) and isinstance(ours, str):
        return (
            []
            if _matches_text(recorded, ours)
            else [f"{where}: recorded {recorded!r}, got {ours!r}"]
        )
    if isinstance(recorded, str) and recorded in WILDCARDS:
        return []
    same = recorded == ours and isinstance(recorded, bool) == isinstance(ours, bool)
    return [] if same else [f"{where}: recorded {recorded!r}, got {ours!r}"]


_PARALLEL_ENDS = frozenset(
    {"ParallelStateSucceeded", "ParallelStateAborted", "ParallelStateExited", "ParallelStateFailed"}
)


def _canonical(event: dict[str, Json]) -> str:
    decoded = {
        key: {k: decode(v) if k in _JSON_FIELDS else v for k, v in value.items()}
        if isinstance(value, dict)
        else value
        for key, value in event.items()
        if key != "timestamp"
    }
    return json.dumps(decoded, sort_keys=True, default=str)


def order_parallel_branches(events: list[dict[str, Json]]) -> list[dict[str, Json]]:
    """The events of Parallel branches made order-independent, as the recordings were.

    Branches run concurrently, so AWS's interleaving of their events is not
    reproducible; the recordings of Parallel states were normalised by giving
    the events after each ParallelStateStarted (up to the state's next
    Succeeded, Aborted, Exited or Failed event) the id ``[0]`` and previous id
    0 and sorting them. That normalisation also replaced a ParallelStateSucceeded
    by the sorted events when ParallelStateExited followed; the same is done
    here to our events, sorted by a key both sides share.
    """
    events = [dict(event) for event in events]
    start = 0
    section: list[dict[str, Json]] = []
    inside = False
    # walked as the recordings' normalisation walked it: over the list it rewrites
    for index, event in enumerate(events):
        kind = event.get("type")
        if kind in _PARALLEL_ENDS:
            events[start:index] = sorted(section, key=_canonical)
            inside = False
        elif kind == "ParallelStateStarted":
            inside = True
            section = []
            start = index + 1
        elif inside:
            event["id"] = [0]
            event["previousEventId"] = 0
            section.append(event)
    return events


def history_differences(
    recorded: list[dict[str, Json]], ours: list[dict[str, Json]], parallel: bool = False
) -> list[str]:
    """Event by event: type, id, previousEventId and details."""
    if parallel:
        recorded = order_parallel_branches(recorded)
        ours = order_parallel_branches(ours)
    out = []
    for index in range(max(len(recorded), len(ours))):
        if index >= len(recorded):
            out.append(f"event {index + 1}: not recorded: {ours[index]['type']}")
            continue
        if index >= len(ours):
            out.append(f"event {index + 1}: missing: {recorded[index]['type']}")
            continue
        rec = {k: v for k, v in recorded[index].items() if k != "timestamp"}
        got = {k: v for k, v in ours[index].items() if k != "timestamp"}
        out += differences(rec, got, f"event {index + 1} ({rec.get('type')})")
    return out


def set_at(definition: Json, where: list[str], value: Json) -> Json:
    """``definition`` with the value at path ``where`` replaced (a recorded test's patch)."""
    node = definition
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return definition


async def drive(clock: ManualClock, work: Any) -> Any:
    """Run ``work``, moving the manual clock to each timer it sets (waits, retries)."""
    import asyncio

    from pipelines.clock import settle

    task = asyncio.ensure_future(work)
    while not task.done():
        await settle()
        if task.done():
            break
        deadline = clock.next_deadline()
        if deadline is None:
            await asyncio.sleep(0)
            continue
        await clock.advance(max(deadline - clock.time(), 0))
    return task.result()


def before_map_run_change(date: str) -> bool:
    """Whether a recording dated ``date`` predates AWS's change of Map Run events (2024-11-13)."""
    day, month, rest = date.split("-", 2)
    year = rest.split(",")[0]
    return (int(year), int(month), int(day)) < (2024, 11, 13)
