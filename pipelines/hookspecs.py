"""The hooks a pipelines plugin may implement.

A plugin is a module or package named in the ``pipelines`` entry point group::

    [project.entry-points.pipelines]
    my_targets = "my_package.plugin"

and decorates its functions with ``hookimpl``::

    from pipelines.hookspecs import hookimpl

    @hookimpl
    def register_targets(register):
        register(MyTargetType())

Built-in plugins (``plugins/``) register through the same entry point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pipelines.targets import TargetType

hookspec = pluggy.HookspecMarker("pipelines")
hookimpl = pluggy.HookimplMarker("pipelines")


@hookspec
def register_targets(register: Callable[[TargetType], None]) -> None:
    """Register target types: the kinds of thing a rule can deliver events to.

    Called once, when the plugin manager first collects target types (before
    any bus starts). ``register`` takes one ``pipelines.targets.TargetType``
    per call; call it once for each type the plugin provides. A type's
    ``name`` must be unique across all plugins, or loading fails naming both
    plugins.

    Must return None; what counts is the calls to ``register``.
    """
