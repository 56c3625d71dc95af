"""The PostgreSQL backend's connection pool, on a real, private server: a
store borrows its connection for its life and gives it back when it closes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from pipelines.errors import StateError
from pipelines.postgres import POOLS, libpq_url
from pipelines.store import Store


class Notes(Store):
    name = "test_notes"
    schema = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT);"


async def _observer(url: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def _backends(observer: psycopg.AsyncConnection[tuple[object, ...]]) -> set[int]:
    """The pids of the other client sessions on the observer's database (not
    the server's own workers: with the many databases the tests make, an
    autovacuum worker visits this one now and then, shown with its name)."""
    cursor = await observer.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
    )
    return {int(str(row[0])) for row in await cursor.fetchall()}


async def _pid(store: Store) -> int:
    return int(await store.scalar("SELECT pg_backend_pid()"))


@pytest.fixture
def pools_before() -> int:
    """The pools open in this process before the test: what it opens must be
    closed by its end (counted from here, so a pool another test left open
    on this worker is not blamed on this one)."""
    return len(POOLS)


@pytest.fixture
async def held(postgres_url: str) -> AsyncIterator[str]:
    """The URL, its pool held open meanwhile (as a runner holds it)."""
    await POOLS.hold(postgres_url)
    try:
        yield postgres_url
    finally:
        await POOLS.release(postgres_url)


async def test_a_store_reopened_reuses_the_connection_it_gave_back(held: str) -> None:
    observer = await _observer(held)
    try:
        store = await Notes.open(held)
        first = await _pid(store)
        await store.execute("INSERT INTO notes (body) VALUES (?)", ("one",))
        assert await _backends(observer) == {first}
        await store.close()
        # Given back, not closed: the server still has the session.
        assert await _backends(observer) == {first}
        # More opens than psycopg's prepare_threshold: what a store runs at
        # each open (its schema, its version) is prepared on the connection
        # and stays so across the stores that borrow it.
        for _ in range(8):
            store = await Notes.open(held)
            assert await _pid(store) == first
            assert await store.scalar("SELECT count(*) FROM notes") == 1
            await store.close()
        assert await _backends(observer) == {first}
        store = await Notes.open(held)
        prepared = await store.scalar(
            "SELECT count(*) FROM pg_prepared_statements"
            " WHERE statement LIKE 'SELECT version FROM store_versions%'"
        )
        await store.close()
        assert prepared == 1
    finally:
        await observer.close()


async def test_the_last_user_closes_the_pool_and_its_connections(
    postgres_url: str, pools_before: int
) -> None:
    observer = await _observer(postgres_url)
    try:
        one, two = await Notes.open(postgres_url), await Notes.open(postgres_url)
        pids = {await _pid(one), await _pid(two)}
        assert len(pids) == 2 and await _backends(observer) == pids
        await one.close()
        three = await Notes.open(postgres_url)  # the pool is still open: two holds it
        assert await _pid(three) in pids
        await two.close()
        await three.close()
        assert len(POOLS) == pools_before
        for _ in range(50):  # the server ends a closed session a moment later
            if not await _backends(observer):
                break
            await observer.execute("SELECT pg_sleep(0.05)")
        assert await _backends(observer) == set()
    finally:
        await observer.close()


async def test_a_full_pool_refuses_a_store_naming_the_setting(
    postgres_url: str, pools_before: int
) -> None:
    url = f"{postgres_url}?pool_size=2&pool_timeout=0.2"
    one, two = await Notes.open(url), await Notes.open(url)
    try:
        with pytest.raises(StateError, match=r"all 2 connections .* pool_size") as caught:
            await Notes.open(url)
        assert "?pool_size=N" in str(caught.value)
        await one.close()
        three = await Notes.open(url)  # one given back: lent again
        assert await three.scalar("SELECT 1") == 1
        await three.close()
    finally:
        await one.close()
        await two.close()
    assert len(POOLS) == pools_before


async def test_a_connection_the_server_ended_is_replaced(held: str) -> None:
    observer = await _observer(held)
    try:
        # Ended while it idled in the pool: the check as it is lent finds it.
        store = await Notes.open(held)
        idle = await _pid(store)
        await store.close()
        await observer.execute("SELECT pg_terminate_backend(%s)", (idle,))
        store = await Notes.open(held)
        replaced = await _pid(store)
        assert replaced != idle
        # Ended while lent: the store's statements fail, and the broken
        # connection is discarded when given back, not lent again.
        await observer.execute("SELECT pg_terminate_backend(%s)", (replaced,))
        with pytest.raises(psycopg.OperationalError):
            await store.scalar("SELECT 1")
        await store.close()
        store = await Notes.open(held)
        assert await _pid(store) not in {idle, replaced}
        assert await store.scalar("SELECT count(*) FROM notes") == 0
        await store.close()
    finally:
        await observer.close()


async def test_a_connection_given_back_holds_no_lock_and_no_transaction(held: str) -> None:
    observer = await _observer(held)
    try:
        store = await Notes.open(held)
        pid = await _pid(store)
        # A queue waiting on a key holds a session lock (Dialect.wait_on).
        await store.execute("SELECT pg_advisory_lock_shared(1, 2)")
        await store.connection.begin()
        await store.connection.execute("INSERT INTO notes (body) VALUES (?)", ("never",))
        await store.close()
        cursor = await observer.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", (pid,)
        )
        assert (await cursor.fetchone()) == (0,)
        store = await Notes.open(held)
        assert await _pid(store) == pid
        assert await store.scalar("SELECT count(*) FROM notes") == 0  # rolled back
        assert await store.scalar("SHOW transaction_isolation") is not None
        await store.close()
    finally:
        await observer.close()


async def test_a_refused_connection_says_why_at_once(postgres_url: str, pools_before: int) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database?pool_timeout=60"
    with pytest.raises(StateError, match=r"no_such_database.*does not exist"):
        await Notes.open(url)
    assert len(POOLS) == pools_before


def test_the_pool_options_are_taken_out_of_the_libpq_url() -> None:
    assert libpq_url("postgresql://u@h:1/db?pool_size=3&sslmode=disable&pool_timeout=1.5") == (
        "postgresql://u@h:1/db?sslmode=disable",
        3,
        1.5,
    )
    with pytest.raises(StateError, match="pool_size must be"):
        libpq_url("postgresql://u:secret@h/db?pool_size=0")
    with pytest.raises(StateError, match="pool_timeout a number of seconds above 0"):
        libpq_url("postgresql://u@h/db?pool_timeout=0")
    with pytest.raises(StateError, match=r"u:\*\*\*@h") as caught:
        libpq_url("postgresql://u:secret@h/db?pool_size=x")
    assert "secret" not in str(caught.value)


async def test_a_runner_holds_its_pool_from_start_to_stop(
    postgres_url: str, pools_before: int
) -> None:
    from pipelines.clock import ManualClock

    from .test_cluster_runtime import runtime_on
    from .test_scheduler import T0

    runtime = runtime_on(postgres_url, "r1", ManualClock(T0))
    await runtime.start()
    try:
        # A target's store closed and opened again (as a reload does): the
        # runner's pool keeps the connection between the two.
        store = await runtime.open_store(Notes, where="a test target")
        first = await _pid(store)
        await store.close()
        store = await runtime.open_store(Notes, where="a test target")
        assert await _pid(store) == first
        await store.close()
        assert len(POOLS) == pools_before + 1
    finally:
        await runtime.stop()
    assert len(POOLS) == pools_before
