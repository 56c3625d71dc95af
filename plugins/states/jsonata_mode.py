"""JSONata mode: ``{% ... %}`` expressions evaluated with jsonata-python.

A string field whose whole value is ``{% expression %}`` is an expression; a
template (Arguments, Output, Assign, ItemSelector, a literal Items array) is
JSON whose strings may be expressions, walked as they are. Each expression
sees ``$states`` (``input``, ``result``, ``errorOutput``, ``context``, as the
state offers them), the workflow variables by name, and AWS's added
functions: ``$partition``, ``$range``, ``$hash``, ``$random``, ``$uuid`` and
``$parse``. ``$now()`` and ``$millis()`` read the time given to ``resolve``
(the execution's injected clock), as JSONata does once per evaluation.

An expression that fails is a ``QueryFailure`` naming the field as AWS's
EvaluationFailed event does (``Output/result``): it returned nothing
(undefined), returned something that is not JSON (a function), or threw (its
JSONata error code and message). The interpreter writes the event and fails
the state with States.QueryEvaluationError.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

# jsonata-python raises the process's recursion limit to 10,000 when it is
# imported (to match JavaScript's). The rest of the process relies on
# Python's own limit: deep patterns and events are refused by the
# RecursionError they raise, and a limit that high lets recursive code
# overflow the C stack instead. So the limit is put back.
_LIMIT = sys.getrecursionlimit()
import jsonata  # noqa: E402
from jsonata import jexception, utils  # noqa: E402
from jsonata.functions import Functions  # noqa: E402

sys.setrecursionlimit(_LIMIT)

from plugins.states.errors import QUERY_EVALUATION_ERROR  # noqa: E402

Json = Any

OPEN, CLOSE = "{%", "%}"
#: The moment an evaluation reads with ``$now()`` and ``$millis()``, in
#: milliseconds (the compiled expressions are shared: set per evaluation).
_NOW: contextvars.ContextVar[int | None] = contextvars.ContextVar("jsonata_now", default=None)


def is_expression(value: Json) -> bool:
    """Whether ``value`` is a ``{% ... %}`` expression (the whole string)."""
    return (
        isinstance(value, str)
        and len(value) >= 4
        and value.startswith(OPEN)
        and value.endswith(CLOSE)
    )


def body(text: str) -> str:
    """The expression inside ``{% ... %}``, without the spaces around it."""
    return text[2:-2].strip()


class QueryFailure(Exception):
    """A JSONata state's evaluation that failed (States.QueryEvaluationError):
    ``message`` as AWS words it after the state's prefix, ``location`` the field
    (None when AWS names none, as for a Map whose input is not an array)."""

    def __init__(
        self, message: str, location: str | None = None, *, after_entered: bool = False
    ) -> None:
        self.location = location
        #: whether AWS's EvaluationFailed event points at the state's entered event (a Wait's
        #: Timestamp that is not one) rather than at the event before it (everything else)
        self.after_entered = after_entered
        self.error = QUERY_EVALUATION_ERROR
        self.message = message
        super().__init__(message)


def expression_failure(expression: str, location: str, reason: str) -> QueryFailure:
    """An expression's failure: ``The JSONata expression '...' specified for the field ...``."""
    return QueryFailure(
        f"The JSONata expression '{expression}' specified for the field '{location}' {reason}",
        location,
    )


def syntax_problem(text: str) -> str | None:
    """Why the expression in ``text`` (``{% ... %}``) does not parse, or None."""
    try:
        _compile(body(text))
    except jexception.JException as error:
        return f"{error.error}: {error}"
    except Exception as error:  # jsonata-python raises plain errors on some inputs
        return str(error)
    return None


@functools.lru_cache(maxsize=2048)
def _compile(expression: str) -> jsonata.Jsonata:
    compiled = jsonata.Jsonata(expression)
    compiled.set_output_convert_nulls(False)
    for name, function in _FUNCTIONS.items():
        compiled.register_lambda(name, function)
    return compiled


def evaluate(
    text: str,
    location: str,
    states: Mapping[str, Json],
    variables: Mapping[str, Json],
    now: float | None = None,
) -> Json:
    """The value of the expression ``text`` (``{% ... %}``) for the field at
    ``location``; ``now`` (epoch seconds) is what ``$now()`` and ``$millis()``
    read (the wall clock when None)."""
    if now is not None:
        moment = _NOW.set(int(now * 1000))
        try:
            return evaluate(text, location, states, variables)
        finally:
            _NOW.reset(moment)
    expression = body(text)
    bindings: dict[str, Json] = {
        name: utils.Utils.NULL_VALUE if value is None else value
        for name, value in variables.items()
    }
    bindings["states"] = dict(states)
    try:
        result = _compile(expression).evaluate(None, bindings)
    except jexception.JException as error:
        raise expression_failure(
            expression, location, f"threw an error during evaluation. {error.error}: {error}"
        ) from None
    except QueryFailure:
        raise
    except Exception as error:
        raise expression_failure(
            expression, location, f"threw an error during evaluation. {error}"
        ) from None
    if result is None:
        raise expression_failure(expression, location, "returned nothing (undefined).")
    try:
        return _plain(result)
    except _NotJson:
        raise expression_failure(
            expression, location, "returned an unsupported result type."
        ) from None


