"""S3 object keys as Firehose makes them: prefixes with ``!{namespace:value}``
expressions, Java DateTimeFormatter patterns, and the default key layout.

A prefix is parsed once (``parse_prefix``) into parts; ``Prefix.render``
evaluates it for one object: the arrival time of the object's oldest record
(every ``!{timestamp:...}`` of one key is the same instant), the partition
keys of its records, the error output type. ``check_prefixes`` applies AWS's
semantic rules (developer guide, "Custom Prefixes for Amazon S3 Objects");
AWS's exact wording of these refusals is not recorded anywhere we could
find, so the messages here say what is wrong in our own words.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

NAMESPACES = ("firehose", "timestamp", "partitionKeyFromQuery", "partitionKeyFromLambda")
FIREHOSE_VALUES = ("error-output-type", "random-string")
#: What Firehose appends to a prefix without a timestamp expression.
DEFAULT_TIMESTAMP = "yyyy/MM/dd/HH/"
#: An evaluated prefix longer than this cannot be a key's prefix (AWS's rule).
MAX_EVALUATED = 512
RANDOM_LENGTH = 11
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits

_EXPRESSION = re.compile(r"!\{([^{}]*)\}")


class PrefixError(ValueError):
    """A prefix AWS would refuse; ``field`` is ``Prefix`` or ``ErrorOutputPrefix``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- Java DateTimeFormatter ----------------------------------------------------------

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

Formatter = Callable[[datetime], str]


def _padded(value: int, width: int) -> str:
    return str(value).zfill(width)


def _letter(letter: str, count: int) -> Formatter:
    """One run of a pattern letter, as DateTimeFormatter prints it (the
    letters keys are made of; any other is refused by ``compile_pattern``)."""
    if letter in "yu":
        if count == 2:
            return lambda t: _padded(t.year % 100, 2)
        return lambda t: _padded(t.year, count)
    if letter in "ML":
        if count <= 2:
            return lambda t: _padded(t.month, count)
        if count == 3:
            return lambda t: _MONTHS[t.month - 1][:3]
        return lambda t: _MONTHS[t.month - 1]
    simple: dict[str, Callable[[datetime], int]] = {
        "d": lambda t: t.day,
        "H": lambda t: t.hour,
        "h": lambda t: (t.hour % 12) or 12,
        "k": lambda t: t.hour or 24,
        "K": lambda t: t.hour % 12,
        "m": lambda t: t.minute,
        "s": lambda t: t.second,
        "D": lambda t: t.timetuple().tm_yday,
        "e": lambda t: t.isoweekday() % 7 + 1,
    }
    if letter in simple:
        read = simple[letter]
        return lambda t: _padded(read(t), count)
    if letter == "S":
        return lambda t: _padded(t.microsecond, 6)[:count].ljust(count, "0")
    if letter == "E":
        return (lambda t: _DAYS[t.weekday()]) if count >= 4 else (lambda t: _DAYS[t.weekday()][:3])
    if letter == "a":
        return lambda t: "AM" if t.hour < 12 else "PM"
    raise KeyError(letter)


def _quoted(pattern: str, start: int) -> tuple[str, int]:
    """The quoted text starting at ``start`` (``''`` is a quote, inside quotes
    too) and where the pattern goes on after it."""
    i = start + 1
    if pattern[i : i + 1] == "'":
        return "'", i + 1
    text: list[str] = []
    while i < len(pattern):
        if pattern[i] == "'":
            if pattern[i + 1 : i + 2] == "'":
                text.append("'")
                i += 2
                continue
            return "".join(text), i + 1
        text.append(pattern[i])
        i += 1
    raise ValueError(f"unterminated quote at position {start} of {pattern!r}")


def _literal(text: str) -> Formatter:
    return lambda t: text


_LETTERS = "yuMLdHhkKmsDeSEa"
_RESERVED = "#{}[]"


