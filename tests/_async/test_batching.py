"""Concurrent one-statement calls of an owned pool share one pipeline (pikku_pg._batcher).

Every outcome must be what the call would have got alone. In the sync flavour threads
do not batch, so these tests check the same outcomes without the batching itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, errors
from psycopg.rows import class_row, dict_row, namedtuple_row, scalar_row, tuple_row

from pikku_pg._acompat import agather, asleep, aspawn
from pikku_pg._async._database import AsyncDatabase
from pikku_pg._batcher import MAX_BATCH
from pikku_pg.errors import DatabaseUnavailableError

Call = Callable[[], Awaitable[Any]]


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[AsyncDatabase]:
    database = AsyncDatabase(pg_dsn, pool_kwargs={"min_size": 2, "max_size": 4})
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def table(admin_conn: AsyncConnection[Any]) -> AsyncIterator[str]:
    await admin_conn.execute("CREATE TABLE batching_t (v int PRIMARY KEY)")
    try:
        yield "batching_t"
    finally:
        await admin_conn.execute("DROP TABLE batching_t")


async def _together(db: AsyncDatabase, calls: list[Call], hold: float = 0.2) -> list[Any]:
    """Run ``calls`` at once, behind a call still in flight, so they form one batch.

    Returns each call's result or the exception it raised, in order. Threads do not
    batch: the sync flavour runs the calls one after another, which gives the outcomes
    that batching must reproduce.
    """
    outcomes: dict[int, Any] = {}

    async def one(i: int, call: Call) -> None:
        try:
            outcomes[i] = await call()
        except Exception as exc:
            outcomes[i] = exc

    if True:  # ASYNC
        holder = aspawn(db.execute, (b"SELECT pg_sleep(%s)", (hold,)))
        await asleep(0.05)
        tasks = [aspawn(one, (i, call)) for i, call in enumerate(calls)]
        await agather(holder, *tasks, timeout=30)
    else:
        for i, call in enumerate(calls):
            one(i, call)
    return [outcomes[i] for i in range(len(calls))]


async def test_concurrent_calls_share_one_transaction_on_one_connection(
    db: AsyncDatabase,
) -> None:
    query = b"SELECT pg_backend_pid(), pg_current_xact_id()::text"
    calls: list[Call] = [lambda: db.fetch_one(query, row_factory=tuple_row) for _ in range(5)]
    outcomes = await _together(db, calls)
    assert all(isinstance(o, tuple) for o in outcomes)
    if True:  # ASYNC
        assert len(set(outcomes)) == 1  # one backend, one transaction
    else:
        assert len({o[1] for o in outcomes}) == 5  # one transaction each


async def test_a_long_queue_is_split_into_batches_in_order(db: AsyncDatabase) -> None:
    query = b"SELECT %s::int, pg_current_xact_id()::text"
    calls: list[Call] = [
        lambda i=i: db.fetch_one(query, (i,), row_factory=tuple_row)
        for i in range(2 * MAX_BATCH + 3)
    ]
    outcomes = await _together(db, calls)
    assert [o[0] for o in outcomes] == list(range(len(calls)))
    transactions = [o[1] for o in outcomes]
    if True:  # ASYNC
        firsts = transactions[::MAX_BATCH]
        assert transactions == [x for x in firsts for _ in range(MAX_BATCH)][: len(calls)]
        assert len(set(firsts)) == 3
    else:
        assert len(set(transactions)) == len(calls)


async def test_a_failing_statement_fails_only_its_own_caller(
    db: AsyncDatabase, table: str, admin_conn: AsyncConnection[Any]
) -> None:
    insert = b"INSERT INTO batching_t (v) VALUES (%s) RETURNING v"
    calls: list[Call] = [
        lambda: db.fetch_one(insert, (1,), row_factory=tuple_row),
        lambda: db.execute(b"INSERT INTO batching_t (v) VALUES (2)"),
        lambda: db.fetch_one(insert, (1,), row_factory=tuple_row),  # unique violation
        lambda: db.fetch_one(insert, (3,), row_factory=tuple_row),
        lambda: db.fetch_one(b"SELECT 1 / 0", row_factory=tuple_row),
        # Cannot run in a transaction block, so fails in the batch but not alone.
        lambda: db.execute(b"VACUUM batching_t"),
        lambda: db.fetch_all(b"SELECT v FROM batching_t ORDER BY v", row_factory=scalar_row),
    ]
    outcomes = await _together(db, calls)
    assert outcomes[0] == (1,)
    assert outcomes[1] == 1
    assert isinstance(outcomes[2], errors.UniqueViolation)
    assert outcomes[3] == (3,)
    assert isinstance(outcomes[4], errors.DivisionByZero)
    assert not isinstance(outcomes[5], Exception)
    assert outcomes[6] == [1, 2, 3]  # ran after the others, in order
    cur = await admin_conn.execute("SELECT v FROM batching_t ORDER BY v")
    assert await cur.fetchall() == [(1,), (2,), (3,)]


async def test_an_error_raised_by_a_later_execute_runs_the_unsent_calls(
    db: AsyncDatabase, table: str, admin_conn: AsyncConnection[Any], monkeypatch: Any
) -> None:
    """psycopg raises a pipeline's error from the next ``execute`` once the answer is in.

    Each execute waits long enough for the server's answer to the statements before it,
    so the division by zero surfaces while the inserts are not sent yet: they must still
    run, and their callers get their rows, not a cancellation.
    """
    execute = psycopg.AsyncCursor.execute

    async def answered_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        await asleep(0.05)
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", answered_execute)
    insert = b"INSERT INTO batching_t (v) VALUES (%s) RETURNING v"
    calls: list[Call] = [
        lambda: db.fetch_one(b"SELECT 1 / 0", row_factory=tuple_row),
        lambda: db.fetch_one(insert, (1,), row_factory=tuple_row),
        lambda: db.fetch_one(insert, (2,), row_factory=tuple_row),
    ]
    outcomes = await _together(db, calls, hold=0.1)
    assert isinstance(outcomes[0], errors.DivisionByZero)
    assert outcomes[1:] == [(1,), (2,)]
    cur = await admin_conn.execute("SELECT v FROM batching_t ORDER BY v")
    assert await cur.fetchall() == [(1,), (2,)]


async def test_a_call_refused_before_reaching_the_server_fails_alone(
    db: AsyncDatabase, table: str
) -> None:
    calls: list[Call] = [
        lambda: db.execute(b"INSERT INTO batching_t (v) VALUES (1)"),
        lambda: db.fetch_one(b"SELECT %s", (1, 2), row_factory=tuple_row),  # 2 params for 1
        lambda: db.execute(b"INSERT INTO batching_t (v) VALUES (1)"),  # unique violation
        lambda: db.fetch_all(b"SELECT v FROM batching_t", row_factory=scalar_row),
    ]
    outcomes = await _together(db, calls)
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], psycopg.ProgrammingError)
    assert isinstance(outcomes[2], errors.UniqueViolation)
    assert outcomes[3] == [1]


async def test_statements_of_different_callers_run_in_call_order(
    db: AsyncDatabase, table: str
) -> None:
    calls: list[Call] = [
        lambda: db.execute(b"INSERT INTO batching_t (v) VALUES (10)"),
        lambda: db.execute(b"UPDATE batching_t SET v = 11 WHERE v = 10"),
        lambda: db.execute(b"UPDATE batching_t SET v = 12 WHERE v = 11"),
        lambda: db.fetch_all(b"SELECT v FROM batching_t", row_factory=scalar_row),
    ]
    assert await _together(db, calls) == [1, 1, 1, [12]]


@dataclass
class _Pair:
    n: int
    name: str


@dataclass
class _Wrong:
    other: int


async def test_every_row_factory_gives_what_it_gives_alone(db: AsyncDatabase) -> None:
    query = b"SELECT n, 'r' || n AS name FROM generate_series(1, %s) AS n"
    factories: list[Any] = [tuple_row, dict_row, namedtuple_row, class_row(_Pair), scalar_row]
    alone = []
    for factory in factories:
        alone.append(await db.fetch_all(query, (3,), row_factory=factory))
        alone.append(await db.fetch_one(query, (3,), row_factory=factory))
        alone.append(await db.fetch_one(query, (0,), row_factory=factory))
    alone.append(await db.execute(b"SELECT generate_series(1, 4)"))
    calls: list[Call] = []
    for factory in factories:
        calls.append(lambda f=factory: db.fetch_all(query, (3,), row_factory=f))
        calls.append(lambda f=factory: db.fetch_one(query, (3,), row_factory=f))
        calls.append(lambda f=factory: db.fetch_one(query, (0,), row_factory=f))
    calls.append(lambda: db.execute(b"SELECT generate_series(1, 4)"))
    # A row factory refusing the rows fails that call only.
    calls.append(lambda: db.fetch_all(query, (3,), row_factory=class_row(_Wrong)))
    outcomes = await _together(db, calls)
    assert outcomes[:-1] == alone
    assert alone[0] == [(1, "r1"), (2, "r2"), (3, "r3")]
    assert alone[-1] == 4
    assert isinstance(outcomes[-1], TypeError)


# Only tasks can be cancelled (threads cannot): this test has no sync twin.
if True:  # ASYNC

    async def test_a_cancelled_caller_does_not_disturb_the_others(
        db: AsyncDatabase, admin_conn: AsyncConnection[Any]
    ) -> None:
        results: dict[str, Any] = {}

        async def call(key: str, query: bytes) -> None:
            results[key] = await db.fetch_one(query, row_factory=tuple_row)

        holder = aspawn(db.execute, (b"SELECT pg_sleep(0.3)",))
        await asleep(0.05)
        queued = aspawn(call, ("queued", b"SELECT 1"))
        in_flight = aspawn(call, ("in flight", b"SELECT 2, pg_sleep(0.3)"))
        other = aspawn(call, ("other", b"SELECT 3"))
        await asleep(0)  # the three have queued their statements; the batch has not started
        queued.cancel()
        await asleep(0.1)  # now the batch is in the database
        in_flight.cancel()
        await agather(holder, other, timeout=10)
        assert queued.cancelled()
        assert in_flight.cancelled()
        assert results == {"other": (3,)}
        # The pool's connections are back, idle and usable.
        calls: list[Call] = [lambda: db.fetch_one(b"SELECT 4", row_factory=tuple_row)] * 8
        assert await _together(db, calls, hold=0.05) == [(4,)] * 8
        cur = await admin_conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert await cur.fetchone() == (0,)


@pytest.mark.timeout(60)
async def test_a_lost_connection_fails_every_caller_of_its_batch(
    db: AsyncDatabase, admin_conn: AsyncConnection[Any]
) -> None:
    marker = "pikku-batching-kill-me"
    sleeper = f"SELECT pg_sleep(20) /* {marker} */".encode()
    calls: list[Call] = [
        lambda: db.fetch_one(b"SELECT 1", row_factory=tuple_row),
        lambda: db.execute(sleeper),
        lambda: db.fetch_one(b"SELECT 3", row_factory=tuple_row),
    ]

    async def kill() -> None:
        for _ in range(200):
            cur = await admin_conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            )
            if await cur.fetchall():
                return
            await asleep(0.05)

    killer = aspawn(kill)
    outcomes = await _together(db, calls)
    await agather(killer, timeout=10)
    lost = (DatabaseUnavailableError, psycopg.OperationalError)
    assert isinstance(outcomes[1], lost)
    if True:  # ASYNC
        assert all(isinstance(o, lost) for o in outcomes)
    else:
        assert outcomes[0] == (1,)
        assert outcomes[2] == (3,)
    # Later calls work, alone and batched.
    assert await db.fetch_one(b"SELECT 5", row_factory=tuple_row) == (5,)
    more: list[Call] = [lambda: db.fetch_one(b"SELECT 6", row_factory=tuple_row)] * 4
    assert await _together(db, more, hold=0.05) == [(6,)] * 4


async def test_borrowed_pools_and_connections_are_not_batched(conn_source: Any) -> None:
    database = AsyncDatabase(conn_source)
    try:
        assert (database._batcher is not None) == isinstance(conn_source, str)
    finally:
        await database.close()
