"""Callables the function-target tests invoke by reference (tests.functions:NAME)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pipelines.errors import DeliveryError

calls: list[Any] = []
running = 0
peak = 0
lock = threading.Lock()


def echo(payload: Any) -> Any:
    calls.append(payload)
    return {"echo": payload, "thread": threading.current_thread().name}


def handler(payload: Any, context: Any) -> Any:
    return {"rule": context.rule_name, "target": context.target_id, "payload": payload}


async def async_echo(payload: Any) -> Any:
    await asyncio.sleep(0)
    return {"async": payload}


def slow(payload: Any) -> Any:
    global running, peak
    with lock:
        running += 1
        peak = max(peak, running)
    time.sleep(float(payload))
    with lock:
        running -= 1
    return payload


async def async_slow(payload: Any) -> Any:
    await asyncio.sleep(float(payload))
    return payload


def fails(payload: Any) -> Any:
    raise ValueError(f"cannot take {payload!r}")


def rejects(payload: Any) -> Any:
    raise DeliveryError("BadPayload", "never acceptable", retryable=False)


not_callable = 42


async def async_fails(payload: Any) -> Any:
    raise ValueError(f"cannot take {payload!r}")


async def swallows_cancel(payload: Any) -> Any:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "swallowed"
    return "slept"
