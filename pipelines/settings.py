"""Declared settings: what a node of a config accepts, as one table.

A node's validator reads its settings through its ``Settings`` table (the
allowed names, each number's range and default, each flag), and ``pipelines
schema`` publishes the same table as JSON Schema, so the two cannot drift
apart. A setting whose value needs more than a type and a range (a topic
filter, a mapping of subscriptions) is declared as a ``Shape``: its schema
is written beside it, and its owner's code checks it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ConfigError, Problems, Where, unknown_setting


def check_keys(where: Where, config: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject unknown keys, every one of them, suggesting the closest allowed one."""
    allowed = set(allowed)
    problems = Problems()
    for key in config:
        if key not in allowed:
            problems.add(ConfigError(where / key, unknown_setting(str(key), allowed)))
    problems.raise_any()


class Setting(ABC):
    """One setting of a node: how it is checked and how the schema shows it."""

    description: str

    @abstractmethod
    def schema(self) -> dict[str, Any]:
        """Its JSON Schema."""

    def _described(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "description": self.description} if self.description else schema


@dataclass(frozen=True)
class Number(Setting):
    """A number within [low, high]; ``integer`` for whole numbers only."""

    default: float | None
    low: float
    high: float
    integer: bool = False
    description: str = ""
    #: Often written as ``${VAR}``, a string to the schema (a port).
    variable: bool = False

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        schema |= {"minimum": _json_number(self.low), "maximum": _json_number(self.high)}
        if self.variable:
            text = {"type": "string", "pattern": "^\\$\\{", "description": "${VAR:-default}"}
            schema = {"anyOf": [schema, text]}
        if self.default is not None:
            schema["default"] = _json_number(self.default)
        return self._described(schema)

    def check(self, where: Where, value: Any, *, low: float | None = None) -> float:
        """``value`` as a float; ``low`` narrows the range (a maximum that must
        not be below the minimum given beside it)."""
        low = self.low if low is None else low
        kind = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            noun = "an integer" if self.integer else "a number"
            raise ConfigError(where, f"must be {noun}, not {value!r}")
        if not low <= value <= self.high:
            raise ConfigError(where, f"must be between {low:g} and {self.high:g}, not {value!r}")
        return float(value)


@dataclass(frozen=True)
class Flag(Setting):
    """true or false (None only when that is its default)."""

    default: bool | None = None
    description: str = ""

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "boolean"}
        if self.default is not None:
            schema["default"] = self.default
        return self._described(schema)

    def check(self, where: Where, value: Any) -> bool | None:
        if value is not None and not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, not {value!r}")
        return value


@dataclass(frozen=True)
class Shape(Setting):
    """A setting its owner checks in code; ``fragment`` is its JSON Schema."""

    fragment: Mapping[str, Any]
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return self._described(dict(self.fragment))


@dataclass(frozen=True)
class Section(Setting):
    """A mapping with settings of its own (a retry policy, ``async_invoke``)."""

    settings: Settings
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return self._described(self.settings.schema())


@dataclass(frozen=True)
class Settings:
    """The settings a node accepts, by name, and which of them it requires."""

    table: Mapping[str, Setting]
    required: tuple[str, ...] = field(default=())

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.table)

    def check_keys(self, where: Where, config: Mapping[str, Any]) -> None:
        check_keys(where, config, self.table)

    def number(
        self,
        where: Where,
        config: Mapping[str, Any],
        key: str,
        *,
        low: float | None = None,
        default: float | None = None,
    ) -> float:
        """The number ``key`` (its default, or ``default``, when not given),
        checked against its range (``low`` raises its minimum)."""
        setting = self.table[key]
        assert isinstance(setting, Number), f"{key} is not declared a number"
        fallback = setting.default if default is None else default
        return setting.check(where / key, config.get(key, fallback), low=low)

    def flag(self, where: Where, config: Mapping[str, Any], key: str) -> bool | None:
        """The flag ``key`` (its default when not given)."""
        setting = self.table[key]
        assert isinstance(setting, Flag), f"{key} is not declared a flag"
        return setting.check(where / key, config.get(key, setting.default))

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a mapping of these settings and no others."""
        return {"type": "object", **self.properties(), "additionalProperties": False}

    def properties(self) -> dict[str, Any]:
        """``properties`` and ``required``: a ``TargetType.settings_schema``."""
        found: dict[str, Any] = {
            "properties": {name: setting.schema() for name, setting in self.table.items()}
        }
        if self.required:
            found["required"] = list(self.required)
        return found


def _json_number(value: float) -> float | int:
    """A whole bound as an integer: an integer setting's schema says 60, not 60.0."""
    return int(value) if float(value).is_integer() else value
