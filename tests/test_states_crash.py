"""Crash safety of STANDARD executions: SIGKILL a runner mid-execution at a
random moment; a new runner resumes every execution from its last completed
state. Each task's effect happens at most once per attempt (an attempt under
way at the kill is not called again: it fails and its retrier makes a new
one), the history is whole (ids in order, each state entered once per run
of it), on either engine."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from .helpers import sql
from .states_crash_runner import TASKS, read_effects, spawn

EXECUTIONS = 20


@pytest.mark.parametrize("round_", range(2))
def test_a_killed_runner_s_executions_resume_with_each_effect_once_per_attempt(
    state_location: str, tmp_path: Path, round_: int
) -> None:
    effects = tmp_path / "effects.txt"
    first = spawn(state_location, effects, "start", EXECUTIONS, "chain")
    assert first.stdout is not None
    assert first.stdout.readline().strip() == b"started", (
        first.stderr.read() if first.stderr else ""
    )
    # a random moment once some tasks have run: the kill lands anywhere in a transition
    goal = random.randint(5, EXECUTIONS * TASKS // 2)
    deadline = time.monotonic() + 60
    while len(read_effects(effects)) < goal and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(random.uniform(0, 0.02))
    first.send_signal(signal.SIGKILL)
    _, errors = first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, errors.decode()
    before = len(read_effects(effects))
    assert before < EXECUTIONS * TASKS  # killed mid-way

    second = spawn(state_location, effects, "resume", EXECUTIONS, "chain")
    out, errors = second.communicate(timeout=120)
    assert second.returncode == 0 and out.strip() == b"done", errors.decode()

    if not state_location.startswith("postgresql://"):
        assert sql(state_location, "PRAGMA integrity_check") == [("ok",)]
    statuses = sql(state_location, "SELECT name, status FROM sfn_executions")
    assert sorted(statuses) == sorted((f"e{i}", "SUCCEEDED") for i in range(EXECUTIONS))
    done = Counter(read_effects(effects))
    history = sql(
        state_location,
        "SELECT e.name, h.id, h.kind, h.details FROM sfn_history h"
        " JOIN sfn_executions e ON e.arn = h.execution ORDER BY e.name, h.id",
    )
    attempts: Counter[tuple[str, str]] = Counter()
    by_execution: dict[str, list[tuple[int, str]]] = {}
    current: dict[str, str] = {}
    for name, event_id, kind, details in history:
        by_execution.setdefault(name, []).append((event_id, kind))
        if kind == "TaskStateEntered":
            current[name] = json.loads(details)["name"]
        if kind == "LambdaFunctionScheduled":
            attempts[(name, current[name])] += 1
    for name, events in by_execution.items():
        assert [i for i, _ in events] == list(range(1, len(events) + 1)), name
        kinds = [k for _, k in events]
        assert kinds[0] == "ExecutionStarted" and kinds[-1] == "ExecutionSucceeded", name
        assert kinds.count("ExecutionStarted") == 1
        assert kinds.count("TaskStateEntered") == TASKS and kinds.count("PassStateEntered") == TASKS
    for index in range(EXECUTIONS):
        for task in range(1, TASKS + 1):
            key = (f"e{index}", f"T{task}")
            assert 1 <= done[key] <= attempts[key], (key, done[key], attempts[key])
