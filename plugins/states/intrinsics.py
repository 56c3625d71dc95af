"""The ``States.*`` intrinsic functions of JSONPath mode.

An intrinsic is a string value of a ``.$`` field (or of Fail's ErrorPath and
CausePath) such as ``States.Format('Hello {}', $.name)``. ``parse`` reads it
into a call tree once (arguments are quoted strings with ``\\'``, ``\\{``,
``\\}`` and ``\\\\`` escapes, numbers, ``true``/``false``/``null``, paths into
the input or the context object, and nested calls, at most 10 deep);
``evaluate`` runs it. A function refusing its arguments raises
``States.IntrinsicFailure`` with a cause that names the function and the
argument.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from plugins.states import paths
from plugins.states.errors import INTRINSIC_FAILURE, StatesError

Json = Any

MAX_DEPTH = 10
#: The longest string Base64Encode, Base64Decode and Hash take.
MAX_STRING = 10_000
#: The most items ArrayRange makes.
MAX_RANGE = 1000


class IntrinsicSyntaxError(ValueError):
    """The text is not a well-formed intrinsic call; the message says where."""


@dataclass(frozen=True, slots=True)
class Literal:
    value: Json
    #: a string literal as written between its quotes (escapes kept), for Format
    raw: str | None = None


@dataclass(frozen=True, slots=True)
class PathArg:
    path: paths.JsonPath


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Literal | PathArg | Call, ...]


Arg = Literal | PathArg | Call


def is_intrinsic(text: str) -> bool:
    return text.startswith("States.")


@functools.lru_cache(maxsize=2048)
def parse(text: str) -> Call:
    reader = _Reader(text)
    call = reader.call(depth=1)
    reader.spaces()
    if not reader.done():
        raise IntrinsicSyntaxError(f"unexpected text after the call at character {reader.pos}")
    return call


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def spaces(self) -> None:
        while self.peek() in (" ", "\t", "\n", "\r") and not self.done():
            self.pos += 1

    def call(self, depth: int) -> Call:
        if depth > MAX_DEPTH:
            raise IntrinsicSyntaxError(f"intrinsic functions nest at most {MAX_DEPTH} deep")
        start = self.pos
        while not self.done() and (self.peek().isalnum() or self.peek() in "._"):
            self.pos += 1
        name = self.text[start : self.pos]
        if name not in FUNCTIONS:
            raise IntrinsicSyntaxError(f"unknown intrinsic function '{name}'")
        self.spaces()
        if self.peek() != "(":
            raise IntrinsicSyntaxError(f"'(' expected after {name}")
        self.pos += 1
        args: list[Arg] = []
        self.spaces()
        if self.peek() == ")":
            self.pos += 1
            return Call(name, ())
        while True:
            self.spaces()
            args.append(self.argument(depth))
            self.spaces()
            char = self.peek()
            self.pos += 1
            if char == ")":
                return Call(name, tuple(args))
            if char != ",":
                raise IntrinsicSyntaxError(f"',' or ')' expected in the arguments of {name}")

    def argument(self, depth: int) -> Arg:
        char = self.peek()
        if char == "'":
            return self.string()
        if char == "$":
            return self.path()
        if self.text.startswith("States.", self.pos):
            return self.call(depth + 1)
        start = self.pos
        while not self.done() and self.peek() not in ",) \t\n":
            self.pos += 1
        word = self.text[start : self.pos]
        if word in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[word])
        try:
            number = json.loads(word)
        except ValueError:
            number = None
        if isinstance(number, int | float) and not isinstance(number, bool):
            return Literal(number)
        raise IntrinsicSyntaxError(f"the argument '{word}' is not a literal, a path or a call")

    def string(self) -> Literal:
        self.pos += 1
        raw: list[str] = []
        value: list[str] = []
        while not self.done() and self.peek() != "'":
            char = self.peek()
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if escaped not in ("'", "{", "}", "\\"):
                    raise IntrinsicSyntaxError(f"invalid escape '\\{escaped}' in a string")
                raw.append(char + escaped)
                value.append(escaped)
                self.pos += 2
                continue
            raw.append(char)
            value.append(char)
            self.pos += 1
        if self.done():
            raise IntrinsicSyntaxError("a string argument is not closed by '")
        self.pos += 1
        return Literal("".join(value), "".join(raw))

    def path(self) -> PathArg:
        start = self.pos
        depth = 0
        quote = ""
        while not self.done():
            char = self.peek()
            if quote:
                if char == quote:
                    quote = ""
            elif char in "'\"" and depth:
                quote = char
            elif char in "[(":
                depth += 1
            elif char in "])":
                if depth == 0:
                    break
                depth -= 1
            elif char == "," and depth == 0:
                break
            self.pos += 1
        text = self.text[start : self.pos].rstrip()
        try:
            return PathArg(paths.parse(text))
        except paths.PathError as error:
            raise IntrinsicSyntaxError(error.message) from None


# -- evaluation -----------------------------------------------------------------


def evaluate(
    text: str | Call, data: Json, context: Json, variables: Mapping[str, Json] | None = None
) -> Json:
    call = parse(text) if isinstance(text, str) else text
    return _run(call, data, context, variables)


def _run(call: Call, data: Json, context: Json, variables: Mapping[str, Json] | None) -> Json:
    values = [_value(arg, data, context, variables) for arg in call.args]
    function = FUNCTIONS[call.name]
    if call.name == "States.Format" and call.args and isinstance(call.args[0], Literal):
        # Format reads its template's escapes itself: ``\{`` is a brace, ``{}`` a slot
        first = call.args[0]
        values[0] = _Template(first.raw if first.raw is not None else str(first.value))
    return function(*values)


def _value(arg: Arg, data: Json, context: Json, variables: Mapping[str, Json] | None) -> Json:
    if isinstance(arg, Literal):
        return arg.value
    if isinstance(arg, Call):
        return _run(arg, data, context, variables)
    try:
        return arg.path.find_in(data, context, variables)
    except paths.PathError as error:
        raise _fail(f"Invalid path '{arg.path.text}' : {error.message}") from None


def _fail(message: str) -> StatesError:
    return StatesError(INTRINSIC_FAILURE, message)


@dataclass(frozen=True, slots=True)
class _Template:
    raw: str


def _type_name(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _arity(name: str, values: tuple[Json, ...], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(values) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise _fail(f"{name} takes {wanted} arguments, {len(values)} given")


def _want(name: str, position: int, value: Json, kind: str) -> None:
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": _is_integer(value),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
    if not ok:
        raise _fail(
            f"The {_ordinal(position)} argument of {name} must be {_article(kind)} {kind}, "
            f"but was {_article(_type_name(value))} {_type_name(value)}: {_dump(value)}"
        )


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _is_integer(value: Json) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _dump(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _format(*values: Json) -> str:
    _arity("States.Format", values, 1, 10_000)
    template = values[0]
    if not isinstance(template, _Template):
        _want("States.Format", 1, template, "string")
        template = _Template(template.replace("\\", "\\\\"))
    args = list(values[1:])
    out: list[str] = []
    raw = template.raw
    i = 0
    used = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
            continue
        if raw.startswith("{}", i):
            if used >= len(args):
                raise _fail("States.Format has more {} placeholders than arguments")
            arg = args[used]
            out.append(_java_text(arg))
            used += 1
            i += 2
            continue
        out.append(char)
        i += 1
    if used != len(args):
        raise _fail(f"States.Format was given {len(args)} arguments for {used} {{}} placeholders")
    return "".join(out)


def _java_text(value: Json) -> str:
    """A value as States.Format writes it: Java's toString of the JSON value
    (recorded: ``{Arg1=1, Arg2=[]}`` for an object, strings bare)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_java_text(v) for v in value) + "]"
    return _dump(value)


