"""Helpers for the scheduler plugin's tests: the plugin registered on a plugin
manager (until the venv's entry points name it), and a CLI subprocess with it."""

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
    """The installed plugins, the recorder and the scheduler plugin."""
    manager = plugin_manager()
    if manager.get_plugin("scheduler") is None:
        manager.register(plugins.scheduler, name="scheduler")
    return manager


#: ``pipelines`` in a subprocess, with the scheduler plugin registered as its
#: entry point will register it.
_CLI = (
    "import plugins.scheduler as p\n"
    "from pipelines.pluginmanager import get_plugin_manager\n"
    "m = get_plugin_manager()\n"
    "m.get_plugin('scheduler') or m.register(p, name='scheduler')\n"
    "from pipelines.cli import main\n"
    "main()\n"
)


def pipelines_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", _CLI, *args],
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
