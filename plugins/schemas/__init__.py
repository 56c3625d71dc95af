"""The built-in ``schemas`` plugin: EventBridge's schema registry.

- ``infer``: the shape of events, rendered as AWS's discovered schemas
  (OpenAPI 3 or JSONSchema Draft 4), ``source@DetailType`` names, the
  structure's fingerprint, and ExportSchema's conversion;
- ``content``: schema content checked as CreateSchema checks it, and
  compiled into a validator of events;
- ``store``: registries, schemas, versions, discoverers and code bindings in
  the state database (``SchemaStore``);
- ``registry``: the registry's operations in AWS's terms (``Registry``);
- ``discovery``: discoverers at work on the buses' tap;
- ``validation``: requirements that events match a schema version, as
  screens of the buses' put path;
- ``codegen``: code bindings (Python36, TypeScript3) as AWS's zip;
- ``resource``: the ``schemas`` resource type that runs all of it in a runtime;
- ``api``: the schemas service on the AWS endpoint; ``cli``: ``pipelines schemas``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pipelines.clikit import LazyCommand
from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType

if TYPE_CHECKING:
    import click

    from pipelines.api.services import ApiHost, Service
    from pipelines.store import Store


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("schemas", "plugins.schemas.resource:SchemasType"))


@hookimpl
def register_stores(register: Callable[[type[Store]], None]) -> None:
    from plugins.schemas.store import SchemaStore

    register(SchemaStore)


@hookimpl
def register_services(register: Callable[[Service], None]) -> None:
    from plugins.schemas.api import schemas

    register(schemas)


@hookimpl
def register_restorers(register: Callable[[Callable[[ApiHost], Awaitable[None]]], None]) -> None:
    from plugins.schemas.restore import restore_registry

    register(restore_registry)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(
        LazyCommand(
            "schemas",
            "plugins.schemas.cli:schemas_group",
            "The schema registry: registries, schemas, code bindings, discovery.",
        )
    )
