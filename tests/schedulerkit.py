"""Helpers for the scheduler plugin's tests: the installed plugins with the
test recorder, and the ``pipelines`` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pluggy

import plugins.scheduler

from .recorder import plugin_manager

ROOT = Path(__file__).resolve().parent.parent


def scheduler_plugins() -> pluggy.PluginManager:
    """The installed plugins (the scheduler's entry point among them) and the recorder."""
    manager = plugin_manager()
    assert manager.get_plugin("scheduler") is plugins.scheduler, "reinstall: pip install -e ."
    return manager


def pipelines_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(*args: str) -> Any:
    return json.loads(pipelines_cli(*args, "--output", "json").stdout)