def compile_pattern(pattern: str) -> Formatter:
    """A DateTimeFormatter pattern as a function of a datetime; ``ValueError``
    naming the first letter or character it cannot take."""
    pieces: list[Formatter] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            literal, i = _quoted(pattern, i)
            pieces.append(_literal(literal))
            continue
        if char.isascii() and char.isalpha():
            run = i
            while run < len(pattern) and pattern[run] == char:
                run += 1
            if char not in _LETTERS:
                raise ValueError(f"unknown pattern letter {char!r} in {pattern!r}")
            pieces.append(_letter(char, run - i))
            i = run
            continue
        if char in _RESERVED:
            raise ValueError(f"reserved character {char!r} in {pattern!r}")
        pieces.append(_literal(char))
        i += 1
    return lambda t: "".join(piece(t) for piece in pieces)


# -- prefixes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """``text`` as it is, or an expression: ``kind`` is ``timestamp`` (``value``
    its pattern), ``random``, ``error`` (the error output type), ``query`` or
    ``lambda`` (``value`` a partition key's name)."""

    kind: str
    value: str = ""
    format: Formatter | None = None


@dataclass(frozen=True, slots=True)
class Prefix:
    field: str
    text: str
    parts: tuple[Part, ...]

    def kinds(self) -> set[str]:
        return {part.kind for part in self.parts}

    @property
    def has_expressions(self) -> bool:
        return any(part.kind != "text" for part in self.parts)

    def keys(self, kind: str) -> list[str]:
        return [part.value for part in self.parts if part.kind == kind]

    def with_default_time(self) -> Prefix:
        """Itself, or with ``!{timestamp:yyyy/MM/dd/HH/}`` appended when it has
        no timestamp expression (as Firehose does without dynamic partitioning)."""
        if "timestamp" in self.kinds():
            return self
        added = Part("timestamp", DEFAULT_TIMESTAMP, compile_pattern(DEFAULT_TIMESTAMP))
        return Prefix(self.field, self.text, (*self.parts, added))

    def render(
        self,
        when: datetime,
        keys: Mapping[str, Mapping[str, str]] | None = None,
        error_type: str | None = None,
    ) -> str:
        """The evaluated prefix; ``KeyError`` naming a partition key the
        record has not, ``ValueError`` when longer than AWS allows."""
        out: list[str] = []
        for part in self.parts:
            if part.kind == "text":
                out.append(part.value)
            elif part.kind == "timestamp":
                assert part.format is not None
                out.append(part.format(when))
            elif part.kind == "random":
                out.append("".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(RANDOM_LENGTH)))
            elif part.kind == "error":
                out.append(error_type or "")
            else:
                found = (keys or {}).get(part.kind, {})
                if part.value not in found:
                    source = "query" if part.kind == "query" else "Lambda function"
                    raise KeyError(f"the {source} gave no partition key {part.value!r}")
                out.append(found[part.value])
        text = "".join(out)
        if len(text) > MAX_EVALUATED:
            raise ValueError(
                f"the evaluated {self.field} has {len(text)} characters;"
                f" at most {MAX_EVALUATED} are allowed"
            )
        return text


_KINDS = {"partitionKeyFromQuery": "query", "partitionKeyFromLambda": "lambda"}


def parse_prefix(field: str, text: str) -> Prefix:
    """``text`` (a Prefix or ErrorOutputPrefix) as parts; ``PrefixError`` for
    an unknown namespace or value, a bad timestamp pattern, or ``!{`` outside
    an expression."""
    parts: list[Part] = []
    position = 0
    for found in _EXPRESSION.finditer(text):
        literal = text[position : found.start()]
        _check_literal(field, text, literal)
        if literal:
            parts.append(Part("text", literal))
        parts.append(_expression(field, text, found.group(1)))
        position = found.end()
    literal = text[position:]
    _check_literal(field, text, literal)
    if literal:
        parts.append(Part("text", literal))
    return Prefix(field, text, tuple(parts))


def _check_literal(field: str, text: str, literal: str) -> None:
    if "!{" in literal:
        raise PrefixError(
            field,
            f"{field} '{text}': the sequence '!{{' may appear only in a"
            " !{namespace:value} expression",
        )


