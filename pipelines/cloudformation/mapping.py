"""How a CloudFormation resource type becomes part of a pipeline config,
and how a config's parts become CloudFormation resources again.

Each type is one ``TypeMapping`` (AWS's type name, what ``Ref`` and
``Fn::GetAtt`` give, and a function applying the resolved properties to
the config being built); each part of a config is one ``ConfigExport``.
The built-in ones live with the plugin owning the type (its
``cloudformation.py``), registered through the ``register_cloudformation``
hook exactly as a third party registers its own::

    from pipelines.cloudformation.mapping import TypeMapping
    from pipelines.hookspecs import hookimpl

    @hookimpl
    def register_cloudformation(register):
        register(TypeMapping("Acme::Widget::Thing", identity=..., apply=...))

``docs/cloudformation.md``'s table is generated from these mappings
(``pipelines.cloudformation.docs``), and a test holds it to the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.cloudformation.intrinsics import Identity, Pseudo, TemplateError
from pipelines.cloudformation.template import Template, TPath

#: A resource's status in the import report.
RUNS = "runs"  # a part of the config of its own, run locally
MAPPED = "mapped"  # folded into another part (a subscription into its topic)
SKIPPED = "skipped"  # nothing runs for it; the reason says why

PERMISSIONS_REASON = "permissions are not enforced locally"


@dataclass
class Resource:
    """One template resource, its properties resolved."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    template: Template
    #: The SAM type this one was made from, if any.
    made_from: str | None = None
    #: Its ``Metadata.pipelines``: what an export kept that CloudFormation has
    #: no property for (``settings``: local settings, merged in; ``id``).
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> TPath:
        return ("Resources", self.logical_id)

    def at(self, *keys: str | int) -> TPath:
        """The template path of one of its properties."""
        return (*self.path, "Properties", *keys)

    def get(self, key: str, default: Any = None) -> Any:
        return self.properties.get(key, default)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.properties.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise TemplateError(self.at(key), "must be a text value")
        return str(value)

    def number(self, key: str) -> int | float | None:
        value = self.properties.get(key)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TemplateError(self.at(key), f"{value!r} is not a number") from None
        return int(number) if number.is_integer() else number


class Skip(Exception):
    """Raised by a mapping's ``apply``: the resource is skipped, for this reason."""


@dataclass(frozen=True)
class Property:
    """One property of a type as the docs' table shows it."""

    name: str
    becomes: str


@dataclass(frozen=True)
class TypeMapping:
    """How one CloudFormation resource type is imported.

    ``identity(context, resource)`` names the resource in the config and says
    what ``Ref`` and ``Fn::GetAtt`` give; ``apply(context, resource)`` adds
    it to the config and returns what it became, for the report (phase 0:
    parts of their own; phase 1: parts folded into others, such as a
    topic's subscription, once every phase-0 part is there); it raises
    ``Skip`` to skip the resource, ``TemplateError`` for a problem.
    Without ``apply`` the type is skipped with ``reason``.
    """

    type: str
    identity: Callable[[ImportContext, Resource], Identity] | None = None
    apply: Callable[[ImportContext, Resource], str] | None = None
    reason: str = ""
    phase: int = 0
    #: The properties read, each with what it becomes (the docs' table);
    #: any other property given is reported as ignored.
    properties: tuple[Property, ...] = ()
    #: Properties read only to name things (the resource's name), never ignored.
    naming: tuple[str, ...] = ()
    #: Who maps it (a plugin's name), for the docs.
    owner: str = ""