class _NotJson(Exception):
    pass


def _plain(value: Json) -> Json:
    """A JSONata result as plain JSON values (its null and sequences undone); raises
    ``_NotJson`` for a function or a number JSON cannot hold."""
    if value is utils.Utils.NULL_VALUE or isinstance(value, utils.Utils.NullValue):
        return None
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _NotJson()
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if value is None:
        # inside a value, None is the input's own JSON null (undefined never lands there)
        return None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    raise _NotJson()


def resolve(
    template: Json,
    location: str,
    states: Mapping[str, Json],
    variables: Mapping[str, Json],
    now: float | None = None,
) -> Json:
    """``template`` with each ``{% %}`` string replaced by its value; ``location`` is the
    field's name (``Output``), extended by keys and indexes as AWS names them; ``now``
    as ``evaluate`` takes it."""
    if is_expression(template):
        return evaluate(template, location, states, variables, now)
    if isinstance(template, dict):
        return {
            key: resolve(value, f"{location}/{key}", states, variables, now)
            for key, value in template.items()
        }
    if isinstance(template, list):
        return [
            resolve(item, f"{location}/{index}", states, variables, now)
            for index, item in enumerate(template)
        ]
    return template


def expressions(template: Json, location: str) -> list[tuple[str, str]]:
    """Every ``{% %}`` string in ``template`` with its JSON pointer (for validation)."""
    if is_expression(template):
        return [(template, location)]
    out: list[tuple[str, str]] = []
    if isinstance(template, dict):
        for key, value in template.items():
            key_text = str(key).replace("~", "~0").replace("/", "~1")
            out += expressions(value, f"{location}/{key_text}")
    elif isinstance(template, list):
        for index, item in enumerate(template):
            out += expressions(item, f"{location}/{index}")
    return out


# -- AWS's added functions ------------------------------------------------------------


def _error(code: str, message: str) -> jexception.JException:
    error = jexception.JException(code, -1)
    error.args = (message,)
    return error


def _is_integer(value: Json) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _partition(array: Json = None, size: Json = None) -> list[Json]:
    """``$partition(array, size)``: the array in chunks of ``size`` (the last may be shorter)."""
    if not isinstance(array, list):
        raise _error("D3000", "$partition expects an array as its first argument")
    if not _is_integer(size) or size <= 0:
        raise _error("D3000", "$partition expects a positive integer as its chunk size")
    step = int(size)
    return [list(array[start : start + step]) for start in range(0, len(array), step)]


def _range(start: Json = None, end: Json = None, step: Json = None) -> list[Json]:
    """``$range(start, end, step)``: integers from ``start`` to ``end`` (inclusive)."""
    if not all(_is_integer(v) for v in (start, end, step)) or step == 0:
        raise _error("D3000", "$range expects integer start, end and a non-zero step")
    values = list(range(int(start), int(end) + (1 if step > 0 else -1), int(step)))
    if len(values) > 1000:
        raise _error("D3000", "$range produces at most 1000 values")
    # a sequence, as JSONata's own functions return: a single value stands alone
    sequence: list[Json] = utils.Utils.create_sequence()
    sequence.extend(values)
    return sequence


_HASHES = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}


def _hash(value: Json = None, algorithm: Json = None) -> str:
    """``$hash(value, algorithm)``: the hex digest of a string (MD5, SHA-1, SHA-256 ...)."""
    if not isinstance(value, str):
        raise _error("D3000", "$hash expects a string as its first argument")
    if algorithm not in _HASHES:
        raise _error(
            "D3000", f"$hash's algorithm must be one of {', '.join(_HASHES)}, not {algorithm}"
        )
    return hashlib.new(_HASHES[algorithm], value.encode("utf-8")).hexdigest()


def _random(seed: Json = None) -> float:
    """``$random([seed])``: a number in [0, 1), the same for the same seed."""
    if seed is None:
        return random.random()
    if not _is_integer(seed):
        raise _error("D3000", "$random expects an integer seed")
    return random.Random(int(seed)).random()


def _millis() -> int:
    """``$millis()``: the evaluation's moment (``evaluate``'s ``now``) in milliseconds."""
    moment = _NOW.get()
    return moment if moment is not None else int(time.time() * 1000)


def _now(picture: Json = None, timezone: Json = None) -> Json:
    """``$now([picture [, timezone]])``: the evaluation's moment as ISO 8601 (or ``picture``)."""
    return Functions.datetime_from_millis(_millis(), picture, timezone)


def _uuid() -> str:
    """``$uuid()``: a version 4 UUID."""
    return str(uuid.uuid4())


def _parse(text: Json = None) -> Json:
    """``$parse(text)``: the JSON value ``text`` holds."""
    if not isinstance(text, str):
        raise _error("D3000", "$parse expects a string")
    try:
        return json.loads(text)
    except ValueError as error:
        raise _error("D3000", f"$parse could not read JSON: {error}") from None


_FUNCTIONS = {
    "partition": _partition,
    "range": _range,
    "hash": _hash,
    "random": _random,
    "uuid": _uuid,
    "parse": _parse,
    "now": _now,
    "millis": _millis,
}
