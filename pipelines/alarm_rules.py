"""Composite alarm rules: the ``AlarmRule`` expressions of CloudWatch's
PutCompositeAlarm, parsed, evaluated against alarm states, and checked for
composite alarms that depend on each other in a loop.

Grammar::

    rule      := or_expr END
    or_expr   := and_expr { "OR" and_expr }
    and_expr  := not_expr { "AND" not_expr }
    not_expr  := { "NOT" } primary
    primary   := "TRUE" | "FALSE" | "(" or_expr ")" | state "(" alarm ")"
    state     := "ALARM" | "OK" | "INSUFFICIENT_DATA"
    alarm     := '"' characters other than '"' '"'
               | characters other than '(', ')' and '"'   (surrounding blanks dropped)

CloudWatch documents the functions, TRUE and FALSE, the three operators,
parentheses, that an alarm is named by its name or its ARN with or without
double quotes, and a rule of 1 to 10240 characters. What it leaves unsaid is
settled here as follows:

* Precedence is the usual boolean one: NOT binds tighter than AND, AND tighter
  than OR (CloudWatch shows only examples). AND and OR are associative, so how
  a run of one of them groups does not matter.
* Keywords are upper case only; ``alarm(x)`` or ``and`` is an error that says so.
* Blanks (any whitespace) may separate any two tokens, including a function
  name and its ``(``.
* A quoted name has no escapes: it ends at the next ``"``, so it may hold
  ``(``, ``)`` and blanks but not ``"``. An unquoted name runs to the next
  ``)``; it may hold inner blanks but not ``(`` or ``"``.
* ``arn:PARTITION:cloudwatch:REGION:ACCOUNT:alarm:NAME`` refers to the alarm
  NAME; region and account are not checked (one local account). Any other name
  beginning ``arn:`` is refused rather than taken as a literal name.
* Group parentheses nest at most ``MAX_NESTING`` deep, which keeps parsing and
  evaluation within Python's recursion limit.
* CloudWatch's caps of 100 child alarms and 500 elements are not enforced.

A name missing from the states given to ``AlarmRule.evaluate`` counts as
INSUFFICIENT_DATA, the state CloudWatch gives an alarm it has not evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from pipelines.errors import AlarmRuleError

STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")
MAX_RULE_LENGTH = 10240
MAX_NESTING = 100

_MISSING_STATE = "INSUFFICIENT_DATA"
_KEYWORDS = frozenset({"AND", "OR", "NOT", "TRUE", "FALSE", *STATES})
_WORD = re.compile(r"[A-Za-z0-9_]+")
# The alarm name is everything after ":alarm:", colons included.
_ALARM_ARN = re.compile(r"arn:[^:]+:cloudwatch:[^:]*:[^:]*:alarm:(.*)", re.DOTALL)
_PRIMARY_EXPECTED = "expected ALARM(...), OK(...), INSUFFICIENT_DATA(...), TRUE, FALSE, NOT or '('"

Predicate = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True)
class AlarmRule:
    """A parsed rule: its text, the alarm names it refers to, and a compiled
    predicate (left out of equality, so two rules are equal when their texts are)."""

    text: str
    names: frozenset[str]
    predicate: Predicate = field(repr=False, compare=False)

    def evaluate(self, states: Mapping[str, str]) -> bool:
        """True when the rule holds for ``states`` (alarm name -> one of ``STATES``)."""
        return self.predicate(states)


def parse_alarm_rule(text: str) -> AlarmRule:
    """Parse ``text``; raise ``AlarmRuleError`` with the 0-based position of the problem."""
    if len(text) > MAX_RULE_LENGTH:
        raise AlarmRuleError(
            f"the rule is {len(text)} characters long; the maximum is {MAX_RULE_LENGTH}",
            text,
            MAX_RULE_LENGTH,
        )
    if not text.strip():
        raise AlarmRuleError("the rule is empty", text, 0)
    parser = _Parser(text)
    predicate = parser.parse()
    return AlarmRule(text, frozenset(parser.names), predicate)


def find_cycle(rules: Mapping[str, AlarmRule]) -> list[str] | None:
    """rules: composite alarm name -> its rule. Returns one cycle as a list of names
    [a, b, ..., a] when composite alarms refer to each other in a loop (including a
    rule that names itself), else None."""
    finished: set[str] = set()
    for root in rules:
        if root in finished:
            continue
        # Iterative depth-first search: a long chain of composites must not
        # exhaust Python's recursion limit.
        path = [root]
        on_path = {root: 0}
        pending = [iter(_composite_children(rules, root))]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                done = path.pop()
                del on_path[done]
                finished.add(done)
                pending.pop()
            elif child in on_path:
                return [*path[on_path[child] :], child]
            elif child not in finished:
                on_path[child] = len(path)
                path.append(child)
                pending.append(iter(_composite_children(rules, child)))
    return None


def _composite_children(rules: Mapping[str, AlarmRule], name: str) -> list[str]:
    # Only composites have rules, so only they can close a loop; sorted so the
    # cycle reported does not depend on set order.
    return sorted(child for child in rules[name].names if child in rules)


class _Parser:
    """Recursive descent over the text itself: alarm names are read raw, so
    there is no separate tokenizer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.names: set[str] = set()

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        self.skip_blanks()
        if self.pos < len(self.text):
            unmatched = "unmatched ')': " if self.text[self.pos] == ")" else ""
            self.fail(f"{unmatched}expected AND, OR or the end of the rule, found {self.found()}")
        return predicate

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.take("OR"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else _any(tuple(parts))

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.take("AND"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else _all(tuple(parts))

    def not_expr(self) -> Predicate:
        # A loop, not recursion: a rule may hold thousands of NOTs, and pairs cancel.
        negate = False
        while self.take("NOT"):
            negate = not negate
        operand = self.primary()
        return _negate(operand) if negate else operand

    def primary(self) -> Predicate:
        self.skip_blanks()
        if self.text.startswith("(", self.pos):
            return self.group()
        word = self.word()
        if word in ("TRUE", "FALSE"):
            self.pos += len(word)
            return _constant(word == "TRUE")
        if word in STATES:
            self.pos += len(word)
            return self.function(word)
        if word and self.next_char(self.pos + len(word)) == "(":
            hint = "; keywords are upper case" if word.upper() in STATES else ""
            self.fail(f"unknown function '{word}' (expected ALARM, OK or INSUFFICIENT_DATA{hint})")
        self.fail(f"{_PRIMARY_EXPECTED}, found {self.found()}")

    def group(self) -> Predicate:
        opened = self.pos
        if self.depth == MAX_NESTING:
            self.fail(f"parentheses nest more than {MAX_NESTING} deep")
        self.depth += 1
        self.pos += 1
        inner = self.or_expr()
        self.expect_close(opened, "AND, OR or ")
        self.depth -= 1
        return inner

    def function(self, state: str) -> Predicate:
        self.skip_blanks()
        if not self.text.startswith("(", self.pos):
            self.fail(f"expected '(' after {state}, found {self.found()}")
        opened = self.pos
        self.pos += 1
        self.skip_blanks()
        name_at = self.pos
        raw = self.quoted_name() if self.text.startswith('"', self.pos) else self.bare_name()
        self.expect_close(opened, "")
        name = self.alarm_name(raw, name_at)
        self.names.add(name)
        return _in_state(name, state)

    def quoted_name(self) -> str:
        opened = self.pos
        closed = self.text.find('"', opened + 1)
        if closed < 0:
            self.fail("the '\"' that starts this alarm name is never closed", opened)
        self.pos = closed + 1
        return self.text[opened + 1 : closed]

    def bare_name(self) -> str:
        start = end = self.pos
        while end < len(self.text) and self.text[end] not in '()"':
            end += 1
        if self.text.startswith("(", end):
            self.fail(
                "an unquoted alarm name cannot contain '('; put the name in double quotes", end
            )
        if self.text.startswith('"', end):
            self.fail("a '\"' may only open a quoted alarm name; quote the whole name", end)
        self.pos = end
        return self.text[start:end].rstrip()

    def alarm_name(self, raw: str, at: int) -> str:
        if raw.startswith("arn:"):
            match = _ALARM_ARN.fullmatch(raw)
            if match is None:
                self.fail(
                    "not a CloudWatch alarm ARN "
                    "(expected arn:PARTITION:cloudwatch:REGION:ACCOUNT:alarm:NAME)",
                    at,
                )
            raw = match.group(1)
        if not raw.strip():
            self.fail("empty alarm name", at)
        return raw

    def expect_close(self, opened: int, alternatives: str) -> None:
        self.skip_blanks()
        if self.text.startswith(")", self.pos):
            self.pos += 1
            return
        # At the end of the rule only the missing ')' is worth mentioning.
        if self.pos >= len(self.text):
            self.fail(f"expected ')' to close the '(' at position {opened}")
        self.fail(
            f"expected {alternatives}')' to close the '(' at position {opened}, "
            f"found {self.found()}"
        )

    def take(self, keyword: str) -> bool:
        self.skip_blanks()
        if self.word() != keyword:
            return False
        self.pos += len(keyword)
        return True

    def skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def word(self) -> str:
        match = _WORD.match(self.text, self.pos)
        return match.group() if match else ""

    def next_char(self, position: int) -> str:
        while position < len(self.text) and self.text[position].isspace():
            position += 1
        return self.text[position : position + 1]

    def found(self) -> str:
        """What is at the current position, for "expected X, found Y" messages."""
        if self.pos >= len(self.text):
            return "the end of the rule"
        word = self.word()
        if not word:
            return f"'{self.text[self.pos]}'"
        hint = " (keywords are upper case)" if word.upper() in _KEYWORDS - {word} else ""
        return f"'{word}'{hint}"

    def fail(self, message: str, position: int | None = None) -> NoReturn:
        raise AlarmRuleError(message, self.text, self.pos if position is None else position)


def _constant(value: bool) -> Predicate:
    return lambda _states: value


def _in_state(name: str, state: str) -> Predicate:
    return lambda states: states.get(name, _MISSING_STATE) == state


def _negate(operand: Predicate) -> Predicate:
    return lambda states: not operand(states)


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    # One n-ary node per run of ANDs keeps the closure depth to the nesting
    # depth, however long the run.
    return lambda states: all(part(states) for part in parts)


def _any(parts: tuple[Predicate, ...]) -> Predicate:
    return lambda states: any(part(states) for part in parts)
