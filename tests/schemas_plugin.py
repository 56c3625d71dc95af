"""The schemas plugin for tests, before (and after) it is an installed entry
point: a plugin manager with it registered, and an environment whose
subprocesses find it as an entry point (a ``.dist-info`` on their path)."""

from __future__ import annotations

import os
from pathlib import Path

import pluggy

import plugins.schemas

from .recorder import plugin_manager


def schema_plugins() -> pluggy.PluginManager:
    """The installed plugins, the recorder, and the schemas plugin."""
    manager = plugin_manager()
    if manager.get_plugin("schemas") is None and not manager.is_registered(plugins.schemas):
        manager.register(plugins.schemas, name="schemas")
    return manager


def cli_env(directory: Path) -> dict[str, str]:
    """An environment whose ``pipelines`` finds the schemas plugin by its
    entry point (skipped by name when the installed one has it)."""
    site = directory / "entry-points"
    info = site / "pipelines_schemas_tests-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pipelines-schemas-tests\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text("[pipelines]\nschemas = plugins.schemas\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path}
