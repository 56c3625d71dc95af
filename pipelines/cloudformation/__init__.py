"""CloudFormation and SAM templates <-> pipeline configs.

- ``import_templates(paths, parameters=...)``: templates -> a config's data
  and a report of every resource (runs, mapped, skipped and why), with the
  template's Outputs resolved (``importer``).
- ``config_for_run(paths, ...)``: the same, as a checked ``PipelineConfig``
  whose problems point into the templates (``pipelines run --cloudformation``).
- ``export_config(data)``: a config's data -> a template (``exporter``);
  ``equivalent`` is the form the round trip keeps.

How each type maps: ``mapping`` (the hook's types), ``builtin`` and each
plugin's ``cloudformation.py``; docs/cloudformation.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.cloudformation.exporter import Exported, equivalent, export_config
from pipelines.cloudformation.importer import Imported, Output, import_templates
from pipelines.cloudformation.template import TemplateInvalid
from pipelines.config import RESOURCE_SECTIONS, Document, PipelineConfig, config_from_documents

__all__ = [
    "Exported",
    "Imported",
    "Output",
    "TemplateInvalid",
    "config_data",
    "config_for_run",
    "dump_yaml",
    "equivalent",
    "export_config",
    "import_templates",
]


def config_for_run(
    paths: Sequence[str | Path],
    *,
    parameters: Mapping[str, str] | None = None,
    strict: bool = False,
) -> tuple[PipelineConfig, Imported]:
    """Templates as a checked config for ``pipelines run``: the config's
    directory is the first template's, each part's position is that of the
    template node it came from, and a reload imports the templates again."""
    files = [Path(p) for p in paths]
    imported = import_templates(files, parameters=parameters)
    if strict:
        check_strict(imported)
    document = Document(str(files[0]), imported.config, imported.positions)
    config = config_from_documents(files, [document])

    def reread() -> PipelineConfig:
        return config_for_run(files, parameters=parameters, strict=strict)[0]

    config.reread = reread
    return config, imported


def check_strict(imported: Imported) -> None:
    """``--strict``: every skipped resource is a problem."""
    from pipelines.errors import Problem

    # The permissions an export wrote stand for nothing a config holds.
    skipped = [row for row in imported.skipped if not row.generated]
    if skipped:
        raise TemplateInvalid(
            [
                Problem(
                    *row.where, f"Resources.{row.resource} ({row.type}) is skipped: {row.detail}"
                )
                for row in skipped
            ]
        )


def config_data(config: PipelineConfig) -> dict[str, Any]:
    """A loaded config's sections as data, for ``export_config``."""
    data: dict[str, Any] = {}
    if config.bus_policies:
        buses: dict[str, Any] = {}
        for name in config.buses:
            policy = config.bus_policies.get(name)
            buses[name] = {"policy": policy.document} if policy and policy.document else None
        data["buses"] = buses
    elif config.buses:
        data["buses"] = list(config.buses)
    # An entry of a section of resources (pipes, state_machines) is given
    # once, in its section: not also as the resource it became.
    resources = {
        name: body
        for name, body in config.resources.items()
        if not any(name in getattr(config, section) for section in RESOURCE_SECTIONS)
    }
    if resources:
        data["resources"] = resources
    for section in (
        "rules",
        "archives",
        "alarms",
        "schedule_groups",
        "schedules",
        *RESOURCE_SECTIONS,
    ):
        value = getattr(config, section)
        if value:
            data[section] = value
    return data


def dump_yaml(data: Any) -> str:
    """YAML as a person would write it: keys in their order, block style."""
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=100)


class _NoAliases(yaml.SafeDumper):
    """Every value written out where it is used: CloudFormation refuses YAML
    aliases (one dict used twice, such as a role's GetAtt, would be one)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
