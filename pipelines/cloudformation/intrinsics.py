"""CloudFormation's intrinsic functions, conditions and pseudo parameters,
evaluated locally.

``Resolver.resolve`` turns a template value into plain data: ``Ref`` to a
parameter or pseudo parameter gives its value, to a resource what
CloudFormation's ``Ref`` gives for its type (a queue's URL, a topic's ARN,
a function's name: each mapping says, ``Identity``); ``Fn::GetAtt`` an
attribute of a resource; ``Fn::Sub`` (both forms), ``Fn::Join``,
``Fn::Select``, ``Fn::Split``, ``Fn::FindInMap``, ``Fn::If`` (with the
template's Conditions: ``Fn::Equals``, ``Fn::And``, ``Fn::Or``,
``Fn::Not``, ``Condition``), ``Fn::ImportValue`` (the exports of templates
read before in the same run), ``Fn::GetAZs``, ``Fn::Base64``,
``Fn::ToJsonString`` and ``Fn::Length``. ``AWS::NoValue`` removes the key
or item holding it. A problem raises ``TemplateError`` with the template
path of the value at fault.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.cloudformation.template import TPath

#: What ``AWS::NoValue`` resolves to: the key or item holding it goes.
NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "AWS::NoValue"})()

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
FUNCTIONS = {
    "Ref",
    "Condition",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::Join",
    "Fn::Select",
    "Fn::Split",
    "Fn::FindInMap",
    "Fn::If",
    "Fn::Equals",
    "Fn::And",
    "Fn::Or",
    "Fn::Not",
    "Fn::ImportValue",
    "Fn::GetAZs",
    "Fn::Base64",
    "Fn::ToJsonString",
    "Fn::Length",
    "Fn::Cidr",
    "Fn::Transform",
}


class TemplateError(Exception):
    """A problem at a template path; the importer locates it in the file."""

    def __init__(self, path: TPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class Identity:
    """What a resource gives to ``Ref`` and ``Fn::GetAtt``."""

    ref: Any
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pseudo:
    """The pseudo parameters of one stack."""

    region: str = "us-east-1"
    account: str = "000000000000"
    stack_name: str = "stack"
    partition: str = "aws"

    def values(self) -> dict[str, Any]:
        stack_id = (
            f"arn:{self.partition}:cloudformation:{self.region}:{self.account}:"
            f"stack/{self.stack_name}/00000000-0000-0000-0000-000000000000"
        )
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": stack_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }


def function_of(value: Any) -> tuple[str, Any] | None:
    """``(name, argument)`` when ``value`` is an intrinsic function call."""
    if isinstance(value, dict) and len(value) == 1:
        name, argument = next(iter(value.items()))
        if name in FUNCTIONS:
            return str(name), argument
    return None


def references(value: Any, path: TPath = ()) -> Iterator[tuple[str, TPath]]:
    """The names a value refers to (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``'s
    variables), each with the path of the reference: the edges of the
    dependency graph. Pseudo parameters (``AWS::...``) are left out."""
    call = function_of(value)
    if call is not None:
        name, argument = call
        where = (*path, name)
        if name == "Ref" and isinstance(argument, str) and not argument.startswith("AWS::"):
            yield argument, where
        elif name == "Fn::GetAtt":
            target = _getatt_parts(argument)
            if target is not None:
                yield target[0], where
        elif name == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else _sub_parts(argument)
            if isinstance(text, str):
                for variable in _sub_variables(text):
                    head = variable.split(".", 1)[0]
                    if head not in variables and not head.startswith("AWS::"):
                        yield head, where
            if isinstance(variables, dict):
                yield from references(variables, (*where, 1))
        if name != "Fn::Sub":
            yield from references(argument, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from references(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, (*path, index))


def _getatt_parts(argument: Any) -> tuple[str, str] | None:
    if isinstance(argument, str) and "." in argument:
        resource, _, attribute = argument.partition(".")
        return resource, attribute
    if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str):
        return argument[0], argument[1]
    return None


def _sub_parts(argument: Any) -> tuple[Any, Any]:
    if isinstance(argument, list) and len(argument) == 2:
        return argument[0], argument[1]
    return None, None


def _sub_variables(text: str) -> Iterator[str]:
    for match in _SUB_VARIABLE.finditer(text):
        if not match.group(1).startswith("!"):
            yield match.group(1).strip()


class Resolver:
    """Evaluates a template's values once its parameters, conditions and the
    identities of the resources named so far are known."""

    def __init__(
        self,
        *,
        parameters: Mapping[str, Any],
        pseudo: Pseudo,
        mappings: Mapping[str, Any],
        exports: Mapping[str, Any],
        conditions: Mapping[str, Any] | None = None,
    ) -> None:
        self.parameters = dict(parameters)
        self.pseudo = pseudo.values()
        self.region = pseudo.region
        self.mappings = mappings
        self.exports = exports
        self.identities: dict[str, Identity] = {}
        self.condition_bodies = dict(conditions or {})
        self.condition_values: dict[str, bool] = {}
        self._evaluating: list[str] = []

    # -- conditions -------------------------------------------------------

    def condition(self, name: Any, path: TPath) -> bool:
        if not isinstance(name, str) or name not in self.condition_bodies:
            known = ", ".join(sorted(self.condition_bodies)) or "none"
            raise TemplateError(path, f"no condition named {name!r} (Conditions: {known})")
        if name in self.condition_values:
            return self.condition_values[name]
        if name in self._evaluating:
            loop = " -> ".join([*self._evaluating[self._evaluating.index(name) :], name])
            raise TemplateError(("Conditions", name), f"conditions refer to each other: {loop}")
        self._evaluating.append(name)
        try:
            value = self._boolean(self.condition_bodies[name], ("Conditions", name))
        finally:
            self._evaluating.pop()
        self.condition_values[name] = value
        return value

    def _boolean(self, body: Any, path: TPath) -> bool:
        call = function_of(body)
        if call is None:
            if isinstance(body, bool):
                return body
            raise TemplateError(
                path, "a condition is Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition"
            )
        name, argument = call
        where = (*path, name)
        if name == "Condition":
            return self.condition(argument, where)
        if name == "Fn::Equals":
            pair = self.resolve(argument, where)
            if not isinstance(pair, list) or len(pair) != 2:
                raise TemplateError(where, "Fn::Equals takes two values")
            return _text(pair[0]) == _text(pair[1])
        if name in ("Fn::And", "Fn::Or", "Fn::Not"):
            if not isinstance(argument, list) or not argument:
                raise TemplateError(where, f"{name} takes a list of conditions")
            if name == "Fn::Not":
                if len(argument) != 1:
                    raise TemplateError(where, "Fn::Not takes one condition")
                return not self._boolean(argument[0], (*where, 0))
            if not 2 <= len(argument) <= 10:
                raise TemplateError(where, f"{name} takes 2 to 10 conditions")
            values = [self._boolean(item, (*where, i)) for i, item in enumerate(argument)]
            return all(values) if name == "Fn::And" else any(values)
        raise TemplateError(where, f"{name} is not a condition function")

    # -- values -----------------------------------------------------------

    def resolve(self, value: Any, path: TPath) -> Any:
        call = function_of(value)
        if call is not None:
            name, argument = call
            return self._call(name, argument, (*path, name))
        if isinstance(value, dict):
            result = {}
            for key, item in value.items():
                resolved = self.resolve(item, (*path, key))
                if resolved is not NO_VALUE:
                    result[key] = resolved
            return result
        if isinstance(value, list):
            items = [self.resolve(item, (*path, i)) for i, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def _call(self, name: str, argument: Any, path: TPath) -> Any:
        if name == "Ref":
            return self.ref(argument, path)
        if name == "Fn::GetAtt":
            return self._getatt(argument, path)
        if name == "Fn::Sub":
            return self._sub(argument, path)
        if name == "Fn::If":
            if not isinstance(argument, list) or len(argument) != 3:
                raise TemplateError(path, "Fn::If takes [condition, value if true, value if false]")
            chosen = 1 if self.condition(argument[0], (*path, 0)) else 2
            return self.resolve(argument[chosen], (*path, chosen))
        if name in ("Condition", "Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not"):
            return self._boolean({name: argument}, path[:-1])
        resolved = self.resolve(argument, path)
        return self._plain_call(name, resolved, path)

    def _plain_call(self, name: str, argument: Any, path: TPath) -> Any:
        """The functions whose argument is evaluated first."""
        if name == "Fn::Join":
            if not (
                isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], list)
            ):
                raise TemplateError(path, "Fn::Join takes [delimiter, [values]]")
            return str(argument[0]).join(_text(item, path) for item in argument[1])
        if name == "Fn::Select":
            if not (
                isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], list)
            ):
                raise TemplateError(path, "Fn::Select takes [index, [values]]")
            try:
                index = int(argument[0])
                if index < 0:
                    raise IndexError
                return argument[1][index]
            except (ValueError, IndexError):
                raise TemplateError(
                    path, f"index {argument[0]!r} is not within the {len(argument[1])} values"
                ) from None
        if name == "Fn::Split":
            if not (
                isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], str)
            ):
                raise TemplateError(path, "Fn::Split takes [delimiter, text]")
            return argument[1].split(str(argument[0]))
        if name == "Fn::FindInMap":
            return self._find_in_map(argument, path)
        if name == "Fn::ImportValue":
            if argument not in self.exports:
                known = ", ".join(sorted(self.exports)) or "none"
                raise TemplateError(
                    path,
                    f"no stack given before this one exports {argument!r} (exports: {known});"
                    " give the exporting template first",
                )
            return self.exports[argument]
        if name == "Fn::GetAZs":
            region = argument or self.region
            return [f"{region}{zone}" for zone in "abc"]
        if name == "Fn::Base64":
            return base64.b64encode(_text(argument, path).encode()).decode()
        if name == "Fn::ToJsonString":
            return json.dumps(argument, separators=(",", ":"))
        if name == "Fn::Length":
            if not isinstance(argument, list):
                raise TemplateError(path, "Fn::Length takes a list")
            return len(argument)
        raise TemplateError(path, f"{name} is not supported locally")

    def ref(self, name: Any, path: TPath) -> Any:
        if not isinstance(name, str):
            raise TemplateError(path, "Ref takes a name")
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.identities:
            return self.identities[name].ref
        raise TemplateError(path, f"Ref to {name!r}: no parameter or resource of that name")

    def _getatt(self, argument: Any, path: TPath) -> Any:
        argument = self.resolve(argument, path) if not isinstance(argument, str) else argument
        parts = _getatt_parts(argument)
        if parts is None:
            raise TemplateError(
                path, "Fn::GetAtt takes [resource, attribute] or resource.attribute"
            )
        return self.attribute(parts[0], parts[1], path)

    def attribute(self, resource: str, attribute: str, path: TPath) -> Any:
        identity = self.identities.get(resource)
        if identity is None:
            raise TemplateError(path, f"Fn::GetAtt of {resource!r}: no resource of that name")
        if attribute not in identity.attributes:
            known = ", ".join(sorted(identity.attributes)) or "none"
            raise TemplateError(
                path, f"{resource} has no attribute {attribute!r} here (attributes: {known})"
            )
        return identity.attributes[attribute]

    def _sub(self, argument: Any, path: TPath) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        else:
            text, raw = _sub_parts(argument)
            if not isinstance(text, str) or not isinstance(raw, dict):
                raise TemplateError(path, "Fn::Sub takes a text, or [text, {variables}]")
            variables = self.resolve(raw, (*path, 1))

        def replace(match: re.Match[str]) -> str:
            inside = match.group(1)
            if inside.startswith("!"):
                return "${" + inside[1:] + "}"  # ${!Literal}: written as is
            name = inside.strip()
            if name in variables:
                return _text(variables[name], path)
            if "." in name and name.split(".", 1)[0] not in self.parameters:
                resource, _, attribute = name.partition(".")
                return _text(self.attribute(resource, attribute, path), path)
            return _text(self.ref(name, path), path)

        return _SUB_VARIABLE.sub(replace, text)

    def _find_in_map(self, argument: Any, path: TPath) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3):
            raise TemplateError(path, "Fn::FindInMap takes [map, top-level key, second-level key]")
        current: Any = self.mappings
        for depth, key in enumerate(argument):
            if not isinstance(current, dict) or str(key) not in current:
                where = ("Mappings", *[str(k) for k in argument[:depth]])
                known = ", ".join(sorted(current)) if isinstance(current, dict) else "none"
                raise TemplateError(path, f"{label_of(where)} has no key {key!r} (keys: {known})")
            current = current[str(key)]
        return current


def label_of(path: TPath) -> str:
    return ".".join(str(part) for part in path)


def _text(value: Any, path: TPath = ()) -> str:
    """A value as CloudFormation writes it into text (numbers and booleans too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(path, f"{json.dumps(value)[:60]} is not a text value here")