def _expression(field: str, text: str, inner: str) -> Part:
    namespace, colon, value = inner.partition(":")
    if not colon or namespace not in NAMESPACES:
        raise PrefixError(
            field,
            f"{field} '{text}': unknown namespace '{namespace}' in '!{{{inner}}}'"
            f" (known: {', '.join(NAMESPACES)})",
        )
    if namespace == "timestamp":
        try:
            return Part("timestamp", value, compile_pattern(value))
        except ValueError as exc:
            raise PrefixError(
                field, f"{field} '{text}': '!{{{inner}}}' is not a valid timestamp: {exc}"
            ) from None
    if namespace == "firehose":
        if value not in FIREHOSE_VALUES:
            raise PrefixError(
                field,
                f"{field} '{text}': unknown firehose value '{value}' in '!{{{inner}}}'"
                f" (known: {', '.join(FIREHOSE_VALUES)})",
            )
        return Part("error" if value == "error-output-type" else "random")
    if not value:
        raise PrefixError(field, f"{field} '{text}': '!{{{inner}}}' names no partition key")
    return Part(_KINDS[namespace], value)


def check_prefixes(
    prefix: Prefix,
    error_prefix: Prefix | None,
    *,
    partitioning: bool,
    query: bool,
    lambda_keys: bool,
) -> None:
    """AWS's rules between Prefix and ErrorOutputPrefix and the partitioning
    they name: ``query`` and ``lambda_keys`` say whether a MetadataExtraction
    or a Lambda processor gives keys."""
    prefix_kinds = prefix.kinds()
    if "error" in prefix_kinds:
        raise PrefixError(
            "Prefix",
            "Prefix cannot contain !{firehose:error-output-type}: use it in ErrorOutputPrefix",
        )
    if error_prefix is None:
        if prefix.has_expressions:
            raise PrefixError(
                "ErrorOutputPrefix",
                "ErrorOutputPrefix cannot be null when Prefix contains expressions",
            )
    else:
        error_kinds = error_prefix.kinds()
        if error_prefix.has_expressions and "error" not in error_kinds:
            raise PrefixError(
                "ErrorOutputPrefix",
                "ErrorOutputPrefix must contain !{firehose:error-output-type} when it contains"
                " expressions",
            )
        if error_kinds & {"query", "lambda"}:
            raise PrefixError(
                "ErrorOutputPrefix",
                "ErrorOutputPrefix cannot contain partitionKeyFromQuery or"
                " partitionKeyFromLambda: records that failed may have no keys",
            )
    used = prefix_kinds & {"query", "lambda"}
    if not partitioning:
        if used:
            raise PrefixError(
                "Prefix",
                "Prefix uses partition keys (partitionKeyFromQuery or partitionKeyFromLambda)"
                " but dynamic partitioning is not enabled",
            )
        return
    if not used:
        raise PrefixError(
            "Prefix",
            "dynamic partitioning is enabled: Prefix must contain at least one"
            " !{partitionKeyFromQuery:...} or !{partitionKeyFromLambda:...} expression",
        )
    if error_prefix is None:
        raise PrefixError(
            "ErrorOutputPrefix", "dynamic partitioning is enabled: ErrorOutputPrefix is required"
        )
    if "query" in used and not query:
        raise PrefixError(
            "Prefix",
            "Prefix uses partitionKeyFromQuery but no MetadataExtraction processor gives keys",
        )
    if "lambda" in used and not lambda_keys:
        raise PrefixError(
            "Prefix", "Prefix uses partitionKeyFromLambda but no Lambda processor is configured"
        )


def error_prefix_for(prefix: Prefix) -> Prefix:
    """The ErrorOutputPrefix Firehose uses when none is given (Prefix has no
    expressions): ``<prefix><error-output-type>/`` and the hour."""
    parts = [*prefix.parts, Part("error"), Part("text", "/")]
    return Prefix("ErrorOutputPrefix", prefix.text, tuple(parts)).with_default_time()


def object_name(stream: str, version: int, when: datetime, unique: str, extension: str) -> str:
    """The key's last part, as Firehose names it:
    ``<stream>-<version>-yyyy-MM-dd-HH-mm-ss-<uuid><extension>``."""
    return f"{stream}-{version}-{when:%Y-%m-%d-%H-%M-%S}-{unique}{extension}"
