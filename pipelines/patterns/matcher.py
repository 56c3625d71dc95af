"""The multi-rule matcher: all rules at once, at close to the cost of one.

How an event is matched:

1. **Only named fields are read.** The rules' field names form a tree
   (``_Node``). ``match_json`` decodes the event with msgspec into structs
   generated from that tree, so the parser skips every field no rule names and
   builds nothing for it. ``match`` walks a dict along the same tree.
2. **Each sub-rule is indexed under one anchor field**, its most selective.
   A value probes its field's index (``FieldIndex``), which returns the
   sub-rules whose anchor it satisfies without visiting the others.
3. **Candidates have their other fields checked** (``field_holds``);
   ``exists: false`` fields never anchor, so absence is settled here.
4. **Arrays of objects**: when two fields of a candidate sub-rule (or an
   ``exists: false`` field) took values from inside arrays of objects, the
   candidate is confirmed by the reference evaluator, which applies
   event-ruler's array-consistency rule.

The index is rebuilt lazily after ``add`` or ``remove``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any, Union

import msgspec

from pipelines.errors import EventValidationError
from pipelines.event import parse_json
from pipelines.patterns.compiler import FieldTest, SubRule
from pipelines.patterns.conditions import (
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Prefix,
    Suffix,
    Wildcard,
)
from pipelines.patterns.evaluate import field_holds, subrule_matches
from pipelines.patterns.index import FieldIndex, Hits, Probe, dispatch, nothing

_SCALARS = (str, int, float, bool, type(None))
#: Deeper field names get no generated struct types (match_json parses fully).
_MAX_TYPED_DEPTH = 40
#: Deeper field names are reached through their spelled-out dotted paths only.
_MAX_TREE_DEPTH = 64
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


def _build_deep_tree(paths: set[str]) -> _Node:
    """A tree without the quadratic dotted spellings, for very deep field names.

    Each path is reachable by nested keys and by its full dotted name; mixed
    spellings of such deep names are not searched.
    """
    root = _Node()
    for path in sorted(paths):
        node = root
        for segment in path.split("."):
            node = node.children.setdefault(segment, _Node())
        node.leaf = path
        flat = root.children.setdefault(path, _Node())
        flat.leaf = path
    return root


class _Decoding:
    """msgspec struct types mirroring the tree: unnamed fields are skipped by the parser."""

    def __init__(self, root: _Node) -> None:
        self.types: dict[int, Any] = {}
        root_struct = self._struct(root)
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(root_struct)

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
        return struct

    def _type(self, node: _Node) -> Any:
        known = self.types.get(id(node))
        if known is not None:
            return known
        struct = node.struct if node.struct is not None else self._struct(node)
        union: Any = Union[(struct, list[Any], *_SCALARS)]
        for _ in range(_ARRAY_DEPTH):
            union = Union[(struct, list[union], *_SCALARS)]
        typed = union | msgspec.UnsetType
        self.types[id(node)] = typed
        return typed


@dataclass(slots=True)
class _SubRuleInfo:
    rule: str
    paths: frozenset[str]
    absent_paths: frozenset[str]
    subrule: SubRule
    #: The fields other than the anchor, checked for candidates.
    checks: tuple[FieldTest, ...]


def _condition_key(path: str, condition: Condition) -> tuple[Any, ...]:
    """What a condition shares with others when estimating how often it holds."""
    kind = type(condition)
    if kind is Exact:
        assert isinstance(condition, Exact)
        return (path, "exact", repr(condition.value))
    if kind is Numeric:
        assert isinstance(condition, Numeric)
        if condition.low == condition.high:
            return (path, "point", condition.low)
        return (path, "range")
    if kind in (Prefix, Suffix, EqualsIgnoreCase):
        return (path, kind.__name__, getattr(condition, "text", ""))
    if kind is Wildcard:
        assert isinstance(condition, Wildcard)
        return (path, "wildcard", condition.tokens)
    if kind is Cidr:
        assert isinstance(condition, Cidr)
        return (path, "cidr", condition.network)
    return (path, kind.__name__)


def _cost(key: tuple[Any, ...], condition: Condition, shared: int) -> float:
    """Estimated events-worth of hits: lower is more selective.

    Without statistics of the data, a condition is taken to hold about as
    often as the number of rules that share it; prefixes, wildcards, ranges,
    exists and anything-but hold ever more often.
    """
    kind = type(condition)
    if kind is Exact or kind is EqualsIgnoreCase or key[1] == "point":
        return shared
    if kind in (Prefix, Suffix, Cidr):
        return 2 * shared
    if kind is Wildcard:
        return 3 * shared
    if kind is Numeric:
        return 4 + shared / 10
    if kind is Exists:
        return 100 + shared
    return 1000 + shared  # anything-but: holds for nearly every value


def _choose_anchor(subrule: SubRule, shared: dict[tuple[Any, ...], int]) -> int | None:
    """The index of the field to index this sub-rule under, or None if none can be."""
    best: tuple[float, int, str] | None = None
    anchor = None
    for position, test in enumerate(subrule):
        if test.absent_ok:
            continue  # absence cannot be looked up
        cost = sum(
            _cost(key, condition, shared[key])
            for condition in test.conditions
            for key in [_condition_key(test.path, condition)]
        )
        # Ties go to the deeper field: detail.state says more than source.
        rank = (cost, -test.path.count("."), test.path)
        if best is None or rank < best:
            best, anchor = rank, position
    return anchor


class _Index:
    """The compiled form of all rules of a Matcher.

    Each sub-rule is indexed under one *anchor* field, its most selective
    one; an event's values find the candidate sub-rules through the anchors'
    indexes, and only candidates have their other fields checked. So rules
    whose anchor the event does not satisfy cost nothing, however many
    unselective fields (anything-but, a common source) they also name.
    """

    def __init__(self, rules: Mapping[str, tuple[SubRule, ...]]) -> None:
        shared: dict[tuple[Any, ...], int] = {}
        for subrules in rules.values():
            for subrule in subrules:
                for test in subrule:
                    for condition in test.conditions:
                        key = _condition_key(test.path, condition)
                        shared[key] = shared.get(key, 0) + 1
        self.subrules: list[_SubRuleInfo] = []
        self.unanchored: list[int] = []
        fields: dict[str, FieldIndex] = {}
        stored: set[str] = set()
        for name, subrules in rules.items():
            for subrule in subrules:
                sid = len(self.subrules)
                anchor = _choose_anchor(subrule, shared)
                if anchor is None:
                    self.unanchored.append(sid)
                else:
                    test = subrule[anchor]
                    index = fields.get(test.path)
                    if index is None:
                        index = fields[test.path] = FieldIndex(test.path)
                    for condition in test.conditions:
                        index.add(condition, sid)
                checks = tuple(t for position, t in enumerate(subrule) if position != anchor)
                stored.update(t.path for t in checks)
                self.subrules.append(
                    _SubRuleInfo(
                        rule=name,
                        paths=frozenset(t.path for t in subrule),
                        absent_paths=frozenset(t.path for t in subrule if t.absent_ok),
                        subrule=subrule,
                        checks=checks,
                    )
                )
        self.rule_of = [info.rule for info in self.subrules]
        self.one_subrule_per_rule = len(self.subrules) == len(rules)
        self.typed_probes = {path: index.typed_probes() for path, index in fields.items()}
        self.probes: dict[str, Probe] = {
            path: dispatch(*typed) for path, typed in self.typed_probes.items()
        }
        self.stored = stored
        paths = set(fields) | stored
        self.depth = max((path.count(".") + 1 for path in paths), default=0)
        deep = self.depth > _MAX_TREE_DEPTH
        self.root = _build_deep_tree(paths) if deep else _build_tree(paths)
        self._decoding: tuple[msgspec.json.Decoder[Any], Extractor] | None = None
        self._decoding_tried = False

    @property
    def decoding(self) -> tuple[msgspec.json.Decoder[Any], Extractor] | None:
        """The typed decoder and its generated extractor; None where they cannot be built.

        Field names msgspec cannot take (lone surrogates) or trees too deep for
        generated types leave ``match_json`` to parse fully instead.
        """
        if not self._decoding_tried:
            self._decoding_tried = True
            if self.depth <= _MAX_TYPED_DEPTH:
                try:
                    decoder = _Decoding(self.root).decoder
                    extractor = _generate_extractor(self.root, self.typed_probes, self.stored)
                except (RecursionError, UnicodeError, ValueError, TypeError, SyntaxError):
                    pass
                else:
                    self._decoding = (decoder, extractor)
        return self._decoding

    def finish(
        self,
        hits: Hits,
        values: dict[str, list[Any]],
        in_arrays: set[str],
        event: Any,
    ) -> list[str]:
        """Rule names matched, given the anchor hits so far and the collected values.

        Collected values of anchored fields are probed here; ``event`` (a dict,
        or a function returning one) is read only when array consistency must
        be checked.
        """
        probes = self.probes
        for path, found in values.items():
            probe = probes.get(path)
            if probe is not None:
                for value in found:
                    probe(value, hits)
        if self.unanchored:
            hits.extend(self.unanchored)
        if not hits:
            return []
        subrules = self.subrules
        matched = []
        for sid in sorted(set(hits)) if len(hits) > 1 else hits:
            info = subrules[sid]
            if in_arrays and (info.absent_paths & in_arrays or len(info.paths & in_arrays) > 1):
                # Values from arrays of objects: the reference evaluator applies
                # array consistency (and settles exists:false per element).
                if callable(event):
                    event = event()
                if not subrule_matches(info.subrule, event):
                    continue
            elif info.checks and not all(field_holds(t, values.get(t.path)) for t in info.checks):
                continue
            matched.append(sid)
        rule_of = self.rule_of
        if self.one_subrule_per_rule:
            return [rule_of[sid] for sid in matched]
        return list(dict.fromkeys(rule_of[sid] for sid in matched))


Extractor = Callable[[Any, Hits, dict[str, list[Any]], set[str]], None]
#: Past this many generated lines the generic walker is used instead.
_MAX_GENERATED_LINES = 20_000


def _generate_extractor(
    root: _Node, probes: dict[str, tuple[Probe, Probe, Probe]], stored: set[str]
) -> Extractor:
    """Straight-line code reading the decoded structs of this index.

    Scalars of anchored fields met at a struct position are probed at once;
    those of ``stored`` fields (needed to check candidates) are collected.
    Arrays (and anything past the unrolled types) go to the generic
    ``_walk``, which collects them for ``finish``.
    """
    namespace: dict[str, Any] = {"UNSET": msgspec.UNSET, "walk": _walk, "list": list}
    lines = ["def extract(v0, hits, values, in_arrays):"]
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
            leaf = child.leaf
            if leaf is None:
                continue
            if leaf in stored:
                # Collected for the candidate checks; finish() probes it too if it anchors.
                lines.append(f"{pad}    elif kind is not {struct_name}:")
                lines.append(f"{pad}        found = values.get({leaf!r})")
                lines.append(f"{pad}        if found is None:")
                lines.append(f"{pad}            values[{leaf!r}] = [{value}]")
                lines.append(f"{pad}        else:")
                lines.append(f"{pad}            found.append({value})")
            elif leaf in probes:
                on_string, on_number, on_other = probes[leaf]
                tests = (
                    (on_string, "kind is str"),
                    (on_number, "kind is float or kind is int"),
                    (on_other, f"kind is bool or {value} is None"),
                )
                for probe, test in tests:
                    if probe is not nothing:
                        lines.append(f"{pad}    elif {test}:")
                        lines.append(f"{pad}        {name('P', probe)}({value}, hits)")

    try:
        emit(root, "v0", 1)
    except OverflowError:
        return _generic_extractor(root)
    lines.append("    return None")
    exec(compile("\n".join(lines), "<pipelines-extractor>", "exec"), namespace)
    return namespace["extract"]  # type: ignore[no-any-return]


def _generic_extractor(root: _Node) -> Extractor:
    def extract(
        decoded: Any, hits: Hits, values: dict[str, list[Any]], in_arrays: set[str]
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

    ``inside`` is true below an array element that is an object or an array;
    such fields are noted in ``in_arrays`` so the matcher knows when array
    consistency matters.
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
    elif kind is list or kind is tuple:
        for element in value:
            element_kind = type(element)
            scalar = (
                element_kind is str
                or element_kind is int
                or element_kind is float
                or element_kind is bool
                or element is None
            )
            _walk(node, element, values, in_arrays, inside or not scalar)
    elif kind is dict or isinstance(value, Mapping):  # a struct is no Mapping
        for key, child in node.children.items():
            found_value = value.get(key, _MISSING)
            if found_value is not _MISSING:
                _walk(child, found_value, values, in_arrays, inside)
    elif isinstance(value, msgspec.Struct):
        unset = msgspec.UNSET
        for attr, child in node.struct_fields:
            found_value = getattr(value, attr)
            if found_value is not unset:
                _walk(child, found_value, values, in_arrays, inside)
    # Anything else (a number subclass, a set, ...) is not JSON data: no value.


_MISSING = object()


def parse_event_json(text: str | bytes) -> dict[str, Any]:
    """Parse event JSON into a dict, raising ``EventValidationError`` when it is not one."""
    try:
        event = parse_json(text)
    except (ValueError, RecursionError) as exc:
        raise EventValidationError("InvalidArgument", f"Event is not valid JSON: {exc}") from None
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
        try:
            _walk(index.root, event, values, in_arrays, False)
        except RecursionError:
            raise EventValidationError("InvalidArgument", "Event nests too deeply") from None
        return index.finish([], values, in_arrays, event)

    def match_json(self, text: str | bytes) -> list[str]:
        """Names of the rules matching an event given as JSON text.

        Raises ``EventValidationError`` if the text is not a JSON object.
        """
        index = self._compiled()
        decoding = index.decoding
        if decoding is None:
            return self.match(parse_event_json(text))
        decoder, extract = decoding
        try:
            decoded = decoder.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeError):
            # Not JSON, not an object, too deep, or a number msgspec cannot hold:
            # the slow path parses fully and reports what is wrong.
            return self.match(parse_event_json(text))
        hits: Hits = []
        values: dict[str, list[Any]] = {}
        in_arrays: set[str] = set()
        extract(decoded, hits, values, in_arrays)
        if in_arrays:
            return index.finish(hits, values, in_arrays, lambda: parse_event_json(text))
        return index.finish(hits, values, in_arrays, None)
