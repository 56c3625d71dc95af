"""What a command imports: only what it uses. Every ``pipelines`` run pays for
what its start imports (botocore's models, aiohttp, the CloudFormation layer,
every plugin's API and CLI cost seconds together), so a command's modules
load when it runs: built-in commands import their layer inside the command,
plugins register ``LazyCommand``s and ``LazyTargetType``s.

The commands run as the console script runs them, in a fresh interpreter,
which then lists the modules it holds. No timing: what is imported is the
cause, and it does not depend on the machine's load."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pluggy
import pytest

from pipelines import hookspecs
from pipelines.cli import LAZY_COMMANDS
from pipelines.clikit import LazyCommand
from pipelines.errors import PluginError
from pipelines.hookspecs import hookimpl
from pipelines.pluginmanager import get_plugin_manager, target_types
from pipelines.targets import LazyTargetType

from .helpers import project_env

ROOT = Path(__file__).resolve().parents[1]
ORDERS = ROOT / "examples" / "orders" / "pipeline.yaml"

#: Third-party packages no command here needs: the AWS endpoint's (botocore,
#: aiohttp and what they bring), the console's and /metrics', and those of
#: plugins' features (Parquet, JSONata, JQ, JSON Schema, MQTT, PostgreSQL...).
HEAVY = {
    "aiohttp",
    "boto3",
    "botocore",
    "cbor2",
    "cramjam",
    "cryptography",
    "fastjsonschema",
    "gmqtt",
    "jq",
    "jsonata",
    "jsonschema",
    "matplotlib",
    "multidict",
    "numpy",
    "prometheus_client",
    "psycopg",
    "psycopg_pool",
    "pyarrow",
    "rich",
    "urllib3",
    "yarl",
}
#: The engine's layers these commands do not run: the AWS endpoint, the web
#: console, CloudFormation's import and export, the runner and its HTTP.
ENGINE_HEAVY = (
    "pipelines.api",
    "pipelines.charts",
    "pipelines.cloudformation",
    "pipelines.console",
    "pipelines.http",
    "pipelines.runner",
    "pipelines.schema",
)
#: What the config layer imports: ``--help`` needs none of it.
CONFIG_LAYER = (
    "croniter",
    "jmespath",
    "yaml",
    "pipelines.bus",
    "pipelines.config",
    "pipelines.patterns",
    "pipelines.runtime",
)

LISTER = """
import json, sys
from pipelines.cli import cli
try:
    cli.main(sys.argv[2:], prog_name="pipelines")
except SystemExit as exit:
    code = exit.code
