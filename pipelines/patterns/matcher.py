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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any, Union

import msgspec
import orjson

from pipelines.errors import EventValidationError
from pipelines.patterns.compiler import SubRule
from pipelines.patterns.evaluate import subrule_matches
from pipelines.patterns.index import FieldIndex, Hits, Probe, Slot, nothing

_SCALARS = (str, int, float, bool, type(None))
#: How many levels of arrays-in-arrays the generated types unroll; deeper
#: arrays decode as plain lists and dicts, which the walker also handles.
_ARRAY_DEPTH = 5
_names = count()


class _Node:
    """A point in the tree of field names the rules use."""

    __slots__ = ("children", "leaf", "struct", "struct_fields")

    def __init__(self) -> None:
        self.leaf: str | None = None
        self.children: dict[str, _Node] = {}
        # The generated struct type and its (attribute, child) pairs, set by _Decoding.
        self.struct: type | None = None
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
        node.struct = struct
        node.struct_fields = tuple(attrs)
        self.struct_types.add(struct)
        return struct

    def _type(self, node: _Node) -> Any:
        known = self.types.get(id(node))
        if known is not None:
            return known
        struct = node.struct if node.struct is not None else self._struct(node)
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
        self.rule_of = [info.rule for info in self.subrules]
        self.full = [info.full for info in self.subrules]
        self.single_field = all(info.full == 1 for info in self.subrules)
        self.one_subrule_per_rule = len(self.subrules) == len(rules)
        self.typed_probes = {path: index.typed_probes() for path, index in fields.items()}
        self.probes: dict[str, Probe] = {path: index.probe() for path, index in fields.items()}
        self.absent: list[tuple[str, tuple[Slot, ...]]] = [
            (path, tuple(index.absent)) for path, index in fields.items() if index.absent
        ]
        self.root = _build_tree(set(fields))
        self._decoding: tuple[msgspec.json.Decoder[Any], Extractor] | None = None

    @property
    def decoding(self) -> tuple[msgspec.json.Decoder[Any], Extractor]:
        """The typed decoder and the extractor generated for its structs."""
        if self._decoding is None:
            decoder = _Decoding(self.root).decoder
            watched = {path for path, _ in self.absent}
            extractor = _generate_extractor(self.root, self.typed_probes, watched)
            self._decoding = (decoder, extractor)
        return self._decoding

    def finish(
        self,
        hits: Hits,
        values: dict[str, list[Any]],
        present: set[str],
        in_arrays: set[str],
        event: Any,
    ) -> list[str]:
        """Rule names matched, given the hits so far and the values still to probe.

        ``event`` (a dict, or a function returning one) is read only when array
        consistency must be checked.
        """
        probes = self.probes
        for path, found in values.items():
            probe = probes[path]
            for value in found:
                probe(value, hits)
        for path, slots in self.absent:
            if (path not in values and path not in present) or path in in_arrays:
                hits.extend(slots)
        if not hits:
            return []
        if self.single_field and not in_arrays:
            matched = sorted({sid for sid, _ in hits})
        else:
            masks: dict[int, int] = {}
            for sid, bit in hits:
                masks[sid] = masks.get(sid, 0) | bit
            full = self.full
            matched = sorted(sid for sid, mask in masks.items() if mask == full[sid])
            if in_arrays:
                matched = [sid for sid in matched if self._confirm(sid, in_arrays, event)]
        rule_of = self.rule_of
        if self.one_subrule_per_rule:
            return [rule_of[sid] for sid in matched]
        return list(dict.fromkeys(rule_of[sid] for sid in matched))

    def _confirm(self, sid: int, in_arrays: set[str], event: Any) -> bool:
        info = self.subrules[sid]
        if not (info.absent_paths & in_arrays) and len(info.paths & in_arrays) < 2:
            return True  # consistency cannot fail with fewer than two array fields
        if callable(event):
            event = event()
        return subrule_matches(info.subrule, event)


