"""IP addresses and CIDR blocks for the ``cidr`` operator.

EventBridge (event-ruler) treats a string as an IP address only in two textual
shapes: a dotted quad of decimal numbers, or hex digits and colons with at
least one colon (so no embedded IPv4 tail). Both sides are compared as
numbers, so ``2001:db8::1`` and ``2001:0db8:0000:0000:0000:0000:0000:0001``
are the same address. Values are parsed by hand rather than with
``ipaddress``: the matcher parses one value per event and field.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pipelines.errors import PatternError

_IPV4_SHAPE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:")
_MASK = re.compile(r"[+-]?[0-9]{1,10}")
#: Longer strings are never addresses: this bounds the work per event value
#: (IPv4 octets may carry leading zeros, hence the slack).
_MAX_ADDRESS_LENGTH = 64


def _ipv6_shape(text: str) -> bool:
    return ":" in text and _IPV6_CHARS.issuperset(text)


class Network(NamedTuple):
    """A CIDR block: IP version (4 or 6), the network bits and the mask length."""

    version: int
    prefix: int  # the address shifted right by (width - bits)
    bits: int

    @property
    def width(self) -> int:
        return 32 if self.version == 4 else 128


def looks_like_ip(text: str) -> bool:
    """True when event-ruler would try to read ``text`` as an IP address."""
    if len(text) > _MAX_ADDRESS_LENGTH:
        return False
    return bool(_IPV4_SHAPE.fullmatch(text)) or _ipv6_shape(text)


def _parse_ipv4(text: str) -> int | None:
    value = 0
    for part in text.split("."):
        octet = int(part)  # the shape check guarantees ASCII digits
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


def _groups(text: str) -> list[int] | None:
    if text == "":
        return []
    out = []
    for group in text.split(":"):
        if not 1 <= len(group) <= 4:
            return None
        out.append(int(group, 16))
    return out


def _parse_ipv6(text: str) -> int | None:
    if text.count("::") > 1:
        return None
    if "::" in text:
        left, right = text.split("::")
        head, tail = _groups(left), _groups(right)
        if head is None or tail is None or len(head) + len(tail) > 7:
            return None
        groups = head + [0] * (8 - len(head) - len(tail)) + tail
    else:
        plain = _groups(text)
        if plain is None or len(plain) != 8:
            return None
        groups = plain
    value = 0
    for group in groups:
        value = (value << 16) | group
    return value


def parse_ip(text: str) -> tuple[int, int] | None:
    """(version, integer) of an IPv4 or IPv6 address, or None if it is not one."""
    if len(text) > _MAX_ADDRESS_LENGTH:
        return None
    if _IPV4_SHAPE.fullmatch(text):
        v4 = _parse_ipv4(text)
        return None if v4 is None else (4, v4)
    if _ipv6_shape(text):
        v6 = _parse_ipv6(text)
        return None if v6 is None else (6, v6)
    return None


def parse_cidr(text: str, path: str) -> Network:
    """Parse a ``cidr`` operand as EventBridge does, with its error messages.

    The checks run in event-ruler's order: one slash, an integer mask, a
    non-negative mask, the address, then the mask's size. As in current
    event-ruler, host bits in the address are ignored (``10.0.0.5/24`` is
    ``10.0.0.0/24``) and the full-length masks /32 and /128 are rejected.
    """
    parts = text.split("/")
    while parts and parts[-1] == "":
        parts.pop()  # as Java's String.split drops trailing empty strings
    if len(parts) != 2:
        raise PatternError("Malformed CIDR, one '/' required", path)
    address, mask = parts
    if not _MASK.fullmatch(mask):
        raise PatternError("Malformed CIDR, mask bits must be an integer", path)
    bits = int(mask)
    if bits < 0:
        raise PatternError("Malformed CIDR, mask bits must not be negative", path)
    if not looks_like_ip(address):
        raise PatternError(f"Nonstandard IP address: {address}", path)
    parsed = parse_ip(address)
    if parsed is None:
        raise PatternError(f"Invalid IP address: {address}", path)
    version, value = parsed
    width = 32 if version == 4 else 128
    if bits >= width:
        raise PatternError(f"IPv{version} mask bits must be < {width}", path)
    return Network(version, value >> (width - bits), bits)


def single_address(text: str) -> Network | None:
    """The one-address network of an exact-match string that is an IP, else None.

    event-ruler turns ``["10.0.0.1"]`` into a range holding that one address,
    so other spellings of the same address match it too.
    """
    parsed = parse_ip(text)
    if parsed is None:
        return None
    version, value = parsed
    return Network(version, value, 32 if version == 4 else 128)


def in_network(value: str, network: Network) -> bool:
    parsed = parse_ip(value)
    if parsed is None or parsed[0] != network.version:
        return False
    return parsed[1] >> (network.width - network.bits) == network.prefix
