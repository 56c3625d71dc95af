"""The ``wildcard`` operator: parsing, matching and EventBridge's complexity limit.

``*`` matches zero or more characters; ``\\*`` is a literal star and ``\\\\`` a
literal backslash; no other escape exists. EventBridge rejects ``**`` and
patterns whose automaton could keep too many wildcard states alive at once
("Rule is too complex ..."). We measure that the way event-ruler does: the
largest number of positions, across all wildcard patterns of one field, that a
single input string can keep active, counting the quote event-ruler puts before
the value. More than ``MAX_COMPLEXITY`` is rejected, which reproduces
EventBridge's verdicts on the AWS-validated cases (see docs/patterns.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from pipelines.errors import PatternError

MAX_COMPLEXITY = 10
#: Bound on the subset search so that a hostile pattern cannot make it hang.
_MAX_STATES = 20_000

STAR = None  # a parsed pattern is a tuple of literal characters and STAR
Token = str | None


def parse_wildcard(text: str, path: str) -> tuple[Token, ...]:
    """Split a wildcard pattern into literal characters and stars.

    Error positions are 1 + the UTF-8 byte offset of the offending character,
    as event-ruler counts them (it parses the value with its leading quote).
    """
    tokens: list[Token] = []
    offset = 1
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            following = text[index + 1] if index + 1 < len(text) else ""
            if following not in ("*", "\\"):
                raise PatternError(f"Invalid escape character at pos {offset}", path)
            tokens.append(following)
            offset += 2
            index += 2
            continue
        if char == "*":
            if index + 1 < len(text) and text[index + 1] == "*":
                raise PatternError(f"Consecutive wildcard characters at pos {offset}", path)
            tokens.append(STAR)
        else:
            tokens.append(char)
        offset += len(char.encode("utf-8", "surrogatepass"))
        index += 1
    return tuple(tokens)


@lru_cache(maxsize=4096)
def wildcard_matcher(tokens: tuple[Token, ...]) -> Callable[[str], bool]:
    """A function testing a whole string against the pattern, in linear time.

    The pattern is cut at its stars into literal pieces: the first must start
    the value, the last must end it, and the others must appear in order in
    between. Taking the leftmost occurrence of each middle piece is always
    safe, so there is no backtracking (a regex ``.*`` would backtrack).
    """
    pieces: list[str] = [""]
    for token in tokens:
        if token is STAR:
            pieces.append("")
        else:
            pieces[-1] += token
    if len(pieces) == 1:
        exact = pieces[0]
        return exact.__eq__
    head, *middle, tail = pieces
    least = len(head) + len(tail) + sum(len(piece) for piece in middle)

    def matches(value: str) -> bool:
        if len(value) < least or not value.startswith(head) or not value.endswith(tail):
            return False
        position = len(head)
        end = len(value) - len(tail)
        for piece in middle:
            found = value.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    return matches


def literal_prefix(tokens: Sequence[Token]) -> str:
    out = []
    for token in tokens:
        if token is STAR:
            break
        out.append(token)
    return "".join(out)


def literal_suffix(tokens: Sequence[Token]) -> str:
    out = []
    for token in reversed(tokens):
        if token is STAR:
            break
        out.append(token)
    return "".join(reversed(out))


def complexity(patterns: Iterable[tuple[Token, ...]]) -> int:
    """The most automaton positions one input keeps alive across ``patterns``.

    Each pattern is quoted as event-ruler quotes it. A position is (pattern,
    index of the last token consumed); a star position stays alive on any
    character. We explore the sets of positions reachable by some input,
    stopping as soon as the limit is passed.
    """
    quoted = [('"', *tokens, '"') for tokens in set(patterns) if STAR in tokens]
    if not quoted:
        return 0
    alphabet = {token for tokens in quoted for token in tokens if token is not STAR}
    alphabet.add("\x00")  # stands for every character no pattern names

    def close(positions: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        # Entering the position before a star also enters the star (it may match nothing).
        stack = list(positions)
        while stack:
            number, index = stack.pop()
            tokens = quoted[number]
            if index + 1 < len(tokens) and tokens[index + 1] is STAR:
                star = (number, index + 1)
                if star not in positions:
                    positions.add(star)
                    stack.append(star)
        return frozenset(positions)

    def step(state: frozenset[tuple[int, int]], char: str) -> frozenset[tuple[int, int]]:
        following: set[tuple[int, int]] = set()
        for number, index in state:
            tokens = quoted[number]
            if index >= 0 and tokens[index] is STAR:
                following.add((number, index))
            if index + 1 < len(tokens) and tokens[index + 1] == char:
                following.add((number, index + 1))
        return close(following)

    start = close({(number, -1) for number in range(len(quoted))})
    seen = {start}
    frontier = [start]
    worst = 0
    while frontier:
        state = frontier.pop()
        for char in alphabet:
            following = step(state, char)
            if not following or following in seen:
                continue
            worst = max(worst, len(following))
            if worst > MAX_COMPLEXITY or len(seen) > _MAX_STATES:
                return max(worst, MAX_COMPLEXITY + 1)
            seen.add(following)
            frontier.append(following)
    return worst


def check_complexity(patterns: Iterable[tuple[Token, ...]], path: str) -> None:
    if complexity(patterns) > MAX_COMPLEXITY:
        raise PatternError(
            "Rule is too complex - try using fewer wildcard characters or fewer "
            "repeating character sequences after a wildcard character",
            path,
        )