Extractor = Callable[[Any, Hits, set[str], dict[str, list[Any]], set[str]], None]
#: Past this many generated lines the generic walker is used instead.
_MAX_GENERATED_LINES = 20_000


def _generate_extractor(
    root: _Node, probes: dict[str, tuple[Probe, Probe, Probe]], watched: set[str]
) -> Extractor:
    """Straight-line code reading the decoded structs of this index.

    Scalars met at a struct position are probed at once; arrays (and anything
    past the unrolled types) go to the generic ``_walk``, which collects them
    for ``finish``. ``watched`` are the fields with ``exists: false`` rules,
    whose presence is recorded.
    """
    namespace: dict[str, Any] = {"UNSET": msgspec.UNSET, "walk": _walk, "list": list}
    lines = ["def extract(v0, hits, present, values, in_arrays):"]
    counter = count(1)

    def name(prefix: str, value: Any) -> str:
        key = f"{prefix}{len(namespace)}"
        namespace[key] = value
        return key

    def emit(node: _Node, var: str, depth: int) -> None:
        pad = "    " * depth
        for attr, child in node.struct_fields:
            if len(lines) > _MAX_GENERATED_LINES:
                raise OverflowError
            value = f"v{next(counter)}"
            node_name = name("N", child)
            struct_name = name("S", child.struct)
            lines.append(f"{pad}{value} = {var}.{attr}")
            lines.append(f"{pad}if {value} is not UNSET:")
            lines.append(f"{pad}    kind = type({value})")
            lines.append(f"{pad}    if kind is list:")
            lines.append(f"{pad}        walk({node_name}, {value}, values, in_arrays, False)")
            if child.struct_fields:
                lines.append(f"{pad}    elif kind is {struct_name}:")
                emit(child, value, depth + 2)
            if child.leaf is not None:
                on_string, on_number, on_other = probes[child.leaf]
                tests = (
                    (on_string, "kind is str"),
                    (on_number, "kind is float or kind is int"),
                    (on_other, f"kind is bool or {value} is None"),
                )
                for probe, test in tests:
                    if probe is not nothing:
                        lines.append(f"{pad}    elif {test}:")
                        lines.append(f"{pad}        {name('P', probe)}({value}, hits)")
                    if child.leaf in watched:
                        if probe is nothing:
                            lines.append(f"{pad}    elif {test}:")
                        lines.append(f"{pad}        present.add({child.leaf!r})")

    try:
        emit(root, "v0", 1)
    except OverflowError:
        return _generic_extractor(root)
    lines.append("    return None")
    exec(compile("\n".join(lines), "<pipelines-extractor>", "exec"), namespace)  # noqa: S102
    return namespace["extract"]  # type: ignore[no-any-return]


def _generic_extractor(root: _Node) -> Extractor:
    def extract(
        decoded: Any,
        hits: Hits,
        present: set[str],
        values: dict[str, list[Any]],
        in_arrays: set[str],
    ) -> None:
        _walk(root, decoded, values, in_arrays, False)

    return extract


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
        _walk(index.root, event if type(event) is dict else dict(event), values, in_arrays, False)
        return index.finish([], values, _NO_PATHS, in_arrays, event)

    def match_json(self, text: str | bytes) -> list[str]:
        """Names of the rules matching an event given as JSON text.

        Raises ``EventValidationError`` if the text is not a JSON object.
        """
        index = self._compiled()
        decoder, extract = index.decoding
        try:
            decoded = decoder.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            # Not JSON, not an object, too deep, or a number msgspec cannot hold:
            # the slow path parses fully and reports what is wrong.
            return self.match(parse_event_json(text))
        hits: Hits = []
        values: dict[str, list[Any]] = {}
        present: set[str] = set()
        in_arrays: set[str] = set()
        extract(decoded, hits, present, values, in_arrays)
        if in_arrays:
            return index.finish(hits, values, present, in_arrays, lambda: parse_event_json(text))
        return index.finish(hits, values, present, in_arrays, None)


_NO_PATHS: set[str] = set()
