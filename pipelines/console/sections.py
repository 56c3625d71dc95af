"""What a plugin contributes to the web console: a section of pages, as data.

A plugin that keeps things worth browsing (queues, streams, log groups)
registers a ``Section`` through the ``register_console`` hook. A section
answers with data (``Listing``, ``Detail``); the console draws the HTML and
reads the HTTP, so a plugin never does. Its ``host`` (``SectionHost``)
opens the plugin's store on the runtime's state database once, kept until
the console closes.

A section's methods raise ``SectionError`` for what the operator must fix
(a queue that does not exist, a bad filter pattern): the console shows its
message on the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pipelines.errors import PipelinesError
from pipelines.store import Store

StoreT = TypeVar("StoreT", bound=Store)


class SectionError(PipelinesError):
    """A section's refusal, shown on the page in its words."""


@dataclass(frozen=True, slots=True)
class Listing:
    """A table: ``columns`` in order, ``rows`` of values by column. A row's
    ``key`` (if any) links it to ``Section.detail``."""

    columns: Sequence[str]
    rows: Sequence[Mapping[str, Any]]
    keys: Sequence[str | None] = ()
    #: Shown when there are no rows.
    empty: str = "nothing yet"


@dataclass(frozen=True, slots=True)
class Field:
    """An input of an action's or a search's form."""

    name: str
    label: str
    value: str = ""
    #: Choices of a select; empty for a text field.
    choices: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Action:
    """A button (with its fields) that posts to ``Section.act``."""

    name: str
    label: str
    fields: Sequence[Field] = ()
    #: Asked before it runs (it changes something).
    confirm: str | None = None


@dataclass(frozen=True, slots=True)
class Detail:
    """One item's page: facts, a search form (its fields come back in
    ``params``), tables, and actions."""

    title: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    search: Sequence[Field] = ()
    tables: Sequence[tuple[str, Listing]] = ()
    actions: Sequence[Action] = ()


class SectionHost(Protocol):
    """What a section reaches of the running pipeline."""

    async def store(self, store_type: type[StoreT], *, where: str) -> StoreT:
        """The console's ``store_type`` on the runtime's state database, opened
        at first use (``SectionError`` without a state database)."""
        ...

    def resource_names(self) -> list[str]: ...


class Section(Protocol):
    """A group of console pages (``/console/s/NAME``)."""

    #: The path segment and the key of the section (``queues``).
    name: str
    #: The navigation's label (``Queues``).
    title: str

    async def listing(self, host: SectionHost) -> Listing:
        """The section's first page: a table of its items."""
        ...

    async def detail(self, host: SectionHost, key: str, params: Mapping[str, str]) -> Detail:
        """One item, with ``params`` from its search form."""
        ...

    async def act(self, host: SectionHost, key: str, action: str, params: Mapping[str, str]) -> str:
        """Run ``action`` on the item; what happened, in a sentence."""
        ...
