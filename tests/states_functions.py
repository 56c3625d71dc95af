"""Callables the state machine tests' function resources invoke (tests.states_functions:NAME)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

calls: list[Any] = []


async def double(payload: Any) -> Any:
    calls.append(payload)
    return {"value": payload["value"] * 2}


async def boom(payload: Any) -> Any:
    raise ValueError(f"no good: {payload}")


def record(payload: Any) -> Any:
    """Append one line to the file ``payload["effects"]`` (the task's effect)
    and make it durable, so a test killing the process counts what happened."""
    line = f"{payload['execution']} {payload['state']}\n"
    with open(payload["effects"], "a", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())
    return {"done": payload["state"]}


_PACE = threading.Lock()


def record_paced(payload: Any) -> Any:
    """``record``, at most one call each 10 ms across the process: a crash
    test's kill, sent once some effects are seen, then lands mid-way however
    late the loaded machine lets the test look (100 effects take a second)."""
    with _PACE:
        time.sleep(0.01)
        return record(payload)


async def hello(payload: Any) -> Any:
    """LocalStack's recorded Lambda that answers a string (LAMBDA_RETURN_BYTES_STR)."""
    return "HelloWorld!"


async def identity(payload: Any) -> Any:
    return payload


def flaky(payload: Any) -> Any:
    """Fails while the file ``payload["gate"]`` is absent (a redrive test opens it),
    counting its calls in ``payload["calls"]``."""
    with open(payload["calls"], "a", encoding="utf-8") as out:
        out.write("call\n")
    if not os.path.exists(payload["gate"]):
        raise RuntimeError("the gate is closed")
    return {"charged": payload["amount"]}
