"""Templates -> a pipeline config (plain data, as a config file would hold).

One or more templates are imported in the order given (a later one may
``Fn::ImportValue`` what an earlier one exports). Per template: its SAM
resources expanded, parameters given values (overrides, then defaults,
checked against their constraints), resources put in dependency order
(``DependsOn`` and every reference; a cycle is reported), then each
resource's properties resolved and its mapping applied: parts of their own
first, then those folded into others. Every problem is collected and
reported at its template path and ``file:line:column``; nothing is
silently dropped: each resource gets a row in the report (runs, mapped or
skipped, and why).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.cloudformation import sam
from pipelines.cloudformation.intrinsics import (
    Identity,
    Pseudo,
    Resolver,
    TemplateError,
    references,
)
from pipelines.cloudformation.mapping import (
    MAPPED,
    RUNS,
    SKIPPED,
    ImportContext,
    ReportRow,
    Resource,
    Skip,
    TypeMapping,
    alias_keys,
)
from pipelines.cloudformation.registry import Registry, build_registry
from pipelines.cloudformation.template import Template, TemplateInvalid, load_template
from pipelines.errors import Problem

TOP_KEYS = {
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Rules",
    "Mappings",
    "Conditions",
    "Transform",
    "Resources",
    "Outputs",
    "Globals",
}
RESOURCE_KEYS = {
    "Type",
    "Properties",
    "DependsOn",
    "Condition",
    "Metadata",
    "DeletionPolicy",
    "UpdateReplacePolicy",
    "CreationPolicy",
    "UpdatePolicy",
}
_LOGICAL_ID = re.compile(r"^[A-Za-z0-9]+$")
_KNOWN_TRANSFORMS = {sam.SAM_TRANSFORM, "AWS::LanguageExtensions"}
#: The order of a config's sections, as a person would write them.
SECTIONS = (
    "buses",
    "resources",
    "state_machines",
    "rules",
    "archives",
    "alarms",
    "schedule_groups",
    "schedules",
    "pipes",
    "schemas",
)


@dataclass
class Output:
    template: str
    name: str
    value: Any
    export: str | None = None
    description: str | None = None


@dataclass
class Imported:
    """The config made from templates, with its report."""

    config: dict[str, Any]
    rows: list[ReportRow]
    outputs: list[Output]
    #: Config path -> (file, line, column) of the template node it came from.
    positions: dict[tuple[str | int, ...], tuple[str, int, int]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @property
    def skipped(self) -> list[ReportRow]:
        return [row for row in self.rows if row.status == SKIPPED]


def import_templates(
    paths: Sequence[str | Path],
    *,
    parameters: Mapping[str, str] | None = None,
    directory: Path | None = None,
    registry: Registry | None = None,
    region: str = "us-east-1",
    account: str = "000000000000",
    write_code: bool = True,
) -> Imported:
    """Import templates into one config; raise ``TemplateInvalid`` listing
    every problem. ``directory`` is the config's (default: the first
    template's): inline code is written under it, ``CodeUri`` is made
    relative to it."""
    files = [Path(p) for p in paths]
    registry = registry or build_registry()
    overrides = dict(parameters or {})
    first = files[0]
    context = ImportContext(
        Pseudo(region=region, account=account, stack_name=_stack_name(first)),
        (directory or first.parent).resolve(),
    )
    context.write_code = write_code
    # The default bus is every stack's, never declared.
    context.alias(
        "buses", "default", *alias_keys(context.arn("events", "event-bus/default")), "default"
    )
    problems: list[Problem] = []
    outputs: list[Output] = []
    exports: dict[str, Any] = {}
    declared_anywhere: set[str] = set()
    for file in files:
        try:
            template = load_template(file)
        except TemplateInvalid as exc:
            problems += exc.problems
            continue
        context.pseudo = Pseudo(region=region, account=account, stack_name=_stack_name(file))
        stack = _Stack(template, registry, context, overrides, exports)
        declared_anywhere |= set(
            (template.data.get("Parameters") or {})
            if isinstance(template.data.get("Parameters"), dict)
            else ()
        )
        problems += stack.run()
        outputs += stack.outputs
    for name in overrides:
        if name not in declared_anywhere and not problems:
            problems.append(
                Problem(str(first), 1, 1, f"--parameter {name}: no template declares it")
            )
    if problems:
        raise TemplateInvalid(sorted(problems, key=lambda p: (p.file, p.line, p.column)))
    config = {s: context.config[s] for s in SECTIONS if context.config.get(s)}
    if account != "000000000000":
        config = {"account": account, **config}
    positions = {}
    for config_path, (template, template_path) in context.origins.items():
        positions[config_path] = _position(template, template_path)
    return Imported(config, context.rows, outputs, positions, context.written)


def _stack_name(file: Path) -> str:
    """A stack name from a file name, as CloudFormation allows one."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", file.stem.split(".")[0]).strip("-") or "stack"
    return name if name[0].isalpha() else f"stack-{name}"