def _string_to_json(*values: Json) -> Json:
    _arity("States.StringToJson", values, 1)
    _want("States.StringToJson", 1, values[0], "string")
    if not values[0].strip():
        return None  # recorded: "" and " " give null
    try:
        return json.loads(values[0])
    except ValueError:
        raise _fail(
            f"The 1st argument of States.StringToJson is not valid JSON: {values[0]}"
        ) from None


def _json_to_string(*values: Json) -> str:
    _arity("States.JsonToString", values, 1)
    return _dump(values[0])


def _array(*values: Json) -> list[Json]:
    return list(values)


def _array_partition(*values: Json) -> list[Json]:
    _arity("States.ArrayPartition", values, 2)
    array, size = values
    _want("States.ArrayPartition", 1, array, "array")
    _want("States.ArrayPartition", 2, size, "integer")
    if size <= 0:
        raise _fail(f"The chunk size of States.ArrayPartition must be positive, but was {size}")
    size = int(size)
    return [array[i : i + size] for i in range(0, len(array), size)]


def _array_contains(*values: Json) -> bool:
    _arity("States.ArrayContains", values, 2)
    _want("States.ArrayContains", 1, values[0], "array")
    needle = values[1]
    return any(_same(item, needle) for item in values[0])


def _same(a: Json, b: Json) -> bool:
    # JSON equality: 1 and 1.0 are the same number, true is not 1
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _array_range(*values: Json) -> list[Json]:
    _arity("States.ArrayRange", values, 3)
    for position, value in enumerate(values, 1):
        _want("States.ArrayRange", position, value, "integer")
    start, end, step = (int(v) for v in values)
    if step == 0:
        raise _fail("The step of States.ArrayRange must not be 0")
    stop = end + (1 if step > 0 else -1)
    count = max(0, len(range(start, stop, step)))
    if count > MAX_RANGE:
        raise _fail(f"States.ArrayRange makes at most {MAX_RANGE} items, not {count}")
    return list(range(start, stop, step))


def _array_get_item(*values: Json) -> Json:
    _arity("States.ArrayGetItem", values, 2)
    array, index = values
    _want("States.ArrayGetItem", 1, array, "array")
    _want("States.ArrayGetItem", 2, index, "integer")
    if not 0 <= index < len(array):
        raise _fail(
            f"The index {_dump(index)} is out of bounds for States.ArrayGetItem's array "
            f"of {len(array)} items"
        )
    return array[int(index)]