@dataclass(frozen=True)
class ConfigExport:
    """How one part of a config is exported: a resource ``type`` of the
    config (``queue``, ``function`` ...), or a section (``rules``,
    ``archives``, ``alarms``, ``schedules``, ``schedule_groups``,
    ``buses``). ``export(context, name, body)`` adds template resources."""

    part: str
    export: Callable[[ExportContext, str, dict[str, Any]], None]
    #: The CloudFormation types it writes, for the docs.
    writes: tuple[str, ...] = ()
    #: The end of its main resource's logical id (``Queue``: ``OrdersQueue``).
    suffix: str = ""
    #: A resource type's settings it writes as properties; the others are
    #: kept in the main resource's ``Metadata.pipelines.settings``, which
    #: CloudFormation ignores and an import reads back.
    keys: tuple[str, ...] = ()


def props(*pairs: tuple[str, str]) -> tuple[Property, ...]:
    return tuple(Property(name, becomes) for name, becomes in pairs)


@dataclass
class ReportRow:
    """One resource of the import report."""

    resource: str
    type: str
    status: str
    detail: str
    template: str
    #: Where it is declared: (file, line, column).
    where: tuple[str, int, int] = ("", 1, 1)
    #: Written by ``pipelines export`` (a permission): nothing of the config.
    generated: bool = False

    def as_dict(self) -> dict[str, str]:
        return {
            "resource": self.resource,
            "type": self.type,
            "status": self.status,
            "detail": self.detail,
            "template": self.template,
            "at": f"{self.where[1]}:{self.where[2]}",
        }


