"""The ``register_restorers`` hook: plugins' stored resources made again at start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.hookspecs import hookimpl
from pipelines.runtime import Runtime

from .recorder import plugin_manager

calls: list[str] = []


async def broken(runtime: Any) -> None:
    calls.append("broken")
    raise RuntimeError("its store is unreadable")


async def remakes(runtime: Any) -> None:
    calls.append("remakes")
    await runtime.put_resource("made-again", "recorder", {})


class _Restoring:
    @hookimpl
    def register_restorers(
        self, register: Callable[[Callable[[Any], Awaitable[None]]], None]
    ) -> None:
        register(broken)
        register(remakes)


async def test_restorers_run_once_the_runtime_takes_events_and_a_failure_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls.clear()
    plugins = plugin_manager()
    plugins.register(_Restoring(), name="restoring")
    async with Runtime(state_path=tmp_path / "state.db", plugins=plugins) as runtime:
        assert calls == ["broken", "remakes"]
        assert "made-again" in runtime.resource_names()
        assert runtime.running
    assert "plugin restoring: making its stored resources again failed" in caplog.text
    calls.clear()
    async with Runtime(plugins=plugins):  # no state database: nothing is stored
        assert calls == []
