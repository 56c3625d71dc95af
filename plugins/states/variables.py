"""Workflow variables: what ``Assign`` binds and ``$name`` reads, in both query languages.

A ``Scope`` holds the variables one thread of an execution sees. The top
level has one scope for the whole execution; each Parallel branch and each
Map iteration runs in a child scope that sees the outer variables as they
were when the branch started, read-only: it may bind new names of its own,
which end with it and never reach the outer scope (AWS: an inner workflow
passes data out through its output, not through variables).

A state's ``Assign`` is evaluated wholly against the values from before the
state ran (a state never sees its own assignments), and its bindings take
effect once the state is done, so the next state sees them. The history's
StateExited event records them as ``assignedVariables``: each value as
compact JSON text.

Names follow the rules of the developer guide ("Passing data between states
with variables"): a Unicode identifier (ID_Start, then ID_Continue), at most
80 characters. Sizes too: one variable's value at most 256 KiB, one Assign's
values together at most 256 KiB, everything an execution holds at most
10 MiB. The guide does not word the failures; ours fail the state with
States.DataLimitExceeded (AWS's name for a payload over a limit) and say
which variable and which limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from plugins.states.errors import DATA_LIMIT_EXCEEDED, StatesError
from plugins.states.templates import dump

Json = Any

MAX_NAME_LENGTH = 80
#: One variable's value, as JSON text in UTF-8.
MAX_VARIABLE_BYTES = 256 * 1024
#: All values one Assign field binds, together.
MAX_ASSIGN_BYTES = 256 * 1024
#: Every variable an execution holds at once (the top level and the running branches).
MAX_EXECUTION_BYTES = 10 * 1024 * 1024

_NAME = re.compile(r"[^\W\d]\w*\Z")
#: ``$states`` is JSONata mode's reserved variable.
RESERVED = frozenset({"states"})


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a variable's name, or None when it can."""
    if not name:
        return "A variable name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"The variable name '{name}' is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME.match(name):
        return (
            f"The variable name '{name}' is not valid: it must start with a letter or '_' "
            "and go on with letters, digits or '_'"
        )
    if name in RESERVED:
        return f"The variable name '{name}' is reserved"
    return None


def size(value: Json) -> int:
    return len(dump(value).encode("utf-8", "surrogatepass"))


class Scope(Mapping[str, Json]):
    """The variables one thread of an execution sees: its own and, read-only, its outer ones."""

    def __init__(
        self, own: Mapping[str, Json] | None = None, outer: Mapping[str, Json] | None = None
    ) -> None:
        self.own: dict[str, Json] = dict(own or {})
        self.outer: dict[str, Json] = dict(outer or {})

    def __getitem__(self, name: str) -> Json:
        if name in self.own:
            return self.own[name]
        return self.outer[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.own
        yield from (name for name in self.outer if name not in self.own)

    def __len__(self) -> int:
        return len(self.own.keys() | self.outer.keys())

    def child(self) -> Scope:
        """A branch's or an iteration's scope: everything seen here becomes its outer scope."""
        return Scope(outer=dict(self))

    def bind(self, values: Mapping[str, Json]) -> None:
        """Bind ``values`` (one state's Assign, already evaluated); raises ``StatesError``
        when a limit is passed or a name belongs to an outer scope."""
        total = 0
        for name, value in values.items():
            if name in self.outer:
                raise StatesError(
                    "States.Runtime",
                    f"The variable '{name}' belongs to an outer scope: a Parallel branch or "
                    "a Map iteration cannot assign it",
                )
            bytes_ = size(value)
            if bytes_ > MAX_VARIABLE_BYTES:
                raise StatesError(
                    DATA_LIMIT_EXCEEDED,
                    f"The value assigned to the variable '{name}' is {bytes_} bytes, over the "
                    f"limit of {MAX_VARIABLE_BYTES} bytes for one variable",
                )
            total += bytes_
        if total > MAX_ASSIGN_BYTES:
            raise StatesError(
                DATA_LIMIT_EXCEEDED,
                f"The values of one Assign are {total} bytes together, over the limit of "
                f"{MAX_ASSIGN_BYTES} bytes",
            )
        held = sum(size(value) for name, value in self.items() if name not in values)
        if held + total > MAX_EXECUTION_BYTES:
            raise StatesError(
                DATA_LIMIT_EXCEEDED,
                f"The variables would hold {held + total} bytes, over the limit of "
                f"{MAX_EXECUTION_BYTES} bytes for an execution",
            )
        self.own.update(values)


def assigned_details(values: Mapping[str, Json]) -> dict[str, Json]:
    """A StateExited event's ``assignedVariables`` and ``assignedVariablesDetails``."""
    return {
        "assignedVariables": {name: dump(value) for name, value in values.items()},
        "assignedVariablesDetails": {"truncated": False},
    }
