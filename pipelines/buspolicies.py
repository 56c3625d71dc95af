"""Bus policies made through the API, kept in the state database.

A bus's policy comes from its config (``buses: NAME: policy``) or from
``PutPermission``/``RemovePermission``. What the API made is saved with the
declaration it replaced: at the next start it is put back as long as the
config still declares that same policy for the bus. Once the config's
declaration changes, the config's stands (a deliberate edit of the file wins
over an older change through the API), and the next API change is saved
against the new declaration.

A bus made through the API is not kept over a restart (buses are declared
in the config); the policy row of a bus that is gone is left alone and
forgotten when a bus of that name is made or deleted through the API.

In a cluster (a PostgreSQL state) each runner reads the saved policies when it
starts: a change through one runner's API reaches the others at their next start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson

from pipelines.bus import Bus
from pipelines.policy import BusPolicy, policy_text
from pipelines.store import Location, Store

log = logging.getLogger("pipelines.policy")

SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_policies (
    bus TEXT PRIMARY KEY,
    policy TEXT NOT NULL,       -- the document in force, JSON ('' for none)
    declared TEXT NOT NULL,     -- the config's declaration it replaced ('' for none)
    changed REAL NOT NULL
);
"""


class PolicyStore(Store):
    """The ``bus_policies`` table of a state database."""

    name = "bus_policies"
    schema = SCHEMA

    async def saved(self) -> dict[str, tuple[str, str]]:
        """Each bus's saved (policy, declared) texts."""
        rows = await self.rows("SELECT bus, policy, declared FROM bus_policies")
        return {row[0]: (row[1], row[2]) for row in rows}

    async def save(self, bus: str, policy: str, declared: str) -> None:
        columns = ("bus", "policy", "declared", "changed")
        await self.execute(
            self.dialect.upsert("bus_policies", columns, ("bus",)),
            (bus, policy, declared, self.clock.time()),
        )

    async def forget(self, bus: str) -> None:
        await self.execute("DELETE FROM bus_policies WHERE bus = ?", (bus,))


class BusPolicies:
    """The runtime's part that saves and restores its buses' policies
    (``runtime.policies``); without a state database, changes live in memory."""

    def __init__(self) -> None:
        self.store: PolicyStore | None = None

    async def open(self, location: Location, buses: Mapping[str, Bus]) -> None:
        """Open the table and put back the saved policies of ``buses``."""
        store = self.store = await PolicyStore.open(location)
        for name, (policy, declared) in (await store.saved()).items():
            bus = buses.get(name)
            if bus is None:
                continue
            if declared != policy_text(bus.declared_policy.document):
                log.info(
                    "bus %s: its config declares a new policy since the one put through"
                    " the API; the config's is in force",
                    name,
                )
                continue
            bus.policy = BusPolicy(orjson.loads(policy) if policy else None)

    async def put(self, bus: Bus, policy: BusPolicy) -> None:
        """Make ``policy`` the bus's (saved first: a change answered survives a restart)."""
        if self.store is not None:
            declared = policy_text(bus.declared_policy.document)
            await self.store.save(bus.name, policy_text(policy.document), declared)
        bus.policy = policy

    async def forget(self, name: str) -> None:
        """A bus made or deleted through the API starts without a saved policy."""
        if self.store is not None:
            await self.store.forget(name)

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()
