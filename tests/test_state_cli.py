"""``pipelines state info|migrate``: where a state database's stores stand,
and bringing them forward, on a SQLite file and on PostgreSQL, through the
real command line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from pipelines.archive import ArchiveStore
from pipelines.state import StateDB
from pipelines.store import backend_for, location_of, shown

from .helpers import run_cli
from .test_state_backends import V1_TABLES


async def _version_1_state(location: str) -> None:
    """A state database as a runner of version 1 of the state tables left it."""
    where = location_of(location)
    raw = await backend_for(where).connect(where, create=True, functions={})
    try:
        await raw.script(V1_TABLES)
        await raw.execute("INSERT INTO store_versions VALUES ('state', 1, 0)")
    finally:
        await raw.close()


def _info(location: str) -> dict[str, dict[str, object]]:
    done = run_cli("state", "info", "--state", location, "--output", "json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    return {store["store"]: store for store in info["stores"]}


def test_info_shows_a_store_behind_and_migrate_brings_it_forward(state_location: str) -> None:
    asyncio.run(_version_1_state(state_location))
    stores = _info(state_location)
    assert stores["state"]["version"] == 1
    assert stores["state"]["known"] == StateDB.version
    assert stores["state"]["status"] == "behind: migrate"
    assert stores["queues"]["status"] == "not created yet"
    assert _info(state_location)["state"]["version"] == 1  # info changed nothing

    done = run_cli("state", "migrate", "--state", state_location, "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"store": "state", "from": 1, "to": StateDB.version}]
    assert _info(state_location)["state"]["status"] == "current"
    again = run_cli("state", "migrate", "--state", state_location, "--output", "table")
    assert again.returncode == 0, again.stderr
    assert "every store is current" in again.stdout


def test_a_newer_store_is_named_and_migrate_refuses_it(state_location: str) -> None:
    asyncio.run(_version_1_state(state_location))

    async def newer() -> None:
        where = location_of(state_location)
        raw = await backend_for(where).connect(where, create=False, functions={})
        try:
            await raw.execute("UPDATE store_versions SET version = 7 WHERE store = 'state'")
            await raw.execute("INSERT INTO store_versions VALUES ('widgets', 1, 0)")
        finally:
            await raw.close()

    asyncio.run(newer())
    stores = _info(state_location)
    assert stores["state"]["status"] == "newer than this pipelines: upgrade it"
    assert stores["widgets"] == {
        "store": "widgets",
        "version": 1,
        "known": None,
        "status": "unknown to this pipelines",
    }
    done = run_cli("state", "migrate", "--state", state_location)
    assert done.returncode == 1
    assert "state tables are newer than this pipelines knows; upgrade pipelines" in done.stderr
    assert "Traceback" not in done.stderr


async def _version_2_archives(location: str) -> None:
    """The archive tables as a runner of version 2 left them, one archive."""
    from .archive_v2 import STORE_VERSIONS, V2_TABLES, V2_TRIGGERS

    where = location_of(location)
    backend = backend_for(where)
    raw = await backend.connect(where, create=True, functions={})
    try:
        await raw.script(STORE_VERSIONS + V2_TABLES + V2_TRIGGERS[backend.dialect.name])
        await raw.execute("INSERT INTO store_versions VALUES ('archives', 2, 0)")
        await raw.execute(
            "INSERT INTO archives (name, bus, pattern, retention_days, durability,"
            " description, state, created) VALUES ('all', 'default', NULL, 0, 'normal',"
            " '', 'ENABLED', 0)"
        )
    finally:
        await raw.close()


def test_a_command_refuses_tables_behind_and_changes_nothing(state_location: str) -> None:
    # A runner of the earlier version may still write these tables: only
    # `state migrate` (or a runner of this version) brings them forward.
    asyncio.run(_version_2_archives(state_location))
    listed = run_cli("archive", "list", "--state", state_location)
    assert listed.returncode == 1
    assert listed.stderr.strip() == (
        f"error: state database {shown(location_of(state_location))}: its archives tables"
        " are version 2,"
        f" behind this pipelines ({ArchiveStore.version}); `pipelines state migrate` brings"
        " them forward (stop runners of the earlier version first), as a runner of this"
        " version does when it starts"
    )
    assert _info(state_location)["archives"]["version"] == 2
    assert "archive_groups" not in asyncio.run(_tables(state_location))

    done = run_cli("state", "migrate", "--state", state_location, "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"store": "archives", "from": 2, "to": ArchiveStore.version}]
    listed = run_cli("archive", "list", "--state", state_location, "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert [archive["ArchiveName"] for archive in json.loads(listed.stdout)] == ["all"]


def test_a_command_that_creates_refuses_tables_behind_too(tmp_path: Path) -> None:
    # `queue create` may make a new database, but it is no runner either.
    path = tmp_path / "state.db"
    created = run_cli("queue", "create", "first", "--state", str(path))
    assert created.returncode == 0, created.stderr
    with sqlite3.connect(path) as db:  # the queue tables as version 1 left them
        db.execute("DROP INDEX queue_messages_sent")
        db.execute("DROP INDEX queue_messages_delayed")
        db.execute("UPDATE store_versions SET version = 1 WHERE store = 'queues'")
    refused = run_cli("queue", "create", "second", "--state", str(path))
    assert refused.returncode == 1
    assert "its queues tables are version 1, behind this pipelines" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _info(str(path))["queues"]["version"] == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM queues").fetchall() == [("first",)]


async def _tables(location: str) -> set[str]:
    where = location_of(location)
    backend = backend_for(where)
    raw = await backend.connect(where, create=False, functions={})
    try:
        if backend.dialect.name == "sqlite":
            rows = await raw.rows("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = await raw.rows(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
    finally:
        await raw.close()
    return {str(name) for (name,) in rows}


def test_info_on_a_missing_file_names_it(tmp_path: object) -> None:
    done = run_cli("state", "info", "--state", f"{tmp_path}/none.db")
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"error: state database {tmp_path}/none.db does not exist:"
        " run the pipeline first"
    )


def test_a_database_no_runner_opened_yet_has_every_store_not_created(
    state_location: str,
) -> None:
    # A new cluster's first step (docs/cluster.md): an empty PostgreSQL
    # database made for it, or an empty file, before any runner started.
    if not state_location.startswith("postgresql://"):
        open(state_location, "wb").close()
    stores = _info(state_location)
    assert {store["status"] for store in stores.values()} == {"not created yet"}
    assert stores["queues"]["known"] is not None
    done = run_cli("state", "migrate", "--state", state_location, "--output", "table")
    assert done.returncode == 0, done.stderr
    assert "no store is created yet: the first runner to start creates them" in done.stdout
    as_json = run_cli("state", "migrate", "--state", state_location, "--output", "json")
    assert json.loads(as_json.stdout) == []
    assert {store["status"] for store in _info(state_location).values()} == {"not created yet"}