@dataclass
class ImportContext:
    """The config being built from one or more templates."""

    pseudo: Pseudo
    #: Where files the import writes go (inline Lambda code), and what a
    #: ``CodeUri`` is relative to: the config's directory.
    directory: Path
    config: dict[str, Any] = field(default_factory=dict)
    #: The config path of each part -> (template, template path) it came from.
    origins: dict[tuple[str | int, ...], tuple[Template, TPath]] = field(default_factory=dict)
    #: ARNs, URLs and names -> (config section, name): what a property's
    #: reference to another resource resolves to.
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: A logical id (per template) -> (section, config name).
    named: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    rows: list[ReportRow] = field(default_factory=list)
    #: Files the import wrote (inline code), relative to ``directory``.
    written: list[Path] = field(default_factory=list)
    #: False: inline code is not written (a check only).
    write_code: bool = True
    _taken: dict[str, set[str]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.config.setdefault(name, {})
        return found

    def resource_part(self, name: str) -> dict[str, Any]:
        """The ``resources`` part another resource of the template became. A
        resource with a problem or skipped became none, though a reference to
        it still resolves: what is folded into it is skipped then (the reason
        is at that resource's own line), never a KeyError."""
        body = self.section("resources").get(name)
        if not isinstance(body, dict):
            raise Skip(f"{name!r} was not imported (see its own problem or row)")
        return body

    def unique(self, section: str, name: str, resource: Resource) -> str:
        """``name`` if no part of ``section`` has it yet, else one made unique
        with the resource's logical id (two types may share a physical name)."""
        taken = self._taken.setdefault(section, set())
        chosen = name
        if chosen in taken:
            chosen = f"{name}-{resource.logical_id}"
        taken.add(chosen)
        return chosen

    def name(self, section: str, resource: Resource, physical: str | None) -> str:
        """The config name of a resource: its physical name when the template
        gives one, else its logical id (where AWS would make one up)."""
        kept = resource.metadata.get("name")
        chosen = self.unique(section, str(kept or physical or resource.logical_id), resource)
        self.named[(str(resource.template.file), resource.logical_id)] = (section, chosen)
        return chosen

    def config_name(self, resource: Resource) -> tuple[str, str] | None:
        return self.named.get((str(resource.template.file), resource.logical_id))

    def alias(self, section: str, name: str, *keys: Any) -> None:
        for key in keys:
            if isinstance(key, str) and key:
                self.aliases.setdefault(key, (section, name))

    def declare(
        self,
        section: str,
        name: str,
        body: Any,
        resource: Resource,
        origins: Mapping[str, str | TPath] | None = None,
    ) -> None:
        """Put ``body`` at ``section.name``, remembering where it came from
        (``origins``: a config key -> the property it came from)."""
        self.section(section)[name] = body
        self.origin((section, name), resource, ())
        for key, prop in (origins or {}).items():
            if isinstance(body, dict) and key in body:
                self.origin(
                    (section, name, key), resource, (prop,) if isinstance(prop, str) else prop
                )

    def origin(self, config_path: tuple[str | int, ...], resource: Resource, prop: TPath) -> None:
        where = resource.at(*prop) if prop else resource.path
        self.origins[config_path] = (resource.template, where)

    def reference(
        self, value: Any, path: TPath, *, sections: Iterable[str] = ("resources",)
    ) -> tuple[str, str]:
        """The config part an ARN, URL or name in a property refers to."""
        wanted = tuple(sections)
        if isinstance(value, str):
            found = self.aliases.get(value)
            if found is None:
                found = self.aliases.get(_without_region(value))
            if found is not None and found[0] in wanted:
                return found
        kinds = " or ".join(_SINGULAR.get(s, s) for s in wanted)
        raise TemplateError(path, f"{value!r} names no {kinds} of the template")

    def resource(self, value: Any, path: TPath) -> str:
        """The config resource an ARN, URL or name refers to."""
        return self.reference(value, path)[1]

    def report(self, resource: Resource, status: str, detail: str) -> None:
        template = resource.template
        generated = bool(resource.metadata.get("generated"))
        if generated:
            detail += " (written by pipelines export)"
        self.rows.append(
            ReportRow(
                resource.logical_id,
                resource.type,
                status,
                detail,
                str(template.file),
                template.positions.get(resource.path, (str(template.file), 1, 1)),
                generated,
            )
        )

    def arn(self, service: str, rest: str, *, region: bool = True, account: bool = True) -> str:
        p = self.pseudo
        return (
            f"arn:{p.partition}:{service}:{p.region if region else ''}:"
            f"{p.account if account else ''}:{rest}"
        )


_SINGULAR = {
    "resources": "resource",
    "buses": "event bus",
    "alarms": "alarm",
    "schedule_groups": "schedule group",
}

_ARN = re.compile(r"^arn:([^:]*):([^:]*):([^:]*):([^:]*):(.*)$")


def _without_region(value: str) -> str:
    """An ARN with another region or account than ours still names our part
    (a template may hard-code its deployment's)."""
    match = _ARN.match(value)
    if not match:
        return value
    return f"arn:{match.group(1)}:{match.group(2)}:*:*:{match.group(5)}"


def alias_keys(arn: str) -> list[str]:
    """An ARN as registered: itself, and region- and account-free."""
    return [arn, _without_region(arn)]


@dataclass
class ExportContext:
    """The template being built from a config."""

    config: dict[str, Any]
    resources: dict[str, Any] = field(default_factory=dict)
    #: Config part -> its logical id.
    logical: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Config resource name -> its main resource's logical id.
    primaries: dict[str, str] = field(default_factory=dict)
    #: Parts that could not be exported: (config path, reason).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    needs_sam: bool = False
    #: The config's directory (a definition_file is read from it).
    directory: Path = field(default_factory=Path)
    #: The config's directory from the template's: functions' ``CodeUri``.
    code_uri: str = "."

    def logical_id(self, section: str, name: str, suffix: str = "") -> str:
        """A logical id for a config part: alphanumerics of its name, in
        CamelCase, with a suffix for its kind, unique in the template."""
        key = (section, name + "#" + suffix)
        if key in self.logical:
            return self.logical[key]
        words = re.split(r"[^A-Za-z0-9]+", name)
        base = "".join(w[:1].upper() + w[1:] for w in words if w) or "Resource"
        if not base[0].isalpha():
            base = "R" + base
        candidate = (base + suffix)[:200]
        taken = set(self.resources) | set(self.logical.values())
        number = 2
        unique = candidate
        while unique in taken:
            unique = f"{candidate}{number}"
            number += 1
        self.logical[key] = unique
        return unique

    def add(
        self, logical_id: str, type_name: str, properties: dict[str, Any], **extra: Any
    ) -> None:
        body: dict[str, Any] = {"Type": type_name, "Properties": properties}
        body.update(extra)
        self.resources[logical_id] = body

    def resource_type(self, name: str) -> str | None:
        found = (self.config.get("resources") or {}).get(name)
        return str(found.get("type")) if isinstance(found, dict) else None

    def ref_of(self, name: str) -> Any:
        """A template expression for a config resource's ARN (what targets name)."""
        kind = self.resource_type(name)
        logical = self.primaries.get(name)
        if kind is None or logical is None:
            raise ExportSkip(f"resource {name!r} has no CloudFormation equivalent here")
        attribute = _ARN_ATTRIBUTE.get(kind)
        if attribute is None:
            raise ExportSkip(f"resource {name!r} ({kind}) has no ARN in CloudFormation")
        if attribute == "Ref":
            return {"Ref": logical}
        return {"Fn::GetAtt": [logical, attribute]}

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append((where, reason))


class ExportSkip(Exception):
    """A part of a config with no CloudFormation equivalent (the reason)."""


#: The attribute that gives each exported resource type's ARN.
_ARN_ATTRIBUTE: dict[str, str] = {
    "queue": "Arn",
    "topic": "Ref",
    "stream": "Arn",
    "function": "Arn",
    "log_group": "Arn",
    "state_machine": "Ref",
    "api_destination": "Arn",
    "connection": "Arn",
    "firehose": "Arn",
}


def register_arn_attribute(config_type: str, attribute: str) -> None:
    """Say which attribute gives an exported type's ARN (a third party's type)."""
    _ARN_ATTRIBUTE[config_type] = attribute


def json_value(value: Any, path: TPath) -> Any:
    """A property CloudFormation takes as JSON text or as a mapping (an
    event pattern, a filter policy, a redrive policy): as a mapping."""
    if isinstance(value, str):
        import json

        try:
            return json.loads(value)
        except ValueError as exc:
            raise TemplateError(path, f"is not valid JSON: {exc}") from None
    return value


def set_if(body: dict[str, Any], key: str, value: Any) -> None:
    """``body[key] = value`` unless the value is absent."""
    if value is not None:
        body[key] = value


def integer(value: Any, path: TPath) -> int | None:
    """A property CloudFormation accepts as a number or its text."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TemplateError(path, f"{value!r} is not a number") from None
    if not number.is_integer():
        raise TemplateError(path, f"{value!r} is not a whole number")
    return int(number)


def retry_and_dead_letter(
    context: ImportContext, target: dict[str, Any], given: Mapping[str, Any], path: TPath
) -> None:
    """A target's RetryPolicy and DeadLetterConfig (an EventBridge rule's
    target or a Scheduler schedule's: the same shapes) as its
    ``retry_policy`` and ``dead_letter``."""
    retry = given.get("RetryPolicy")
    if isinstance(retry, dict):
        policy: dict[str, Any] = {}
        set_if(
            policy,
            "maximum_retry_attempts",
            integer(retry.get("MaximumRetryAttempts"), (*path, "RetryPolicy")),
        )
        set_if(
            policy,
            "maximum_event_age",
            integer(retry.get("MaximumEventAgeInSeconds"), (*path, "RetryPolicy")),
        )
        target["retry_policy"] = policy
    dead_letter = given.get("DeadLetterConfig")
    if isinstance(dead_letter, dict) and "Arn" in dead_letter:
        target["dead_letter"] = context.resource(
            dead_letter["Arn"], (*path, "DeadLetterConfig", "Arn")
        )


def boolean(value: Any, path: TPath) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise TemplateError(path, f"{value!r} is not true or false")


def arn_name(value: str) -> str:
    """The last part of an ARN's resource (``...:queue-name``, ``.../name``)."""
    return re.split(r"[:/]", value)[-1]
