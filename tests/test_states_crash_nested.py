"""Crash safety inside Parallel and Map: SIGKILL a runner at a random moment
while its executions' branches and iterations run tasks; a new runner
resumes each where it stood. No branch or iteration runs again once ended,
no state is entered twice, each task's effect happens at most once per
attempt (an attempt under way at the kill is not called again: it fails
and its retrier makes a new one), on either engine."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from .helpers import sql
from .states_crash_runner import NESTED_TASKS, read_effects, spawn

EXECUTIONS = 10


@pytest.mark.parametrize("round_", range(2))
def test_a_killed_runner_s_branches_and_iterations_resume_where_they_stood(
    state_location: str, tmp_path: Path, round_: int
) -> None:
    effects = tmp_path / "effects.txt"
    first = spawn(state_location, effects, "start", EXECUTIONS, "nested")
    assert first.stdout is not None
    assert first.stdout.readline().strip() == b"started", (
        first.stderr.read() if first.stderr else ""
    )
    total = EXECUTIONS * len(NESTED_TASKS)
    goal = random.randint(5, total // 2)
    deadline = time.monotonic() + 60
    while len(read_effects(effects)) < goal and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(random.uniform(0, 0.005))
    first.send_signal(signal.SIGKILL)
    _, errors = first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, errors.decode()
    assert len(read_effects(effects)) < total  # killed mid-way

    second = spawn(state_location, effects, "resume", EXECUTIONS, "nested")
    out, errors = second.communicate(timeout=120)
    assert second.returncode == 0 and out.strip() == b"done", errors.decode()

    statuses = sql(state_location, "SELECT name, status FROM sfn_executions")
    assert sorted(statuses) == sorted((f"e{i}", "SUCCEEDED") for i in range(EXECUTIONS))
    assert sql(state_location, "SELECT count(*) FROM sfn_children") == [(0,)]
    history = sql(
        state_location,
        "SELECT e.name, h.id, h.kind, h.details FROM sfn_history h"
        " JOIN sfn_executions e ON e.arn = h.execution ORDER BY e.name, h.id",
    )
    scheduled: Counter[tuple[str, str]] = Counter()
    entered: dict[str, Counter[str]] = {}
    ids: dict[str, list[int]] = {}
    for name, event_id, kind, details in history:
        ids.setdefault(name, []).append(event_id)
        if kind.endswith("StateEntered"):
            entered.setdefault(name, Counter())[json.loads(details)["name"]] += 1
        if kind == "LambdaFunctionScheduled":
            task_input = json.loads(json.loads(details)["input"])
            scheduled[(name, task_input["state"])] += 1
    # each state entered once (an ended branch or iteration is not run again)
    once = {"P": 1, "A1": 1, "A2": 1, "B1": 1, "B2": 1, "I": 1, "M": 1, "X": 3, "Y": 3}
    for name in ids:
        assert ids[name] == list(range(1, len(ids[name]) + 1)), name
        assert entered[name] == Counter(once), name
    done = Counter(read_effects(effects))
    for index in range(EXECUTIONS):
        for task in NESTED_TASKS:
            key = (f"e{index}", task)
            assert 1 <= done[key] <= scheduled[key], (key, done[key], scheduled[key])
