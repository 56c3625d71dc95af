"""CloudFormation templates read with every node's position.

YAML templates may use CloudFormation's short-form tags (``!Ref``, ``!Sub``,
``!GetAtt a.b`` ...); each becomes its long form (``{"Ref": ...}``,
``{"Fn::GetAtt": ["a", "b"]}``) so the rest of the importer sees one shape.
JSON templates are YAML too (a JSON text is a YAML flow node), so both are
read by one composer that keeps positions. Positions are keyed by the
template path (``("Resources", "OrderQueue", "Properties")``) and reported
as ``file:line:column``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import MAX_FILE_BYTES, compose
from pipelines.errors import ConfigInvalid, Problem

TPath = tuple[str | int, ...]

#: Short-form tags whose long form takes the scalar, sequence or mapping as is.
_FUNCTIONS = {
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAZs",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "And",
    "Equals",
    "If",
    "Not",
    "Or",
    "ToJsonString",
    "Length",
}


def label(path: TPath) -> str:
    """``("Resources", "Q", "Properties", "Tags", 0)`` -> ``Resources.Q.Properties.Tags[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "template"


class TemplateInvalid(ConfigInvalid):
    """A template (or several) has problems; ``problems`` lists every one
    (a ``ConfigInvalid``: ``pipelines run`` and a reload report it alike)."""


@dataclass
class Template:
    """One template file as plain data, with each node's position."""

    file: Path
    data: dict[str, Any]
    positions: dict[TPath, tuple[str, int, int]] = field(default_factory=dict)

    def at(self, path: TPath, message: str) -> Problem:
        """A problem at ``path`` (or its nearest positioned ancestor), labelled with it."""
        where = path
        while where and where not in self.positions:
            where = where[:-1]
        file, line, column = self.positions.get(where, (str(self.file), 1, 1))
        return Problem(file, line, column, f"{label(path)}: {message}")


def load_template(path: Path) -> Template:
    """Read a template (YAML or JSON); raise ``TemplateInvalid`` when it cannot be read."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TemplateInvalid([Problem(file, 1, 1, f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise TemplateInvalid([Problem(file, 1, 1, "larger than 16 MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateInvalid([Problem(file, 1, exc.start + 1, "not UTF-8 text")]) from None
    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise TemplateInvalid([Problem(file, line, column, f"YAML syntax: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise TemplateInvalid([Problem(file, 1, 1, f"YAML: {exc}")]) from None
    except Exception as exc:  # the composer's own limits (aliases, depth)
        raise TemplateInvalid([Problem(file, 1, 1, str(exc))]) from None
    builder = _Builder(file)
    data = builder.build(node, ()) if node is not None else None
    if builder.problems:
        raise TemplateInvalid(builder.problems)
    if not isinstance(data, dict):
        raise TemplateInvalid([Problem(file, 1, 1, "a template is a mapping with Resources")])
    return Template(path, data, builder.positions)


class _Builder:
    """Plain data from composed YAML nodes, short-form tags turned into long forms."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[TPath, tuple[str, int, int]] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")

    def where(self, node: yaml.Node) -> tuple[str, int, int]:
        return (self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: TPath) -> Any:
        self.positions.setdefault(path, self.where(node))
        tag = str(node.tag)
        if tag.startswith("!"):
            return self._short_form(node, tag[1:], path)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                if not isinstance(key, str | int) or isinstance(key, bool):
                    self.problems.append(Problem(*self.where(key_node), "a key must be a string"))
                    continue
                key = str(key)
                if key in result:
                    self.problems.append(Problem(*self.where(key_node), f"{key!r} is given twice"))
                    continue
                self.positions[(*path, key)] = self.where(key_node)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(Problem(*self.where(node), "expected a plain value"))
            return None
        try:
            return self._constructor.construct_object(node)
        except Exception:
            return str(node.value)  # an odd explicit tag's value: kept as its text

    def _plain(self, node: yaml.Node, path: TPath) -> Any:
        """A tagged node's value as an untagged node of its kind would be."""
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        result = {}
        for key_node, value_node in node.value:
            key = str(self._scalar(key_node))
            self.positions[(*path, key)] = self.where(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _short_form(self, node: yaml.Node, name: str, path: TPath) -> Any:
        if name == "Ref" or name == "Condition":
            inner = (*path, name)
            self.positions[inner] = self.where(node)
            return {name: self._plain(node, inner)}
        if name == "GetAtt":
            inner = (*path, "Fn::GetAtt")
            self.positions[inner] = self.where(node)
            value = self._plain(node, inner)
            if isinstance(value, str):
                # !GetAtt Resource.Attribute.With.Dots: the resource is before the first dot
                resource, _, attribute = value.partition(".")
                value = [resource, attribute]
            return {"Fn::GetAtt": value}
        if name in _FUNCTIONS:
            inner = (*path, f"Fn::{name}")
            self.positions[inner] = self.where(node)
            return {f"Fn::{name}": self._plain(node, inner)}
        self.problems.append(
            Problem(*self.where(node), f"!{name} is not a CloudFormation function")
        )
        return None
