"""``pipelines schemas ...``: the schema registry on the command line.

``list``, ``describe``, ``export`` and ``codegen`` open a pipeline's state
database (running or not; never creating one) and call ``Registry``;
``discover`` needs none: it infers the schema of the events it reads
(``infer.discovered``, what GetDiscoveredSchema answers).
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
import orjson

from pipelines import clikit
from pipelines.clikit import echo_output, output_option, state_options
from pipelines.errors import PipelinesError
from plugins.schemas.codegen import LANGUAGES, binding_zip
from plugins.schemas.infer import OPENAPI, TYPES, discovered, export_draft4
from plugins.schemas.registry import Registry
from plugins.schemas.store import SchemaStore


@click.group("schemas")
def schemas_group() -> None:
    """The schema registry: registries, schemas, code bindings, discovery."""


def _registry_call(config: str | None, state: str | None, work: Any) -> Any:
    async def call(store: SchemaStore) -> Any:
        return await work(Registry(store))

    return clikit.with_store(SchemaStore, config, state, call)


@schemas_group.command("list")
@click.option("--registry", "-r", default=None, help="List this registry's schemas.")
@click.option("--prefix", default="", help="Only names starting so.")
@state_options
@output_option
def list_command(
    registry: str | None, prefix: str, config: str | None, state: str | None, output: str
) -> None:
    """List the registries, or with --registry the schemas of one."""

    async def work(found: Registry) -> list[dict[str, Any]]:
        if registry is None:
            return [
                {"RegistryName": r.name, "Description": r.description}
                for r in await found.store.registries()
                if r.name.startswith(prefix)
            ]
        return [
            {
                "SchemaName": s.name,
                "Type": s.type,
                "VersionCount": s.versions,
                "LatestVersion": s.latest,
                "Description": s.description,
            }
            for s in await found.list_schemas(registry, prefix)
        ]

    echo_output(_registry_call(config, state, work), output)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise PipelinesError(f"--version {text!r}: a version number")
    return int(text)


@schemas_group.command("describe")
@click.argument("registry")
@click.argument("name")
@click.option("--version", "version_text", default=None, help="A version (default: the latest).")
@state_options
@output_option
def describe_command(
    registry: str,
    name: str,
    version_text: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Describe schema NAME of REGISTRY: its version, type and content."""

    async def work(found: Registry) -> dict[str, Any]:
        schema, version = await found.schema_version(registry, name, _version(version_text))
        return {
            "SchemaName": schema.name,
            "RegistryName": schema.registry,
            "SchemaVersion": str(version.version),
            "Type": version.type,
            "Description": schema.description,
            "VersionCount": schema.versions,
            "Content": orjson.loads(version.content),
        }

    echo_output(_registry_call(config, state, work), output)


@schemas_group.command("export")
@click.argument("registry")
@click.argument("name")
@click.option("--version", "version_text", default=None, help="A version (default: the latest).")
@state_options
@output_option
def export_command(
    registry: str,
    name: str,
    version_text: str | None,
    config: str | None,
    state: str | None,
    output: str,
) -> None:
    """Print schema NAME of REGISTRY as JSONSchema Draft 4 (ExportSchema)."""

    async def work(found: Registry) -> Any:
        _, version = await found.schema_version(registry, name, _version(version_text))
        document = orjson.loads(version.content)
        return export_draft4(document) if version.type == OPENAPI else document

    echo_output(_registry_call(config, state, work), output)


@schemas_group.command("codegen")
@click.argument("registry")
@click.argument("name")
@click.option("--language", type=click.Choice(LANGUAGES), default=LANGUAGES[0], show_default=True)
@click.option("--version", "version_text", default=None, help="A version (default: the latest).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the binding's files under this directory (default: print their names"
    " and write the zip to standard output when it is not a terminal).",
)
@state_options
def codegen_command(
    registry: str,
    name: str,
    language: str,
    version_text: str | None,
    out: Path | None,
    config: str | None,
    state: str | None,
) -> None:
    """Make the code binding of schema NAME of REGISTRY (GetCodeBindingSource's zip)."""

    async def work(found: Registry) -> bytes:
        _, version = await found.schema_version(registry, name, _version(version_text))
        return binding_zip(language, version.name, version.type, version.content)

    made: bytes = _registry_call(config, state, work)
    if out is None:
        if sys.stdout.isatty():
            raise PipelinesError("give --out DIR, or send the zip to a file or a pipe")
        sys.stdout.buffer.write(made)
        return
    with zipfile.ZipFile(io.BytesIO(made)) as archive:
        archive.extractall(out)
        for member in archive.namelist():
            click.echo(str(out / member))


@schemas_group.command("discover")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--type", "kind", type=click.Choice(TYPES), default=OPENAPI, show_default=True)
@output_option
def discover_command(files: tuple[str, ...], kind: str, output: str) -> None:
    """Print the schema AWS's discovery would give the events in FILES (JSON
    lines, or one JSON array; '-' or none: standard input), all of one
    source and detail-type."""
    events: list[dict[str, Any]] = []
    for name in files or ("-",):
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        events += _events(name, text)
    if not events:
        raise PipelinesError("no events given")
    kinds = {(e.get("source"), e.get("detail-type")) for e in events}
    if len(kinds) > 1:
        shown = ", ".join(f"{s}/{d}" for s, d in sorted(kinds, key=str))
        raise PipelinesError(f"the events are of several source and detail-type: {shown}")
    echo_output(discovered(events, kind), output)


def _events(name: str, text: str) -> list[dict[str, Any]]:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            found = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise PipelinesError(f"{name}: not JSON: {exc}") from None
        items = found
        where = [f"{name}[{i}]" for i in range(len(items))]
    else:
        items, where = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise PipelinesError(f"{name}:{number}: not JSON: {exc}") from None
            where.append(f"{name}:{number}")
    for item, place in zip(items, where, strict=True):
        if not isinstance(item, dict):
            raise PipelinesError(f"{place}: an event is a JSON object")
    return list(items)
