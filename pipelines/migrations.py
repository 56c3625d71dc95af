"""The versions of a state database's stores, and bringing them forward.

Each store records the version of its tables in ``store_versions`` and
migrates them when it opens (``Store._apply_schema``): a runner of a newer
pipelines brings an older state forward by itself, and refuses a state
newer than it knows. A command's view of a store (``Store.existing``)
refuses older tables instead of migrating them: runners of the earlier
version may still use them. ``pipelines state info`` shows where a state stands
without changing it; ``pipelines state migrate`` brings every store that
is behind forward before a runner starts (on a cluster's database, once,
instead of by whichever runner starts first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pluggy

from pipelines.alarms import AlarmStore
from pipelines.archive import ArchiveStore
from pipelines.buspolicies import PolicyStore
from pipelines.errors import PluginError, StateError
from pipelines.metrics import MetricStore
from pipelines.pluginmanager import get_plugin_manager
from pipelines.state import StateDB
from pipelines.store import Location, Store, backend_for, existing, shown

#: The engine's own stores; plugins name theirs through ``register_stores``.
ENGINE_STORES: tuple[type[Store], ...] = (
    StateDB,
    ArchiveStore,
    MetricStore,
    AlarmStore,
    PolicyStore,
)


def known_stores(manager: pluggy.PluginManager | None = None) -> dict[str, type[Store]]:
    """Every store this pipelines knows, by name: the engine's and the plugins'."""
    found = {store.name: store for store in ENGINE_STORES}
    manager = manager or get_plugin_manager()
    for implementation in manager.hook.register_stores.get_hookimpls():

        def register(store: type[Store], plugin: str = implementation.plugin_name) -> None:
            if not (isinstance(store, type) and issubclass(store, Store)):
                raise PluginError(f"plugin {plugin!r} registered {store!r}, which is not a Store")
            if found.get(store.name, store) is not store:
                raise PluginError(
                    f"plugin {plugin!r} registered a second store named {store.name!r}"
                )
            found[store.name] = store

        implementation.function(register=register)
    return dict(sorted(found.items()))


@dataclass(frozen=True, slots=True)
class StoreVersion:
    """Where one store's tables stand in a state database."""

    store: str
    #: The version recorded in the database (None: the store has no tables yet).
    found: int | None
    #: The version this pipelines writes (None: a store it does not know).
    known: int | None

    @property
    def status(self) -> str:
        if self.known is None:
            return "unknown to this pipelines"
        if self.found is None:
            return "not created yet"
        if self.found < self.known:
            return "behind: migrate"
        if self.found > self.known:
            return "newer than this pipelines: upgrade it"
        return "current"

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "version": self.found,
            "known": self.known,
            "status": self.status,
        }


VERSIONS = "SELECT store, version FROM store_versions"


async def store_versions(location: Location) -> list[StoreVersion]:
    """Each store's recorded and known version, read without changing anything."""
    location = existing(location)
    stores = known_stores()
    backend = backend_for(location)
    connection = await backend.connect(location, create=False, functions={})
    try:
        try:
            # A database no runner has opened yet (an empty PostgreSQL
            # database, made for a new cluster) has no stores: each is
            # "not created yet", not an error.
            created = await connection.rows(backend.dialect.has_table, ("store_versions",))
            rows = await connection.rows(VERSIONS) if created else []
        except backend.errors as exc:
            raise StateError(
                f"state database {shown(location)} has no store versions: {exc}".strip()
            ) from None
    finally:
        await connection.close()
    found = {str(name): int(version) for name, version in rows}
    names = sorted(set(found) | set(stores))
    return [
        StoreVersion(name, found.get(name), stores[name].version if name in stores else None)
        for name in names
    ]


async def state_info(location: Location) -> dict[str, Any]:
    """The state database, its engine and each store's version."""
    location = existing(location)
    versions = await store_versions(location)
    return {
        "state": shown(location),
        "engine": backend_for(location).dialect.name,
        "stores": [version.as_dict() for version in versions],
    }


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``migrate_state`` did: each store brought forward (``store``,
    ``from``, ``to``), and whether the database held any store at all."""

    done: list[dict[str, Any]]
    any_store: bool

    @property
    def summary(self) -> str | None:
        """A line for a migration that changed nothing (None when it did)."""
        if self.done:
            return None
        if not self.any_store:
            return "no store is created yet: the first runner to start creates them"
        return "every store is current"


async def migrate_state(location: Location) -> Migration:
    """Bring every store that is behind forward (each in one transaction,
    as opening it does); what was done per store. A store newer than this
    pipelines knows is refused, naming it, before anything changes."""
    location = existing(location)
    versions = await store_versions(location)
    newer = [v.store for v in versions if v.known is not None and (v.found or 0) > v.known]
    if newer:
        raise StateError(
            f"state database {shown(location)}: {', '.join(newer)} tables are newer than"
            " this pipelines knows; upgrade pipelines"
        )
    stores = known_stores()
    done = []
    for version in versions:
        if version.known is None or version.found is None or version.found == version.known:
            continue
        store = stores[version.store]
        async with store.existing(location, migrate=True):
            pass  # opening it migrated it, in one transaction
        done.append({"store": version.store, "from": version.found, "to": version.known})
    return Migration(done, any(version.found is not None for version in versions))
