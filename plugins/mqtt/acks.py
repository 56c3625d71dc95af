"""Acknowledgements in the order messages arrived.

MQTT 5 (section 4.6) wants a client's PUBACKs in the order the PUBLISH
packets came, and a broker may rely on it. Events settle in any order (one
target is slower than another, a retry is saved later), so a message that is
safe waits here until every message before it on the same connection is safe
too. One deque and a counter per connection: settling is O(1) amortised, with
no task or await per message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

M = TypeVar("M")


class InOrderAcks(Generic[M]):
    """Messages of one connection waiting for their acknowledgement, oldest first."""

    def __init__(self, acknowledge: Callable[[M], None]) -> None:
        self._acknowledge = acknowledge
        self._waiting: deque[int] = deque()  # tickets not yet acknowledged, in arrival order
        self._messages: dict[int, M] = {}
        #: tickets settled out of order, waiting for older ones: True to
        #: acknowledge, False to let go unacknowledged (see ``drop``)
        self._done: dict[int, bool] = {}
        self._next = 0
        #: messages let go so far (acknowledged or dropped), in arrival order
        self.released = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, message: M) -> int:
        """Take a message in, in arrival order; the ticket settles it."""
        ticket = self._next
        self._next += 1
        self._waiting.append(ticket)
        self._messages[ticket] = message
        return ticket

    def settle(self, ticket: int) -> None:
        """The message is safe: acknowledge it, with every safe one after it,
        once no older message is still waiting."""
        waiting = self._waiting
        if not self._done and waiting and waiting[0] == ticket:
            # The usual case (messages settle in the order they came): the
            # oldest one, with none settled behind it: acknowledged at once.
            waiting.popleft()
            self.released += 1
            self._acknowledge(self._messages.pop(ticket))
            return
        self._finish(ticket, acknowledge=True)

    def drop(self, ticket: int) -> None:
        """The message was not taken (the runtime is stopping, or a write
        failed): never acknowledge it, so the broker sends it again when the
        session resumes; and do not let it hold back the messages after it."""
        self._finish(ticket, acknowledge=False)

    def _finish(self, ticket: int, acknowledge: bool) -> None:
        if ticket not in self._messages or ticket in self._done:
            return  # settled twice: the first one counts
        self._done[ticket] = acknowledge
        waiting = self._waiting
        while waiting and waiting[0] in self._done:
            head = waiting.popleft()
            self.released += 1
            message = self._messages.pop(head)
            if self._done.pop(head):
                self._acknowledge(message)

    def abandon(self) -> list[M]:
        """The connection is gone: every message still waiting, none acknowledged."""
        messages = list(self._messages.values())
        self._waiting.clear()
        self._messages.clear()
        self._done.clear()
        return messages
