"""Payload templates: Parameters, ResultSelector, ItemSelector (JSONPath mode).

A template is JSON whose keys ending in ``.$`` take their value from a path
into the input (``$.x``), a path into the context object (``$$.x``) or an
intrinsic function (``States.Format(...)``); the key loses its ``.$``. Other
values are copied as they are, nested objects and arrays walked the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from plugins.states import intrinsics, paths
from plugins.states.errors import INTRINSIC_FAILURE, StateFault, StatesError

Json = Any


def dump(value: Json) -> str:
    """JSON as Step Functions writes it into history: compact, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def resolve(
    template: Json, data: Json, context: Json, variables: Mapping[str, Json] | None = None
) -> Json:
    """``template`` filled from ``data`` (the input), ``context`` (``$$``) and the
    workflow ``variables`` (``$name``)."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$") and isinstance(value, str):
                out[key[:-2]] = reference(value, key, data, context, variables)
            else:
                out[key] = resolve(value, data, context, variables)
        return out
    if isinstance(template, list):
        return [resolve(item, data, context, variables) for item in template]
    return template


def uses_context(template: Json) -> bool:
    """Whether a ``.$`` field of ``template`` reads the context object (``$$``,
    in a path or an intrinsic's argument): if none does, it is not built."""
    if isinstance(template, dict):
        return any(
            ("$$" in value)
            if key.endswith(".$") and isinstance(value, str)
            else uses_context(value)
            for key, value in template.items()
        )
    if isinstance(template, list):
        return any(uses_context(item) for item in template)
    return False


def reference(
    expression: str,
    field: str,
    data: Json,
    context: Json,
    variables: Mapping[str, Json] | None = None,
) -> Json:
    """The value of one ``.$`` field (or ErrorPath/CausePath): a path or an intrinsic."""
    if intrinsics.is_intrinsic(expression):
        try:
            return intrinsics.evaluate(expression, data, context, variables)
        except intrinsics.IntrinsicSyntaxError as error:
            raise StatesError(INTRINSIC_FAILURE, str(error)) from None
    parsed = paths.parse(expression)
    try:
        source = parsed.root(data, context, variables)
    except paths.PathError as error:
        raise StateFault(
            f"The JSONPath '{expression}' specified for the field '{field}' could not be "
            f"resolved: {error.message}"
        ) from None
    try:
        return parsed.find(source)
    except paths.PathError:
        raise StateFault(
            f"The JSONPath '{expression}' specified for the field '{field}' "
            f"could not be found in the input '{dump(source)}'"
        ) from None