def _position(template: Template, path: tuple[str | int, ...]) -> tuple[str, int, int]:
    while path and path not in template.positions:
        path = path[:-1]
    return template.positions.get(path, (str(template.file), 1, 1))


class _Stack:
    """One template's import."""

    def __init__(
        self,
        template: Template,
        registry: Registry,
        context: ImportContext,
        overrides: Mapping[str, str],
        exports: dict[str, Any],
    ) -> None:
        self.template = template
        self.registry = registry
        self.context = context
        self.overrides = overrides
        self.exports = exports
        self.problems: list[Problem] = []
        self.outputs: list[Output] = []

    def problem(self, path: tuple[str | int, ...], message: str) -> None:
        found = self.template.at(path, message)
        # A property read by a type's identity and again by its apply fails
        # twice: one line for it.
        if found not in self.problems:
            self.problems.append(found)

    def run(self) -> list[Problem]:
        data = self.template.data
        for key in data:
            if key not in TOP_KEYS:
                self.problem((key,), f"not a template section ({', '.join(sorted(TOP_KEYS))})")
        transforms = data.get("Transform")
        for name in (
            transforms if isinstance(transforms, list) else [transforms] if transforms else []
        ):
            if name not in _KNOWN_TRANSFORMS:
                self.problem(("Transform",), f"transform {name!r} is not applied locally")
        expansion = sam.Expansion()
        if sam.uses_sam(self.template):
            try:
                expansion = sam.expand(self.template)
            except TemplateError as exc:
                self.problem(exc.path, exc.message)
                return self.problems
        resources = data.get("Resources")
        if not isinstance(resources, dict) or not (resources or expansion.skipped):
            self.problem(("Resources",), "a template needs Resources: a mapping of at least one")
            return self.problems
        self._check_resources(resources)
        resolver = Resolver(
            parameters=self._parameters(),
            pseudo=self.context.pseudo,
            mappings=data.get("Mappings") or {},
            exports=self.exports,
            conditions=data.get("Conditions") or {},
        )
        if self.problems:
            return self.problems
        for logical_id in expansion.skipped:  # not run, but a Ref to it still resolves
            resolver.identities[logical_id] = _any_identity(logical_id)
        order = self._order(resources, resolver)
        if self.problems:
            return self.problems
        first_row = len(self.context.rows)
        for logical_id, (kind, reason) in expansion.skipped.items():
            where = self.template.positions.get(("Resources", logical_id))
            self.context.rows.append(
                ReportRow(
                    logical_id,
                    kind,
                    SKIPPED,
                    reason,
                    str(self.template.file),
                    where or (str(self.template.file), 1, 1),
                )
            )
        built = self._resolve(order, resources, resolver, expansion)
        for phase in (0, 1):
            for resource, mapping in built:
                if mapping is not None and mapping.phase == phase:
                    self._apply(resource, mapping)
        self._outputs(resolver)
        # The report in the template's order (not the order of dependencies).
        place = {name: index for index, name in enumerate([*resources, *expansion.skipped])}
        self.context.rows[first_row:] = sorted(
            self.context.rows[first_row:], key=lambda row: place.get(row.resource, len(place))
        )
        return self.problems

    def _check_resources(self, resources: dict[str, Any]) -> None:
        for logical_id, body in resources.items():
            path = ("Resources", logical_id)
            if not _LOGICAL_ID.match(logical_id):
                self.problem(path, "a logical id is letters and digits only")
            if not isinstance(body, dict) or not isinstance(body.get("Type"), str):
                self.problem(path, "a resource is a mapping with a Type")
                continue
            for key in body:
                if key not in RESOURCE_KEYS:
                    self.problem(
                        (*path, key),
                        f"not a resource attribute ({', '.join(sorted(RESOURCE_KEYS))})",
                    )
            if "Properties" in body and not isinstance(body["Properties"], dict):
                self.problem((*path, "Properties"), "must be a mapping")

    # -- parameters ---------------------------------------------------------

    def _parameters(self) -> dict[str, Any]:
        declared = self.template.data.get("Parameters") or {}
        values: dict[str, Any] = {}
        if not isinstance(declared, dict):
            self.problem(("Parameters",), "must be a mapping of parameter names")
            return values
        for name, spec in declared.items():
            path = ("Parameters", name)
            if not isinstance(spec, dict) or "Type" not in spec:
                self.problem(path, "a parameter is a mapping with a Type")
                continue
            if name in self.overrides:
                raw: Any = self.overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                self.problem(path, f"has no Default: give it with --parameter {name}=VALUE")
                continue
            try:
                values[name] = _parameter_value(name, spec, raw)
            except ValueError as exc:
                where = path if name in self.overrides else (*path, "Default")
                self.problem(where, str(exc))
        return values

    # -- order ----------------------------------------------------------------

    def _order(self, resources: dict[str, Any], resolver: Resolver) -> list[str]:
        """Resources in an order where each comes after what it depends on."""
        edges: dict[str, list[str]] = {}
        names = set(resources)
        for logical_id, body in resources.items():
            path = ("Resources", logical_id)
            needs: list[str] = []
            for name, where in references(body.get("Properties") or {}, (*path, "Properties")):
                if name in names:
                    needs.append(name)
                elif name not in resolver.parameters and name not in resolver.identities:
                    self.problem(
                        where, f"refers to {name!r}: no parameter or resource of that name"
                    )
            depends = body.get("DependsOn") or []
            for index, name in enumerate([depends] if isinstance(depends, str) else depends):
                if name not in names:
                    self.problem(
                        (*path, "DependsOn", index)
                        if not isinstance(depends, str)
                        else (*path, "DependsOn"),
                        f"DependsOn {name!r}: no resource of that name",
                    )
                else:
                    needs.append(name)
            edges[logical_id] = needs
        order: list[str] = []
        state: dict[str, int] = {}  # 1: being visited, 2: done

        def visit(node: str, trail: list[str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                loop = [*trail[trail.index(node) :], node]
                self.problem(("Resources", node), f"circular dependency: {' -> '.join(loop)}")
                return
            state[node] = 1
            for need in edges[node]:
                visit(need, [*trail, node])
                if self.problems:
                    return
            state[node] = 2
            order.append(node)

        for node in resources:
            visit(node, [])
            if self.problems:
                break
        return order

    # -- resolution -------------------------------------------------------------

    def _resolve(
        self,
        order: list[str],
        resources: dict[str, Any],
        resolver: Resolver,
        expansion: sam.Expansion,
    ) -> list[tuple[Resource, TypeMapping | None]]:
        built: list[tuple[Resource, TypeMapping | None]] = []
        for logical_id in order:
            body = resources[logical_id]
            path = ("Resources", logical_id)
            kind = body["Type"]
            resource = Resource(
                logical_id, kind, {}, self.template, expansion.made_from.get(logical_id)
            )
            metadata = body.get("Metadata")
            if isinstance(metadata, dict) and isinstance(metadata.get("pipelines"), dict):
                resource.metadata = metadata["pipelines"]
            condition = body.get("Condition")
            try:
                if condition is not None and not resolver.condition(
                    condition, (*path, "Condition")
                ):
                    resolver.identities[logical_id] = Identity(None, {})
                    self.context.report(resource, SKIPPED, f"condition {condition} is false")
                    continue
                resource.properties = resolver.resolve(
                    body.get("Properties") or {}, (*path, "Properties")
                )
            except TemplateError as exc:
                self.problem(exc.path, exc.message)
                resolver.identities[logical_id] = _any_identity(logical_id)
                continue
            mapping = self.registry.find(kind)
            identity = None
            if mapping is not None and mapping.identity is not None:
                try:
                    identity = mapping.identity(self.context, resource)
                except TemplateError as exc:
                    self.problem(exc.path, exc.message)
            resolver.identities[logical_id] = identity or _any_identity(logical_id)
            if mapping is None:
                self.context.report(resource, SKIPPED, f"{kind} has no local equivalent")
                continue
            built.append((resource, mapping))
        return built

    def _apply(self, resource: Resource, mapping: TypeMapping) -> None:
        if mapping.apply is None:
            self.context.report(resource, SKIPPED, mapping.reason)
            return
        try:
            detail = mapping.apply(self.context, resource)
        except Skip as exc:
            self.context.report(resource, SKIPPED, str(exc))
            return
        except TemplateError as exc:
            self.problem(exc.path, exc.message)
            return
        named = self.context.config_name(resource)
        settings = resource.metadata.get("settings")
        if named is not None and isinstance(settings, dict):
            part = self.context.section(named[0]).get(named[1])
            if isinstance(part, dict):
                part.update(settings)  # local settings an export kept
        added = resource.metadata.get("added")
        if named is not None and isinstance(added, list):
            part = self.context.section(named[0]).get(named[1])
            if isinstance(part, dict):
                for key in added:
                    part.pop(key, None)  # what an export made up for CloudFormation
        known = {p.name for p in mapping.properties} | set(mapping.naming)
        ignored = sorted(set(resource.properties) - known)
        text = str(detail or "")
        if resource.made_from:
            text += f" (from {resource.made_from})"
        if ignored:
            text += f"; ignored: {', '.join(ignored)}"
        # A part of its own runs (an SQS event source mapping's pipe, though
        # it is applied with the parts folded into others).
        own = named is not None or not mapping.phase
        self.context.report(resource, RUNS if own else MAPPED, text.strip())

    def _outputs(self, resolver: Resolver) -> None:
        declared = self.template.data.get("Outputs") or {}
        if not isinstance(declared, dict):
            self.problem(("Outputs",), "must be a mapping of output names")
            return
        for name, spec in declared.items():
            path = ("Outputs", name)
            if not isinstance(spec, dict) or "Value" not in spec:
                self.problem(path, "an output is a mapping with a Value")
                continue
            try:
                if "Condition" in spec and not resolver.condition(
                    spec["Condition"], (*path, "Condition")
                ):
                    continue
                value = resolver.resolve(spec["Value"], (*path, "Value"))
                export = spec.get("Export")
                export_name = None
                if isinstance(export, dict) and "Name" in export:
                    export_name = str(resolver.resolve(export["Name"], (*path, "Export", "Name")))
                    if export_name in self.exports:
                        raise TemplateError(
                            (*path, "Export", "Name"), f"{export_name!r} is exported twice"
                        )
                    self.exports[export_name] = value
            except TemplateError as exc:
                self.problem(exc.path, exc.message)
                continue
            self.outputs.append(
                Output(str(self.template.file), name, value, export_name, spec.get("Description"))
            )


def _any_identity(logical_id: str) -> Identity:
    """What a resource of a type with no mapping gives: its logical id, and
    every attribute a placeholder naming it (it is reported as skipped)."""
    return Identity(logical_id, _Placeholders(logical_id))


class _Placeholders(dict[str, Any]):
    def __init__(self, logical_id: str) -> None:
        super().__init__()
        self.logical_id = logical_id

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return f"{self.logical_id}.{key}"


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _parameter_value(name: str, spec: dict[str, Any], raw: Any) -> Any:
    """A parameter's value checked against its declaration, typed as a
    ``Ref`` to it gives it (a list for list types)."""
    kind = str(spec["Type"])
    text = ",".join(map(str, raw)) if isinstance(raw, list) else str(raw)
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    if kind.startswith("AWS::SSM::Parameter"):
        raise ValueError(
            f"{kind} parameters read SSM, which is not run locally: give --parameter {name}=VALUE"
        )
    is_list = kind in ("CommaDelimitedList", "List<Number>") or kind.startswith("List<")
    items = [item.strip() for item in text.split(",")] if is_list else [text]
    allowed = spec.get("AllowedValues")
    for item in items:
        if kind in ("Number", "List<Number>") and not _NUMBER.match(item):
            raise ValueError(f"{item!r} is not a number")
        if isinstance(allowed, list) and item not in [str(a) for a in allowed]:
            raise ValueError(
                f"{item!r} is not one of AllowedValues ({', '.join(map(str, allowed))})"
            )
        pattern = spec.get("AllowedPattern")
        if isinstance(pattern, str) and not re.fullmatch(pattern, item):
            raise ValueError(f"{item!r} does not match AllowedPattern {pattern}")
        if "MinLength" in spec and len(item) < int(spec["MinLength"]):
            raise ValueError(f"{item!r} is shorter than MinLength {spec['MinLength']}")
        if "MaxLength" in spec and len(item) > int(spec["MaxLength"]):
            raise ValueError(f"{item!r} is longer than MaxLength {spec['MaxLength']}")
        if kind == "Number":
            if "MinValue" in spec and float(item) < float(spec["MinValue"]):
                raise ValueError(f"{item} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and float(item) > float(spec["MaxValue"]):
                raise ValueError(f"{item} is above MaxValue {spec['MaxValue']}")
    return items if is_list else text
