"""Loading plugins: the ``pipelines`` entry point group, through pluggy.

Built-in plugins are listed in the same group (see pyproject.toml), so they
load exactly as a third-party plugin does.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from pipelines import hookspecs
from pipelines.errors import PluginError
from pipelines.targets import LazyTargetType, TargetType

ENTRY_POINT_GROUP = "pipelines"
#: Our own distribution: its entry points are the built-in plugins.
BUILTIN_DISTRIBUTION = "pipelines"
#: Unset: load every installed plugin. Empty: built-ins only. "a,b": built-ins
#: and the external plugins (entry point names) listed.
LOAD_PLUGINS = "PIPELINES_LOAD_PLUGINS"


@lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with the installed plugins loaded
    (as ``PIPELINES_LOAD_PLUGINS`` allows)."""
    return load_plugins(os.environ.get(LOAD_PLUGINS))


def load_plugins(allowed: str | None = None) -> pluggy.PluginManager:
    """A plugin manager with the built-in plugins and the external ones ``allowed``
    lets in (None: all; else a comma-separated list of entry point names)."""
    manager = pluggy.PluginManager("pipelines")
    manager.add_hookspecs(hookspecs)
    wanted = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    for entry_point in sorted(entry_points, key=lambda e: e.name):
        distribution = entry_point.dist.name if entry_point.dist is not None else "?"
        builtin = distribution == BUILTIN_DISTRIBUTION
        if not builtin and wanted is not None and entry_point.name not in wanted:
            continue
        try:
            manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=entry_point.name)
        except Exception as exc:  # a broken plugin must say which one it is
            raise PluginError(
                f"plugin {entry_point.name!r} ({entry_point.value}, from {distribution})"
                f" failed to load: {exc!r}; fix or uninstall it, or run without external"
                f" plugins: {LOAD_PLUGINS}= pipelines ..."
            ) from exc
    return manager


class TargetTypes(Mapping[str, TargetType]):
    """Every registered target type by name, in name order. A type registered
    as a ``LazyTargetType`` is imported the first time it is looked up, so
    only the types a command meets are: iterating the names imports nothing."""

    def __init__(self, found: Mapping[str, tuple[TargetType | LazyTargetType, str]]) -> None:
        self._found = dict(sorted(found.items()))

    def __getitem__(self, name: str) -> TargetType:
        registered, plugin_name = self._found[name]
        if isinstance(registered, TargetType):
            return registered
        try:
            loaded = registered.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise PluginError(
                f"plugin {plugin_name!r}: target type {name!r} ({registered.factory})"
                f" failed to load: {exc}"
            ) from exc
        self._found[name] = (loaded, plugin_name)
        return loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)


def target_types(manager: pluggy.PluginManager | None = None) -> TargetTypes:
    """Every registered target type by name; a name registered twice is an error."""
    return TargetTypes(_registered_targets(manager or get_plugin_manager()))


def _registered_targets(
    manager: pluggy.PluginManager,
) -> dict[str, tuple[TargetType | LazyTargetType, str]]:
    """Each target type name with its type (or its lazy registration) and the
    plugin that registered it."""
    found: dict[str, tuple[TargetType | LazyTargetType, str]] = {}
    for implementation in manager.hook.register_targets.get_hookimpls():
        plugin_name = implementation.plugin_name

        def register(
            target_type: TargetType | LazyTargetType, plugin_name: str = plugin_name
        ) -> None:
            if not isinstance(target_type, TargetType | LazyTargetType):
                raise PluginError(
                    f"plugin {plugin_name!r} registered {target_type!r}, which is not a"
                    " TargetType (nor a LazyTargetType)"
                )
            if target_type.name in found:
                other = found[target_type.name][1]
                raise PluginError(
                    f"target type {target_type.name!r} is registered by both "
                    f"{other!r} and {plugin_name!r}"
                )
            found[target_type.name] = (target_type, plugin_name)

        implementation.function(register=register)
    return found


def restorers(
    manager: pluggy.PluginManager | None = None,
) -> list[tuple[str, Callable[[Any], Awaitable[None]]]]:
    """What the plugins make again when a runtime starts (``register_restorers``),
    each with the plugin's name."""
    found: list[tuple[str, Callable[[Any], Awaitable[None]]]] = []
    for implementation in (manager or get_plugin_manager()).hook.register_restorers.get_hookimpls():
        name = implementation.plugin_name
        implementation.function(register=lambda restore, name=name: found.append((name, restore)))
    return found


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    version: str | None
    hooks: tuple[str, ...]
    targets: tuple[str, ...]
    #: The distribution that installed it (None: registered in code).
    distribution: str | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


def list_plugins(manager: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """What is loaded: each plugin with its distribution's version, hooks and target types."""
    manager = manager or get_plugin_manager()
    versions: dict[str, str] = {}
    distributions: dict[str, str] = {}
    for plugin, distribution in manager.list_plugin_distinfo():
        name = manager.get_name(plugin)
        if name is not None:
            versions[name] = str(distribution.version)
            distributions[name] = distribution.project_name
    registered = _registered_targets(manager)
    infos = []
    for plugin_name, plugin in sorted(manager.list_name_plugin()):
        hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(plugin) or ()))
        targets = tuple(
            name for name, (_, owner) in sorted(registered.items()) if owner == plugin_name
        )
        info = PluginInfo(
            plugin_name, versions.get(plugin_name), hooks, targets, distributions.get(plugin_name)
        )
        infos.append(info)
    return infos
