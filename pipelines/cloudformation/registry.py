"""Every ``TypeMapping`` and ``ConfigExport`` known: the engine's own
(``pipelines.cloudformation.builtin``) and those plugins register through
``register_cloudformation``. A type or part registered twice is an error
naming both registrants."""

from __future__ import annotations

from dataclasses import dataclass, field

import pluggy

from pipelines.cloudformation.mapping import ConfigExport, TypeMapping
from pipelines.errors import PluginError


@dataclass
class Registry:
    types: dict[str, TypeMapping] = field(default_factory=dict)
    exports: dict[str, ConfigExport] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def find(self, kind: str) -> TypeMapping | None:
        """The mapping of a type, or of its service's every type (``AWS::IAM::*``)."""
        return self.types.get(kind) or self.types.get(kind.rsplit("::", 1)[0] + "::*")

    def register(self, item: TypeMapping | ConfigExport, owner: str) -> None:
        if isinstance(item, TypeMapping):
            key = item.type
        elif isinstance(item, ConfigExport):
            key = f"export:{item.part}"
        else:
            raise PluginError(
                f"plugin {owner!r} registered {item!r}, which is neither a TypeMapping"
                " nor a ConfigExport"
            )
        if key in self.owners:
            raise PluginError(
                f"CloudFormation mapping {key!r} is registered by both"
                f" {self.owners[key]!r} and {owner!r}"
            )
        self.owners[key] = owner
        if isinstance(item, TypeMapping):
            self.types[item.type] = item
        else:
            self.exports[item.part] = item


def build_registry(manager: pluggy.PluginManager | None = None) -> Registry:
    from pipelines.cloudformation import builtin, pipes, schemas
    from pipelines.pluginmanager import get_plugin_manager

    registry = Registry()
    for item in (*builtin.MAPPINGS, *pipes.MAPPINGS, *schemas.MAPPINGS):
        registry.register(item, "pipelines")
    manager = manager or get_plugin_manager()
    for implementation in manager.hook.register_cloudformation.get_hookimpls():
        owner = implementation.plugin_name

        def register(item: TypeMapping | ConfigExport, owner: str = owner) -> None:
            registry.register(item, owner)

        implementation.function(register=register)
    return registry
