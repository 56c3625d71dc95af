"""Text with ``<path>`` placeholders filled from an event: an MQTT topic to
publish to (``devices/<detail.device>/alerts``), a log stream's name
(``<source>/<detail.app>``). A path is dotted keys into the event."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, Where

_PLACEHOLDER = re.compile(r"<([^<>]*)>")
_PATH_PART = re.compile(r"[^.\s]+")

#: Says what is wrong with a placeholder's value (None: nothing).
ValueCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class PathTemplate:
    """Literal text and paths, in order."""

    text: str
    parts: tuple[str | tuple[str, ...], ...]

    @classmethod
    def parse(cls, where: Where, text: Any, what: str) -> PathTemplate:
        """``text`` as a template; ``ConfigError`` at ``where`` when it is not
        text or a placeholder is no dotted path (``what`` names the setting's
        purpose for the message)."""
        if not isinstance(text, str) or not text:
            raise ConfigError(where, f"is required: {what}, with <path> placeholders if need be")
        parts: list[str | tuple[str, ...]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[position : match.start()])
            path = tuple(match.group(1).split("."))
            if not all(_PATH_PART.fullmatch(p) for p in path):
                raise ConfigError(where, f"<{match.group(1)}> is not a path like <detail.id>")
            parts.append(path)
            position = match.end()
        parts.append(text[position:])
        return cls(text, tuple(p for p in parts if p != ""))

    @property
    def literal(self) -> str:
        """The text outside the placeholders."""
        return "".join(p for p in self.parts if isinstance(p, str))

    def render(
        self, event: Mapping[str, Any], code: str, label: str, check: ValueCheck | None = None
    ) -> str:
        """The text for ``event``. A missing value, an object or a list, or a
        value ``check`` finds wrong, is a non-retryable ``DeliveryError(code)``
        whose message starts with ``label`` (the setting: ``topic``)."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = event
            for key in part:
                value = value.get(key) if isinstance(value, Mapping) else None
            path = ".".join(part)
            if value is None or isinstance(value, dict | list):
                raise DeliveryError(
                    code,
                    f"{label} {self.text!r}: the event has no value at {path}",
                    retryable=False,
                )
            text = value if isinstance(value, str) else json.dumps(value)
            problem = check(text) if check else None
            if problem is not None:
                raise DeliveryError(
                    code, f"{label} {self.text!r}: {path} is {problem}", retryable=False
                )
            out.append(text)
        return "".join(out)
