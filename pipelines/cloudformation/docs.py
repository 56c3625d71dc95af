"""The supported types' tables of docs/cloudformation.md, generated from
the registered mappings (a test holds the file to them):

    python -m pipelines.cloudformation.docs docs/cloudformation.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cloudformation.registry import Registry, build_registry

BEGIN = "<!-- generated from the mappings: python -m pipelines.cloudformation.docs -->"
END = "<!-- end of the generated tables -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def tables(registry: Registry) -> str:
    lines = [
        "### Imported types",
        "",
        "| type | by | property | becomes |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(registry.types):
        mapping = registry.types[name]
        owner = mapping.owner or "pipelines"
        if mapping.apply is None:
            lines.append(f"| `{name}` | {owner} | | skipped: {_cell(mapping.reason)} |")
            continue
        for index, prop in enumerate(mapping.properties):
            first, by = (f"`{name}`", owner) if index == 0 else ("", "")
            lines.append(f"| {first} | {by} | `{prop.name}` | {_cell(prop.becomes)} |")
        if mapping.naming:
            listed = ", ".join(f"`{n}`" for n in mapping.naming)
            lines.append(f"| | | {listed} | read for naming or not used locally (not reported) |")
    lines += [
        "",
        "### Exported parts",
        "",
        "| config part | becomes | settings kept as properties |",
        "| --- | --- | --- |",
    ]
    for part in sorted(registry.exports):
        export = registry.exports[part]
        writes = ", ".join(f"`{t}`" for t in export.writes)
        keys = ", ".join(f"`{k}`" for k in export.keys) if export.keys else "all"
        lines.append(f"| `{part}` | {writes} | {keys} |")
    return "\n".join(lines) + "\n"


def render(text: str, registry: Registry | None = None) -> str:
    """``text`` with the generated part between its markers replaced."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n\n" + tables(registry or build_registry()) + "\n" + text[end:]


def main(argv: list[str]) -> None:
    path = Path(argv[1])
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv)
