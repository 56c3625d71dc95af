"""``equals-ignore-case`` as event-ruler defines it.

Each character of the pattern matches its own lower-case or upper-case form,
and nothing else: ``ß`` matches ``ß`` or ``SS`` (but not ``ss``), ``ſ``
matches ``S``, and ``K`` does not match the Kelvin sign ``K``. This is not
Unicode case folding.

For an ASCII pattern that is simply "the value is ASCII there and lower-cases
to the pattern", which the indexes look up in a dict. Non-ASCII patterns are
compiled to an alternation per character (no quantifiers, so matching is
linear).
"""

from __future__ import annotations

import re
from functools import lru_cache

#: Characters whose lower-case form crosses into ASCII or changes length:
#: a value holding one cannot use the dict lookups.
_UNSAFE_LOWER = ("\u212a", "\u0130")  # KELVIN SIGN, LATIN CAPITAL LETTER I WITH DOT ABOVE


def lookup_key(value: str) -> str | None:
    """The key under which ASCII patterns are found for ``value``, or None.

    None means the value must be tested against every pattern exactly.
    """
    if value.isascii():
        return value.lower()
    if any(char in value for char in _UNSAFE_LOWER):
        return None
    return value.lower()


def _variants(char: str) -> list[str]:
    return list(dict.fromkeys((char.lower(), char.upper())))


@lru_cache(maxsize=4096)
def _compiled(text: str) -> tuple[re.Pattern[str], int, int]:
    """The alternation regex of a pattern, and the shortest and longest text it matches."""
    parts = []
    shortest = longest = 0
    for char in text:
        variants = _variants(char)
        parts.append("(?:" + "|".join(re.escape(v) for v in variants) + ")")
        shortest += min(len(v) for v in variants)
        longest += max(len(v) for v in variants)
    return re.compile("".join(parts), re.DOTALL), shortest, longest


def equals(pattern: str, value: str) -> bool:
    if pattern.isascii():
        return value.isascii() and value.lower() == pattern.lower()
    return _compiled(pattern)[0].fullmatch(value) is not None


def starts_with(pattern: str, value: str) -> bool:
    if pattern.isascii():
        head = value[: len(pattern)]
        return len(head) == len(pattern) and head.isascii() and head.lower() == pattern.lower()
    return _compiled(pattern)[0].match(value) is not None


def ends_with(pattern: str, value: str) -> bool:
    if pattern.isascii():
        if not pattern:
            return True
        tail = value[-len(pattern) :]
        return len(tail) == len(pattern) and tail.isascii() and tail.lower() == pattern.lower()
    regex, shortest, longest = _compiled(pattern)
    for length in range(shortest, min(longest, len(value)) + 1):
        if regex.fullmatch(value, len(value) - length):
            return True
    return False