def _array_length(*values: Json) -> int:
    _arity("States.ArrayLength", values, 1)
    _want("States.ArrayLength", 1, values[0], "array")
    return len(values[0])


def _array_unique(*values: Json) -> list[Json]:
    _arity("States.ArrayUnique", values, 1)
    _want("States.ArrayUnique", 1, values[0], "array")
    out: list[Json] = []
    for item in values[0]:
        if not any(_same(item, kept) for kept in out):
            out.append(item)
    return out


def _base64_encode(*values: Json) -> str:
    _arity("States.Base64Encode", values, 1)
    _want("States.Base64Encode", 1, values[0], "string")
    if len(values[0]) > MAX_STRING:
        raise _fail(f"States.Base64Encode takes at most {MAX_STRING} characters")
    return base64.b64encode(values[0].encode()).decode()


def _base64_decode(*values: Json) -> str:
    _arity("States.Base64Decode", values, 1)
    _want("States.Base64Decode", 1, values[0], "string")
    if len(values[0]) > MAX_STRING:
        raise _fail(f"States.Base64Decode takes at most {MAX_STRING} characters")
    try:
        return base64.b64decode(values[0], validate=True).decode()
    except ValueError:
        raise _fail(f"The 1st argument of States.Base64Decode is not base64: {values[0]}") from None


_HASHES: dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,
    "SHA-1": hashlib.sha1,
    "SHA-256": hashlib.sha256,
    "SHA-384": hashlib.sha384,
    "SHA-512": hashlib.sha512,
}


def _hash(*values: Json) -> str:
    _arity("States.Hash", values, 2)
    data, algorithm = values
    if data is None:
        raise _fail("The 1st argument of States.Hash must not be null")
    text = data if isinstance(data, str) else _dump(data)
    if len(text) > MAX_STRING:
        raise _fail(f"States.Hash takes at most {MAX_STRING} characters")
    if algorithm not in _HASHES:
        raise _fail(
            f"The hash algorithm {_dump(algorithm)} is not supported by States.Hash; "
            f"use one of {', '.join(_HASHES)}"
        )
    return str(_HASHES[algorithm](text.encode()).hexdigest())


def _json_merge(*values: Json) -> Json:
    _arity("States.JsonMerge", values, 3)
    left, right, deep = values
    _want("States.JsonMerge", 1, left, "object")
    _want("States.JsonMerge", 2, right, "object")
    _want("States.JsonMerge", 3, deep, "boolean")
    if deep:
        raise _fail("States.JsonMerge supports shallow merges only: its 3rd argument must be false")
    return {**left, **right}


def _math_random(*values: Json) -> int:
    _arity("States.MathRandom", values, 2, 3)
    for position, value in enumerate(values, 1):
        _want("States.MathRandom", position, value, "integer")
    start, end = int(values[0]), int(values[1])
    if end <= start:
        raise _fail(
            f"The end of States.MathRandom ({end}) must be greater than its start ({start})"
        )
    generator = random.Random(int(values[2])) if len(values) == 3 else random
    return generator.randrange(start, end)


def _math_add(*values: Json) -> int:
    _arity("States.MathAdd", values, 2)
    for position, value in enumerate(values, 1):
        _want("States.MathAdd", position, value, "number")
    # AWS rounds each operand half up first (recorded: 1.49 + 1.5 = 3, -1.5 + 0 = -1)
    return sum(math.floor(value + 0.5) for value in values)


def _string_split(*values: Json) -> list[str]:
    _arity("States.StringSplit", values, 2)
    text, delimiters = values
    _want("States.StringSplit", 1, text, "string")
    _want("States.StringSplit", 2, delimiters, "string")
    # each character of the second argument is a delimiter; empty pieces are dropped
    pieces = [text]
    for delimiter in delimiters:
        pieces = [part for piece in pieces for part in piece.split(delimiter)]
    return [piece for piece in pieces if piece]


def _uuid(*values: Json) -> str:
    _arity("States.UUID", values, 0)
    return str(uuid.uuid4())


FUNCTIONS: dict[str, Callable[..., Json]] = {
    "States.Format": _format,
    "States.StringToJson": _string_to_json,
    "States.JsonToString": _json_to_string,
    "States.Array": _array,
    "States.ArrayPartition": _array_partition,
    "States.ArrayContains": _array_contains,
    "States.ArrayRange": _array_range,
    "States.ArrayGetItem": _array_get_item,
    "States.ArrayLength": _array_length,
    "States.ArrayUnique": _array_unique,
    "States.Base64Encode": _base64_encode,
    "States.Base64Decode": _base64_decode,
    "States.Hash": _hash,
    "States.JsonMerge": _json_merge,
    "States.MathRandom": _math_random,
    "States.MathAdd": _math_add,
    "States.StringSplit": _string_split,
    "States.UUID": _uuid,
}
