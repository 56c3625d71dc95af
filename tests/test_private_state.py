"""State is private: the state database, its WAL and SHM files, the lock, the
control socket and the directories made for them are the owner's alone."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from pipelines.runtime import Runtime
from tests.helpers import pipelines_command

CONFIG = """
resources:
  sink: {type: function, function: "os:getcwd"}
rules:
  r:
    pattern: {source: [nobody]}
    targets: [{id: t, resource: sink}]
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_state_database_and_its_directories_are_private(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b" / "state.db"
    previous = os.umask(0o022)  # the usual umask: files 0644, directories 0755
    try:
        async with Runtime(state_path=state) as runtime:
            await runtime.put_events([{"Source": "s", "DetailType": "t", "Detail": "{}"}])
            files = [state, state.with_name("state.db-wal"), state.with_name("state.db-shm")]
            assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
            assert mode(state.with_name("state.db.lock")) == 0o600
    finally:
        os.umask(previous)
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    assert mode(state) == 0o600


async def test_a_directory_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    async with Runtime(state_path=shared / "state.db"):
        pass
    assert mode(shared) == 0o755 and mode(shared / "state.db") == 0o600


def test_the_runner_makes_dot_pipelines_private(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    runner = subprocess.Popen(
        [*pipelines_command(), "run", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "pipeline started" in runner.stderr.readline()
        directory = tmp_path / ".pipelines"
        assert mode(directory) == 0o700
        assert mode(directory / "state.db") == 0o600
        assert mode(directory / "control.sock") == 0o600
    finally:
        runner.terminate()
        runner.wait(timeout=30)
