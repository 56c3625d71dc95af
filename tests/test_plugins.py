"""The plugin system: hookspecs, loading through entry points, the CLI listing."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from pipelines import hookspecs
from pipelines.errors import PluginError
from pipelines.hookspecs import hookimpl
from pipelines.pluginmanager import LOAD_PLUGINS, get_plugin_manager, list_plugins, target_types
from pipelines.targets import Target, TargetType

from .helpers import pipelines_command, run_cli

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
    assert entry["builtin"] is True and entry["distribution"] == "pipelines"
    table = run_cli("plugins", "-o", "table")
    assert table.returncode == 0, table.stderr
    [row] = [line.split() for line in table.stdout.splitlines() if line.startswith("function ")]
    assert row == [
        "function",
        entry["version"],
        "pipelines",
        "true",
        '["register_targets"]',
        '["function"]',
    ]


EXTERNAL = """
from pipelines.hookspecs import hookimpl
from pipelines.targets import Target, TargetType


class Nothing(Target):
    async def deliver(self, payload, context):
        return None


class NothingType(TargetType):
    name = "nothing"

    def create(self, name, config):
        return Nothing()


@hookimpl
def register_targets(register):
    register(NothingType())
"""


def installed(site: Path, name: str, module: str, source: str) -> None:
    """A real installed distribution (a .dist-info with an entry point) in ``site``."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name.replace('-', '_')}-1.2.3.dist-info"  # as wheels name it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[pipelines]\n{module} = {module}\n")


def plugin_names(site: Path, **env: str) -> tuple[int, list[str], str]:
    environ = {k: v for k, v in os.environ.items() if k != LOAD_PLUGINS}
    done = subprocess.run(
        [*pipelines_command(), "plugins"],
        env={**environ, "PYTHONPATH": str(site), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    names = [p["name"] for p in json.loads(done.stdout)] if done.returncode == 0 else []
    return done.returncode, names, done.stderr


def test_external_plugins_load_unless_the_environment_says_not(tmp_path: Path) -> None:
    installed(tmp_path, "pipelines-nothing", "nothing_plugin", EXTERNAL)
    code, names, stderr = plugin_names(tmp_path)
    assert code == 0, stderr
    assert "nothing_plugin" in names and "function" in names
    assert plugin_names(tmp_path, **{LOAD_PLUGINS: ""})[1:] == (
        [
            "bucket",
            "eventbus",
            "firehose",
            "function",
            "http",
            "logs",
            "mqtt",
            "pipes",
            "queue",
            "scheduler",
            "schemas",
            "states",
            "stream",
            "topic",
        ],
        "",
    )
    assert "nothing_plugin" in plugin_names(tmp_path, **{LOAD_PLUGINS: "nothing_plugin"})[1]


def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path) -> None:
    installed(tmp_path, "pipelines-broken", "broken_plugin", "import no_such_module\n")
    code, _, stderr = plugin_names(tmp_path)
    assert code == 1
    assert stderr.startswith("error: plugin 'broken_plugin' (broken_plugin, from pipelines-broken)")
    assert "No module named 'no_such_module'" in stderr
    assert f"{LOAD_PLUGINS}=" in stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1
    # Without external plugins the broken one is not even imported.
    assert plugin_names(tmp_path, **{LOAD_PLUGINS: ""})[0] == 0


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


def test_loading_the_plugins_does_not_load_the_aws_endpoint() -> None:
    # Every command loads the plugins; botocore and aiohttp cost about a second
    # at start-up, so they load only when an endpoint starts (--api).
    code = (
        "import sys\n"
        "from pipelines.pluginmanager import target_types\n"
        "from pipelines.cli import cli\n"
        "target_types()\n"
        "print(sorted(m for m in ('botocore', 'aiohttp', 'pipelines.api') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_starting_a_runtime_does_not_load_the_aws_endpoint(tmp_path: Path) -> None:
    # A start runs every plugin's restorer (register_restorers): they make
    # again what the plugins' APIs made, without importing those APIs, nor
    # a target type's module when there is nothing of its type to make.
    # With nothing stored, a start imports the restorers and the stores they
    # read, nothing more (a pipe's sources, jsonschema for the schema
    # registry: 220-400 ms of a start's CPU, measured by bench_schedule.py).
    code = (
        "import asyncio, re, sys\n"
        "from pipelines.runtime import Runtime\n"
        "async def main():\n"
        f"    runtime = Runtime(state_path={str(tmp_path / 'state.db')!r})\n"
        "    before = set(sys.modules)\n"
        "    async with runtime:\n"
        "        pass\n"
        "    return set(sys.modules) - before\n"
        "imported = asyncio.run(main())\n"
        "heavy = ('botocore', 'aiohttp', 'pipelines.api')\n"
        "targets = [m for m in sys.modules if m.startswith('plugins.') and m.endswith('.target')]\n"
        "extra = [m for m in imported if not re.fullmatch(r'plugins\\.\\w+\\.(restore|store)', m)]\n"
        "print(sorted(m for m in heavy if m in sys.modules) + sorted(targets) + sorted(extra))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
