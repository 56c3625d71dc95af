"""``pipelines state info|migrate``: where a state database's stores stand,
and bringing them forward, on a SQLite file and on PostgreSQL, through the
real command line."""

from __future__ import annotations

import asyncio
import json

from pipelines.state import StateDB
from pipelines.store import backend_for, location_of

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
