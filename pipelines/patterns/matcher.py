"""The multi-rule matcher: all rules at once, at close to the cost of one.

How an event is matched:

1. **Only named fields are read.** The rules' field names form a tree
   (``_Node``). ``match_json`` decodes the event with msgspec into structs
   generated from that tree, so the parser skips every field no rule names and
   builds nothing for it. ``match`` walks a dict along the same tree.
2. **Each value probes its field's index** (``FieldIndex``), which returns the
   slots (sub-rule, field bit) the value satisfies without visiting the
   others.
3. **Bits are OR-ed per sub-rule**; a sub-rule whose bits are all set matches.
   ``exists: false`` slots are credited for fields the event lacks.
4. **Arrays of objects**: when two fields of a candidate sub-rule (or an
   ``exists: false`` field) took values from inside arrays of objects, the
   candidate is confirmed by the reference evaluator, which applies
   event-ruler's array-consistency rule.

The index is rebuilt lazily after ``add`` or ``remove``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any, Union

import msgspec
import orjson

from pipelines.errors import EventValidationError
from pipelines.patterns.compiler import SubRule
from pipelines.patterns.evaluate import subrule_matches
from pipelines.patterns.index import FieldIndex, Hits, Probe, Slot

_SCALARS = (str, int, float, bool, type(None))
#: How many levels of arrays-in-arrays the generated types unroll; deeper
#: arrays decode as plain lists and dicts, which the walker also handles.
_ARRAY_DEPTH = 5
_names = count()


class _Node:
    """A point in the tree of field names the rules use."""

    __slots__ = ("children", "leaf", "struct_fields")

    def __init__(self) -> None:
        self.leaf: str | None = None
        self.children: dict[str, _Node] = {}
        # (attribute, child) pairs of the generated struct, set by _Decoding.
        self.struct_fields: tuple[tuple[str, _Node], ...] = ()


def _build_tree(paths: set[str]) -> _Node:
    """The tree of every way an event may spell each path.

    A field ``a.b.c`` may come from keys ``a``/``b``/``c``, ``a.b``/``c``,
    ``a``/``b.c`` or ``a.b.c``, so each node has a child for every run of
    the remaining segments.
    """
    nodes: dict[tuple[str, ...], _Node] = {(): _Node()}
    for path in sorted(paths):
        segments = tuple(path.split("."))
        for start in range(len(segments)):
            for end in range(start + 1, len(segments) + 1):
                parent = nodes.setdefault(segments[:start], _Node())
                child = nodes.setdefault(segments[:end], _Node())
                parent.children[".".join(segments[start:end])] = child
        nodes[segments].leaf = path
    return nodes[()]


class _Decoding:
    """msgspec struct types mirroring the tree: unnamed fields are skipped by the parser."""

    def __init__(self, root: _Node) -> None:
        self.types: dict[int, Any] = {}
        self.struct_types: set[type] = set()
        root_struct = self._struct(root)
        self.decoder = msgspec.json.Decoder(root_struct)

    def _struct(self, node: _Node) -> type:
        fields = []
        attrs = []
        rename = {}
        for number, (key, child) in enumerate(sorted(node.children.items())):
            attr = f"f{number}"
            fields.append((attr, self._type(child), msgspec.UNSET))
            rename[attr] = key
            attrs.append((attr, child))
        struct = msgspec.defstruct(f"PipelinesEventNode{next(_names)}", fields, rename=rename)
        node.struct_fields = tuple(attrs)
        self.struct_types.add(struct)
        return struct

    def _type(self, node: _Node) -> Any:
        known = self.types.get(id(node))
        if known is not None:
            return known
        struct = self._struct(node)
        union: Any = Union[(struct, list[Any], *_SCALARS)]  # noqa: UP007 - built at run time
        for _ in range(_ARRAY_DEPTH):
            union = Union[(struct, list[union], *_SCALARS)]  # noqa: UP007
        typed = Union[union, msgspec.UnsetType]  # noqa: UP007
        self.types[id(node)] = typed
        return typed


@dataclass(slots=True)
class _SubRuleInfo:
    rule: str
    full: int
    paths: frozenset[str]
    absent_paths: frozenset[str]
    subrule: SubRule


class _Index:
    """The compiled form of all rules of a Matcher."""

    def __init__(self, rules: Mapping[str, tuple[SubRule, ...]]) -> None:
        self.subrules: list[_SubRuleInfo] = []
        fields: dict[str, FieldIndex] = {}
        for name, subrules in rules.items():
            for subrule in subrules:
                sid = len(self.subrules)
                for bit_number, test in enumerate(subrule):
                    index = fields.get(test.path)
                    if index is None:
                        index = fields[test.path] = FieldIndex(test.path)
                    slot: Slot = (sid, 1 << bit_number)
                    for condition in test.conditions:
                        index.add(condition, slot)
                self.subrules.append(
                    _SubRuleInfo(
                        rule=name,
                        full=(1 << len(subrule)) - 1,
                        paths=frozenset(t.path for t in subrule),
                        absent_paths=frozenset(t.path for t in subrule if t.absent_ok),
                        subrule=subrule,
                    )
                )
        self.probes: dict[str, Probe] = {path: index.probe() for path, index in fields.items()}
        self.absent: list[tuple[str, tuple[Slot, ...]]] = [
            (path, tuple(index.absent)) for path, index in fields.items() if index.absent
        ]
        self.root = _build_tree(set(fields))
        self._decoding: _Decoding | None = None

    @property
    def decoder(self) -> msgspec.json.Decoder[Any]:
        if self._decoding is None:
            self._decoding = _Decoding(self.root)
        return self._decoding.decoder

    def match(self, values: dict[str, list[Any]], in_arrays: set[str], event: Any) -> list[str]:
        """Rule names matched by the extracted values (``event`` is for array checks)."""
        hits: Hits = []
        probes = self.probes
        for path, found in values.items():
            probe = probes[path]
            for value in found:
                probe(value, hits)
        for path, slots in self.absent:
            if path not in values or path in in_arrays:
                hits.extend(slots)
        if not hits:
            return []
        masks: dict[int, int] = {}
        for sid, bit in hits:
            masks[sid] = masks.get(sid, 0) | bit
        subrules = self.subrules
        matched = [sid for sid, mask in masks.items() if mask == subrules[sid].full]
        if in_arrays:
            matched = [sid for sid in matched if self._confirm(subrules[sid], in_arrays, event)]
        matched.sort()
        return list(dict.fromkeys(subrules[sid].rule for sid in matched))

    @staticmethod
    def _confirm(info: _SubRuleInfo, in_arrays: set[str], event: Any) -> bool:
        if not (info.absent_paths & in_arrays) and len(info.paths & in_arrays) < 2:
            return True  # consistency cannot fail with fewer than two array fields
        if callable(event):
            event = event()
        return subrule_matches(info.subrule, event)


def _walk(
    node: _Node,
    value: Any,
    values: dict[str, list[Any]],
    in_arrays: set[str],
    inside: bool,
) -> None:
    """Collect the leaf values of every named field below ``node``.

    ``inside`` is true below an array of objects; such fields are noted in
    ``in_arrays`` so the matcher knows when array consistency matters.
    """
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        leaf = node.leaf
        if leaf is not None:
            found = values.get(leaf)
            if found is None:
                values[leaf] = [value]
            else:
                found.append(value)
            if inside:
                in_arrays.add(leaf)
    elif kind is list:
        for element in value:
            element_kind = type(element)
            if element_kind is list:
                _walk(node, element, values, in_arrays, inside)
            elif element_kind is dict or isinstance(element, msgspec.Struct):
                _walk(node, element, values, in_arrays, True)
            else:
                _walk(node, element, values, in_arrays, inside)
    elif kind is dict:
        for key, child in node.children.items():
            found_value = value.get(key, _MISSING)
            if found_value is not _MISSING:
                _walk(child, found_value, values, in_arrays, inside)
    else:
        unset = msgspec.UNSET
        for attr, child in node.struct_fields:
            found_value = getattr(value, attr)
            if found_value is not unset:
                _walk(child, found_value, values, in_arrays, inside)


_MISSING = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_event_json(text: str | bytes) -> dict[str, Any]:
    """Parse event JSON into a dict, raising ``EventValidationError`` when it is not one."""
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits and very deep nesting; json does not.
        try:
            event = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            raise EventValidationError(
                "InvalidArgument", f"Event is not valid JSON: {exc}"
            ) from None
    if not isinstance(event, dict):
        raise EventValidationError("InvalidArgument", "Event must be a JSON object")
    return event


class Matcher:
    """Many named event patterns, matched against an event all at once.

    ``add(name, pattern)`` adds or replaces a rule; ``match(event)`` and
    ``match_json(text)`` return the names of all matching rules in the order
    they were added.
    """

    def __init__(self, *, max_pattern_length: int | None = None) -> None:
        from pipelines.patterns import DEFAULT_MAX_PATTERN_LENGTH

        self.max_pattern_length = max_pattern_length or DEFAULT_MAX_PATTERN_LENGTH
        self._rules: dict[str, tuple[SubRule, ...]] = {}
        self._index: _Index | None = None

    def add(self, name: str, pattern: Any) -> None:
        """Add the rule ``name`` (replacing one of that name); raises ``PatternError``."""
        from pipelines.patterns import Pattern, compile_pattern

        compiled = (
            pattern
            if isinstance(pattern, Pattern)
            else compile_pattern(pattern, max_length=self.max_pattern_length)
        )
        self._rules.pop(name, None)
        self._rules[name] = compiled.subrules
        self._index = None

    def remove(self, name: str) -> bool:
        """Remove the rule ``name``; False if there was none."""
        if self._rules.pop(name, None) is None:
            return False
        self._index = None
        return True

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def _compiled(self) -> _Index:
        if self._index is None:
            self._index = _Index(self._rules)
        return self._index

    def match(self, event: Mapping[str, Any]) -> list[str]:
        """Names of the rules matching an event given as a dict."""
        index = self._compiled()
        values: dict[str, list[Any]] = {}
        in_arrays: set[str] = set()
        _walk(index.root, dict(event) if type(event) is not dict else event, values, in_arrays, False)
        return index.match(values, in_arrays, event)

    def match_json(self, text: str | bytes) -> list[str]:
        """Names of the rules matching an event given as JSON text.

        Raises ``EventValidationError`` if the text is not a JSON object.
        """
        index = self._compiled()
        try:
            decoded = index.decoder.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # Not JSON, not an object, or a number msgspec cannot hold:
            # the slow path parses fully and reports what is wrong.
            return self.match(parse_event_json(text))
        values: dict[str, list[Any]] = {}
        in_arrays: set[str] = set()
        _walk(index.root, decoded, values, in_arrays, False)
        return index.match(values, in_arrays, lambda: parse_event_json(text))
