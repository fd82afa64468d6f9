"""The database layer: connection forms, ownership, transactions, failures."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool
import pytest
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pikku_pg._acompat import AEvent, agather, asleep, aspawn
from pikku_pg._async._database import AsyncDatabase
from pikku_pg._async._service import AsyncPgService
from pikku_pg.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    InvalidSchemaNameError,
    ServiceClosedError,
)

SELECT_ONE = b"SELECT 1"


async def test_each_connection_form_runs_a_query(conn_source: Any) -> None:
    db = AsyncDatabase(conn_source)
    try:
        assert await db.fetch_one(SELECT_ONE, row_factory=tuple_row) == (1,)
        rows = await db.fetch_all(b"SELECT generate_series(1, 3)", row_factory=tuple_row)
        assert rows == [(1,), (2,), (3,)]
    finally:
        await db.close()


async def test_owned_pool_is_autocommit_and_closed_with_the_service(pg_dsn: str) -> None:
    service = AsyncPgService(pg_dsn)
    async with service, service._db.connection() as conn:
        assert conn.autocommit
    with pytest.raises(ServiceClosedError):
        await service._db.fetch_one(SELECT_ONE, row_factory=tuple_row)


async def test_borrowed_pool_stays_open(pg_dsn: str) -> None:
    async with AsyncConnectionPool(pg_dsn, min_size=1, open=False) as pool:
        async with AsyncPgService(pool) as service:
            assert await service._db.fetch_one(SELECT_ONE, row_factory=tuple_row) == (1,)
        assert not pool.closed
        async with pool.connection() as conn:
            assert (await (await conn.execute(SELECT_ONE)).fetchone()) == (1,)


async def test_borrowed_connection_stays_open_and_not_idle_in_transaction(pg_dsn: str) -> None:
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        async with AsyncPgService(conn) as service:
            await service._db.fetch_one(SELECT_ONE, row_factory=tuple_row)
            # A non-autocommit connection must not be left in an open transaction.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert not conn.closed
    finally:
        await conn.close()


async def test_closed_borrowed_pool_raises_a_clear_error(pg_dsn: str) -> None:
    pool = AsyncConnectionPool(pg_dsn, min_size=1, open=False)
    await pool.open()
    await pool.close()
    db = AsyncDatabase(pool)
    with pytest.raises(DatabaseUnavailableError, match="pool is closed"):
        await db.fetch_one(SELECT_ONE, row_factory=tuple_row)


async def test_closed_borrowed_connection_raises_a_clear_error(pg_dsn: str) -> None:
    conn = await AsyncConnection.connect(pg_dsn)
    await conn.close()
    db = AsyncDatabase(conn)
    with pytest.raises(DatabaseUnavailableError, match="connection is closed"):
        await db.fetch_one(SELECT_ONE, row_factory=tuple_row)


@pytest.mark.parametrize("bad", [42, None, b"postgresql://", object()])
def test_wrong_connection_type_names_the_accepted_types(bad: Any) -> None:
    with pytest.raises(TypeError, match="conninfo string.*ConnectionPool.*Connection"):
        AsyncDatabase(bad)


def _pool_of_the_other_flavour(dsn: str) -> Any:
    """A sync pool in the async tests; an async pool in the generated sync tests."""
    if True:  # ASYNC
        return ConnectionPool(dsn, open=False)
    else:
        return getattr(psycopg_pool, "Async" + "ConnectionPool")(dsn, open=False)


def test_a_pool_of_the_other_flavour_is_refused(pg_dsn: str) -> None:
    with pytest.raises(TypeError, match="expected a conninfo string"):
        AsyncDatabase(_pool_of_the_other_flavour(pg_dsn))


def test_pool_options_only_apply_to_an_owned_pool(pg_dsn: str) -> None:
    pool = AsyncConnectionPool(pg_dsn, open=False)
    with pytest.raises(TypeError, match="only to a conninfo string"):
        AsyncDatabase(pool, pool_kwargs={"max_size": 3})
    with pytest.raises(TypeError, match="cannot set 'open'"):
        AsyncDatabase(pg_dsn, pool_kwargs={"open": True})


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", "x;drop table y", "a" * 64, 7, b"abc", "é"])
def test_invalid_schema_names_are_refused_before_any_sql(bad: Any) -> None:
    # The conninfo points nowhere: reaching the network would fail differently.
    with pytest.raises(InvalidSchemaNameError):
        AsyncPgService("postgresql://nobody@127.0.0.1:1/none", bad)


def test_a_63_character_schema_name_is_accepted() -> None:
    assert AsyncPgService("postgresql://x@127.0.0.1:1/x", "s" * 63).schema == "s" * 63


@pytest.mark.timeout(30)
async def test_unreachable_server_fails_fast_naming_the_host() -> None:
    service = AsyncPgService(
        "postgresql://nobody@127.0.0.1:1/none", connect_kwargs={"connect_timeout": 2}
    )
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
        await service.open()
    await service.close()


def test_an_unparsable_conninfo_is_refused_in_the_constructor() -> None:
    with pytest.raises(InvalidInputError, match="invalid conninfo"):
        AsyncPgService("host=localhost garbage")


async def test_the_conninfo_connect_timeout_is_kept(pg_dsn: str) -> None:
    db = AsyncDatabase(pg_dsn + ("&" if "?" in pg_dsn else "?") + "connect_timeout=3")
    try:
        async with db.connection() as conn:
            assert conn.info.get_parameters().get("connect_timeout") == "3"
    finally:
        await db.close()


async def test_connect_kwargs_reach_the_owned_pool(pg_dsn: str) -> None:
    db = AsyncDatabase(pg_dsn, connect_kwargs={"prepare_threshold": None})
    try:
        async with db.connection() as conn:
            assert conn.prepare_threshold is None
    finally:
        await db.close()


async def test_transaction_is_all_or_nothing(conn_source: Any, admin_conn: Any) -> None:
    await admin_conn.execute("CREATE TABLE IF NOT EXISTS public.tx_probe (v int)")
    await admin_conn.execute("TRUNCATE public.tx_probe")
    db = AsyncDatabase(conn_source)
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with db.transaction() as conn:
                await conn.execute(b"INSERT INTO public.tx_probe VALUES (1)")
                await conn.execute(b"SELECT 1 / 0")
        async with db.pipeline() as conn:
            await conn.execute(b"INSERT INTO public.tx_probe VALUES (2)")
            await conn.execute(b"INSERT INTO public.tx_probe VALUES (3)")
    finally:
        await db.close()
    cur = await admin_conn.execute("SELECT array_agg(v ORDER BY v) FROM public.tx_probe")
    assert (await cur.fetchone()) == ([2, 3],)


async def test_nests_into_the_callers_transaction_as_a_savepoint(
    pg_dsn: str, admin_conn: Any
) -> None:
    await admin_conn.execute("CREATE TABLE IF NOT EXISTS public.nest_probe (v int)")
    await admin_conn.execute("TRUNCATE public.nest_probe")
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        db = AsyncDatabase(conn)
        async with conn.transaction(force_rollback=True):
            await conn.execute("INSERT INTO public.nest_probe VALUES (1)")
            async with db.transaction() as inner:
                await inner.execute(b"INSERT INTO public.nest_probe VALUES (2)")
            # A failing block inside ours rolls back to its savepoint only.
            with pytest.raises(psycopg.errors.DivisionByZero):
                async with db.transaction() as inner:
                    await inner.execute(b"INSERT INTO public.nest_probe VALUES (3)")
                    await inner.execute(b"SELECT 1 / 0")
            cur = await conn.execute("SELECT array_agg(v ORDER BY v) FROM public.nest_probe")
            assert (await cur.fetchone()) == ([1, 2],)
        # The caller rolled back: our write went with it.
        cur = await admin_conn.execute("SELECT count(*) FROM public.nest_probe")
        assert (await cur.fetchone()) == (0,)
    finally:
        await conn.close()


async def test_single_connection_is_used_by_one_call_at_a_time(pg_dsn: str) -> None:
    conn = await AsyncConnection.connect(pg_dsn)
    db = AsyncDatabase(conn)
    results: list[int] = []

    async def worker(n: int) -> None:
        async with db.transaction() as c:
            await c.execute(b"SELECT pg_sleep(0.01)")
            cur = await c.execute(b"SELECT %s::int", (n,))
            row = await cur.fetchone()
            assert row is not None
            results.append(row[0])

    try:
        await agather(*[aspawn(worker, (n,)) for n in range(8)])
    finally:
        await conn.close()
    assert sorted(results) == list(range(8))


async def test_pool_checkouts_are_not_serialized(pg_dsn: str, admin_conn: Any) -> None:
    """A call blocked in the database does not hold up another call of the same service."""
    lock_key = 8_364_117
    await admin_conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
    db = AsyncDatabase(pg_dsn, pool_kwargs={"min_size": 2, "max_size": 2})
    blocked_done = AEvent()

    async def blocked() -> None:
        await db.execute(b"SELECT pg_advisory_lock_shared(%s)", (lock_key,))
        blocked_done.set()

    try:
        await db.open()
        task = aspawn(blocked)
        await asleep(0.2)
        # The first call waits on the lock; this one must still get through.
        assert await db.fetch_one(SELECT_ONE, row_factory=tuple_row) == (1,)
        assert not blocked_done.is_set()
        await admin_conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
        await agather(task, timeout=10)
        assert blocked_done.is_set()
    finally:
        await db.close()
