"""GroupCommit: what a failure fails, and that the committing task goes on."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.groupcommit import GroupCommit


def _split(items: list[str]) -> list[list[str]]:
    if any(not item for item in items):
        raise ValueError("an empty item cannot be weighed")
    return [items]


async def _write(items: list[str]) -> list[str]:
    return [item.upper() for item in items]


async def test_a_split_failure_fails_its_callers_and_the_task_goes_on() -> None:
    commit: GroupCommit[str, str] = GroupCommit(_split, _write, lambda: RuntimeError("stopped"))
    task = asyncio.create_task(commit.run())
    try:
        # Submitted at the same moment: taken together, failed together.
        bad, good = await asyncio.gather(
            commit.submit(""), commit.submit("a"), return_exceptions=True
        )
        assert isinstance(bad, ValueError)
        assert isinstance(good, ValueError)
        assert not task.done()  # before: the ValueError ended run() (and its task group)
        assert await commit.submit("b") == "B"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