else:
    code = 0
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def modules_of(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The modules ``pipelines ARGS`` holds once it has run (exit 0 asserted),
    with ``env`` added to its environment."""
    listing = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", LISTER, str(listing), *args],
        cwd=ROOT,
        env={**project_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(listing.read_text())
    assert found["code"] in (0, None), done.stderr
    modules: list[str] = found["modules"]
    assert "pipelines.cli" in modules  # the listing is of the command's process
    return modules


def heavy(modules: list[str], *extra: str) -> list[str]:
    """The modules of ``modules`` that are HEAVY, ENGINE_HEAVY or ``extra``."""
    prefixes = (*ENGINE_HEAVY, *extra)
    return [
        m
        for m in modules
        if m.split(".")[0] in HEAVY or any(m == p or m.startswith(f"{p}.") for p in prefixes)
    ]


def plugin_parts(modules: list[str]) -> list[str]:
    """The plugins' modules beyond their entry points (``plugins.queue.cli``,
    not ``plugins.queue``): what a plugin imports when it is used."""
    return [m for m in modules if m.startswith("plugins.") and m.count(".") >= 2]


def test_help_imports_no_command(tmp_path: Path) -> None:
    modules = modules_of(tmp_path, "--help")
    assert heavy(modules, *CONFIG_LAYER) == []
    assert plugin_parts(modules) == []
    # ...yet every plugin was loaded: --help lists their commands.
    assert {"plugins.queue", "plugins.states", "plugins.firehose"} <= set(modules)


def completion(words: str) -> dict[str, str]:
    """The environment in which ``pipelines`` answers bash's completion of
    ``words`` (the last word is the one being completed)."""
    return {
        "_PIPELINES_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }


def test_completing_a_command_name_imports_no_command(tmp_path: Path) -> None:
    modules = modules_of(tmp_path, env=completion("pipelines "))
    assert heavy(modules, *CONFIG_LAYER) == []
    assert plugin_parts(modules) == []
    done = subprocess.run(
        [sys.executable, "-c", LISTER, str(tmp_path / "listed.json")],
        cwd=ROOT,
        env={**project_env(), **completion("pipelines q")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "plain,queue\n", "")


def test_completing_inside_a_command_imports_that_command(tmp_path: Path) -> None:
    modules = modules_of(tmp_path, env=completion("pipelines queue "))
    assert "plugins.queue.cli" in modules
    assert {m.split(".")[1] for m in plugin_parts(modules)} == {"queue"}


def test_validate_imports_the_config_layer_and_the_types_it_uses(tmp_path: Path) -> None:
    modules = modules_of(tmp_path, "validate", str(ORDERS))
    assert heavy(modules) == []
    assert "pipelines.config" in modules
    # The orders config has function and queue resources: only the queue
    # plugin's target type is imported (function is a one-module plugin).
    assert {m.split(".")[1] for m in plugin_parts(modules)} == {"queue"}


def test_a_plugin_command_imports_that_plugin_only(tmp_path: Path) -> None:
    modules = modules_of(tmp_path, "queue", "--help")
    assert heavy(modules, *CONFIG_LAYER) == []
    assert "plugins.queue.cli" in modules
    assert {m.split(".")[1] for m in plugin_parts(modules)} == {"queue"}


def test_the_listing_sees_what_a_command_imports(tmp_path: Path) -> None:
    # The checks above would pass on a listing that sees nothing: here the
    # same listing finds the layer a command does import.
    modules = modules_of(tmp_path, "export", "--help")
    assert "pipelines.cloudformation.cli" in heavy(modules)


# -- a lazy command is listed as the real one -----------------------------------


def lazy_commands() -> list[LazyCommand]:
    """The built-in lazy commands and those every plugin registers (on a
    group of their own: the ``pipelines`` group swaps the real ones in)."""
    group = click.Group()
    get_plugin_manager().hook.register_commands(cli=group)
    plugins = [c for c in group.commands.values() if isinstance(c, LazyCommand)]
    assert len(plugins) >= 9  # queue, stream, logs, sfn, ...
    return [*LAZY_COMMANDS, *plugins]


@pytest.mark.parametrize("lazy", lazy_commands(), ids=lambda c: str(c.name))
def test_a_lazy_command_is_listed_as_the_real_one(lazy: LazyCommand) -> None:
    real = lazy.load()
    assert not isinstance(real, LazyCommand)
    assert (lazy.name, lazy.hidden) == (real.name, real.hidden)
    # pipelines --help gives each command what is left of the terminal's width.
    for limit in range(10, 200):
        assert lazy.get_short_help_str(limit) == real.get_short_help_str(limit), limit


def test_the_cli_runs_the_real_command_of_a_lazy_one() -> None:
    from pipelines.cli import cli

    command = cli.get_command(click.Context(cli), "queue")
    assert isinstance(command, click.Group) and "send" in command.commands
    assert cli.commands["queue"] is command


def test_a_lazy_command_naming_another_command_is_an_error() -> None:
    wrong = LazyCommand("queue", "pipelines.cli:cli", "Durable queues.")
    with pytest.raises(PluginError, match=r"'queue': pipelines\.cli:cli is the command 'cli'"):
        wrong.load()
    missing = LazyCommand("queue", "pipelines.cli:nothing", "Durable queues.")
    with pytest.raises(PluginError, match=r"pipelines\.cli:nothing is not a click command"):
        missing.load()


# -- a lazy target type ---------------------------------------------------------


def test_every_lazy_target_type_loads_as_registered() -> None:
    types = target_types()
    assert {"queue", "state_machine", "firehose", "function"} <= set(types)
    for name in types:
        assert types[name].name == name


class _Misnamed:
    @hookimpl
    def register_targets(self, register: Callable[[LazyTargetType], None]) -> None:
        register(LazyTargetType("broken", "plugins.queue.target:QueueType"))


def test_a_lazy_target_type_that_fails_to_load_names_its_plugin() -> None:
    manager = pluggy.PluginManager("pipelines")
    manager.add_hookspecs(hookspecs)
    manager.register(_Misnamed(), name="third-party")
    types = target_types(manager)
    assert list(types) == ["broken"]  # known by its name; nothing imported yet
    with pytest.raises(
        PluginError, match=r"plugin 'third-party': target type 'broken'.*made the type 'queue'"
    ):
        types["broken"]
