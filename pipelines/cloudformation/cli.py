"""``pipelines import`` and ``pipelines export``: thin commands over
``pipelines.cloudformation``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import click

from pipelines.clikit import echo_output, output_option, parse_pairs


def parameter_option(command: Any) -> Any:
    return click.option(
        "--parameter",
        "parameters",
        multiple=True,
        metavar="NAME=VALUE",
        help="A template parameter's value (repeatable); else its Default.",
    )(command)


def parameters_of(pairs: tuple[str, ...]) -> dict[str, str]:
    return {k: str(v) for k, v in parse_pairs(pairs, "--parameter", typed=False).items()}


@click.command("import")
@click.argument("templates", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--write",
    "-w",
    "write",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the config to this file (else it goes to stdout, the report to stderr).",
)
@parameter_option
@click.option("--strict", is_flag=True, help="A skipped resource is an error.")
@output_option
def import_command(
    templates: tuple[str, ...],
    write: str | None,
    parameters: tuple[str, ...],
    strict: bool,
    output: str,
) -> None:
    """Import CloudFormation or SAM TEMPLATES (YAML or JSON; several: in the
    order given, a later one may Fn::ImportValue an earlier one's exports)
    as a pipeline config. Reports each resource: runs (a part of the config
    of its own), mapped (folded into another part) or skipped (why), and
    the templates' Outputs."""
    from pipelines.cloudformation import check_strict, dump_yaml, import_templates
    from pipelines.config import Document, build_runtime, config_from_documents
    from pipelines.errors import ConfigInvalid

    directory = Path(write).resolve().parent if write else None
    try:
        imported = import_templates(
            list(templates), parameters=parameters_of(parameters), directory=directory
        )
        if strict:
            check_strict(imported)
        # The config checked as `pipelines validate` checks a file (its
        # problems located in the templates), before anything is written.
        config = config_from_documents(
            [Path(write or templates[0])],
            [Document(templates[0], imported.config, imported.positions)],
        )
        asyncio.run(build_runtime(config, state_path=None))
    except ConfigInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    for where in variables_in(imported.config):
        click.echo(
            f"warning: {where} holds ${{...}}, which a config file reads as an environment"
            " variable (run --cloudformation does not)",
            err=True,
        )
    text = _header(templates) + dump_yaml(imported.config)
    report = {
        "resources": [row.as_dict() for row in imported.rows],
        "outputs": [
            {"template": o.template, "name": o.name, "value": o.value, "export": o.export}
            for o in imported.outputs
        ],
    }
    if write:
        Path(write).write_text(text, encoding="utf-8")
        _report(report, output)
    else:
        click.echo(text, nl=False)
        with _to_stderr():
            _report(report, "table")


_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}")


def variables_in(value: Any, path: str = "") -> list[str]:
    """Where the config holds text the config loader would substitute."""
    if isinstance(value, dict):
        return [
            w for k, v in value.items() for w in variables_in(v, f"{path}.{k}" if path else str(k))
        ]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in variables_in(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and _VARIABLE.search(value) else []


def _header(templates: tuple[str, ...]) -> str:
    return f"# Imported by pipelines import from {', '.join(templates)}.\n"


def _report(report: dict[str, Any], output: str) -> None:
    if output != "table":
        echo_output(report, output)
        return
    echo_output(report["resources"], "table", columns=["resource", "type", "status", "detail"])
    if report["outputs"]:
        click.echo()
        echo_output(report["outputs"], "table", columns=["name", "value", "export"])


class _to_stderr:
    """click.echo to stderr for a while (the report, when stdout is the config)."""

    def __enter__(self) -> None:
        import sys

        self._stdout = sys.stdout
        sys.stdout = sys.stderr

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stdout = self._stdout


@click.command("export")
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--write",
    "-w",
    "write",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the template to this file (.json: JSON; else YAML); else to stdout.",
)
@click.option(
    "--strict", is_flag=True, help="A part with no CloudFormation equivalent is an error."
)
def export_command(configs: tuple[str, ...], write: str | None, strict: bool) -> None:
    """Export pipeline CONFIGS (merged) as the CloudFormation template they
    correspond to. Parts with no CloudFormation equivalent are listed on
    stderr (with --strict: an error)."""
    import json

    from pipelines.cloudformation import config_data, dump_yaml, export_config
    from pipelines.config import load_config
    from pipelines.errors import PipelinesError

    config = load_config(list(configs))
    exported = export_config(
        config_data(config),
        directory=config.directory,
        template_directory=Path(write).parent if write else Path("."),
    )
    for where, reason in exported.skipped:
        click.echo(f"not exported: {where}: {reason}", err=True)
    if strict and exported.skipped:
        raise PipelinesError(f"{len(exported.skipped)} parts have no CloudFormation equivalent")
    if write and write.endswith(".json"):
        text = json.dumps(exported.template, indent=2) + "\n"
    else:
        text = dump_yaml(exported.template)
    if write:
        Path(write).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
