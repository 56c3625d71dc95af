"""The plugin system: hookspecs, loading through entry points, the CLI listing."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pluggy
import pytest

from pipelines import hookspecs
from pipelines.errors import PluginError
from pipelines.hookspecs import hookimpl
from pipelines.pluginmanager import get_plugin_manager, list_plugins, target_types
from pipelines.targets import Target, TargetType

from .helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [
    name
    for name, value in vars(hookspecs).items()
    if inspect.isfunction(value) and hasattr(value, "pipelines_spec")
]


def test_there_are_hooks() -> None:
    assert "register_targets" in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    # As in pytest's hookspec.py: when it is called, with what, what it must return.
    assert "Called" in doc
    assert "return" in doc.lower()
    assert name in (ROOT / "docs" / "plugins.md").read_text()


def test_builtins_load_through_the_entry_point_group() -> None:
    types = target_types()
    assert "function" in types
    infos = {info.name: info for info in list_plugins()}
    assert infos["function"].targets == ("function",)
    assert infos["function"].hooks == ("register_targets",)
    assert infos["function"].version


def test_cli_lists_plugins() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    entry = next(p for p in json.loads(result.stdout) if p["name"] == "function")
    assert entry["hooks"] == ["register_targets"]
    assert entry["targets"] == ["function"]
    assert entry["version"]


class _Dummy(TargetType):
    name = "function"

    def create(self, target_id: str, config: object) -> Target:  # type: ignore[override]
        raise NotImplementedError


class _Clashing:
    @hookimpl
    def register_targets(self, register: object) -> None:
        register(_Dummy())  # type: ignore[operator]


class _Wrong:
    @hookimpl
    def register_targets(self, register: object) -> None:
        register("not a target type")  # type: ignore[operator]


def _manager_with(plugin: object) -> pluggy.PluginManager:
    manager = pluggy.PluginManager("pipelines")
    manager.add_hookspecs(hookspecs)
    for name, builtin in get_plugin_manager().list_name_plugin():
        manager.register(builtin, name=name)
    manager.register(plugin, name="third-party")
    return manager


def test_a_type_name_registered_twice_names_both_plugins() -> None:
    with pytest.raises(PluginError, match="'function' is registered by both"):
        target_types(_manager_with(_Clashing()))


def test_registering_something_else_is_an_error() -> None:
    with pytest.raises(PluginError, match="'third-party' registered 'not a target type'"):
        target_types(_manager_with(_Wrong()))
