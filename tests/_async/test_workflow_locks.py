"""run_lock / step_lock: exclusion, timeouts, release on errors and on dead connections."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection

from pikku_pg import AsyncPgWorkflowService
from pikku_pg._acompat import AEvent, agather, asleep, aspawn
from pikku_pg.errors import InvalidInputError, LockTimeoutError, WorkflowRunNotFoundError

HOLDERS_SQL = """\
SELECT l.pid, a.state
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
"""


def _run_key(schema: str, run_id: str) -> str:
    return f"pikku_pg:{schema}:workflow:run:{run_id}"


async def _holders(admin: AsyncConnection[Any], key: str) -> list[tuple[int, str]]:
    cur = await admin.execute(HOLDERS_SQL, (key,))
    return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]


@pytest.fixture
async def other(pg_dsn: str, schema_name: str) -> AsyncIterator[AsyncPgWorkflowService]:
    """A second service (another process, in effect) on the same schema."""
    service = AsyncPgWorkflowService(pg_dsn, schema_name)
    try:
        yield service
    finally:
        await service.close()


async def test_run_lock_excludes_and_releases(
    wf: AsyncPgWorkflowService,
    other: AsyncPgWorkflowService,
    admin_conn: AsyncConnection[Any],
    schema_name: str,
) -> None:
    run_id = str(uuid.uuid4())
    async with wf.run_lock(run_id):
        holders = await _holders(admin_conn, _run_key(schema_name, run_id))
        # One holder, keyed with the 64-bit hash, and not idle in a transaction.
        assert len(holders) == 1 and holders[0][1] == "idle"
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match=run_id):
            async with other.run_lock(run_id, timeout=0.2):
                pytest.fail("acquired a held lock")
        assert 0.15 < time.monotonic() - started < 3
        with pytest.raises(LockTimeoutError):
            async with other.run_lock(run_id, timeout=0):
                pytest.fail("acquired a held lock")
        # The service keeps working while it holds the lock.
        assert await wf.get_run(run_id) is None
    assert await _holders(admin_conn, _run_key(schema_name, run_id)) == []
    async with other.run_lock(run_id, timeout=1):
        assert len(await _holders(admin_conn, _run_key(schema_name, run_id))) == 1
    cur = await admin_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
        " AND datname = current_database()"
    )
    row = await cur.fetchone()
    assert row is not None and row[0] == 0


async def test_lock_released_on_exception(
    wf: AsyncPgWorkflowService, other: AsyncPgWorkflowService
) -> None:
    run_id = str(uuid.uuid4())
    with pytest.raises(ZeroDivisionError):
        async with wf.run_lock(run_id):
            _ = 1 / 0
    async with other.run_lock(run_id, timeout=0):
        pass
    with pytest.raises(KeyError):
        async with wf.step_lock(run_id, "s", timeout=5):
            raise KeyError("x")
    async with other.step_lock(run_id, "s", timeout=0):
        pass


async def test_waiter_acquires_when_released(pg_dsn: str, schema_name: str) -> None:
    async with (
        AsyncPgWorkflowService(pg_dsn, schema_name) as a,
        AsyncPgWorkflowService(pg_dsn, schema_name) as b,
    ):
        run_id = str(uuid.uuid4())
        events: list[str] = []
        held = AEvent()

        async def holder() -> None:
            async with a.run_lock(run_id):
                events.append("a in")
                held.set()
                await asleep(0.3)
                events.append("a out")

        async def waiter() -> None:
            await held.wait()
            async with b.run_lock(run_id):  # no timeout: waits as long as needed
                events.append("b in")

        await agather(aspawn(holder), aspawn(waiter))
        assert events == ["a in", "a out", "b in"]


async def test_dead_holder_releases_lock(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    async with (
        AsyncPgWorkflowService(pg_dsn, schema_name) as a,
        AsyncPgWorkflowService(pg_dsn, schema_name) as b,
    ):
        await a.init()
        run_id = await a.create_run("w", {})
        key = _run_key(schema_name, run_id)
        async with a.run_lock(run_id):
            [(pid, _)] = await _holders(admin_conn, key)
            await admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            async with b.run_lock(run_id, timeout=5):
                assert [p for p, _ in await _holders(admin_conn, key)] != [pid]
        # The holder's block ended quietly and its pool replaced the dead connection.
        assert await _holders(admin_conn, key) == []
        assert (await a.get_run(run_id)) is not None
        async with a.run_lock(run_id, timeout=1):
            pass


async def test_step_locks_are_independent(
    wf: AsyncPgWorkflowService, other: AsyncPgWorkflowService
) -> None:
    run_id = str(uuid.uuid4())
    async with wf.step_lock(run_id, "a.b 'c'"):
        async with other.step_lock(run_id, "a.b 'd'", timeout=0), other.run_lock(run_id, timeout=0):
            pass
        with pytest.raises(LockTimeoutError, match="a.b 'c'"):
            async with other.step_lock(run_id, "a.b 'c'", timeout=0.05):
                pass


async def test_lock_timeout_inside_caller_transaction(pg_dsn: str, schema_name: str) -> None:
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        wf = AsyncPgWorkflowService(conn, schema_name)
        await wf.init()
        run_id = str(uuid.uuid4())
        async with conn.transaction():
            async with wf.run_lock(run_id, timeout=2):
                pass
            cur = await conn.execute("SHOW lock_timeout")
            row = await cur.fetchone()
            assert row is not None and row[0] == "0"
        assert conn.info.transaction_status.name == "IDLE"
    finally:
        await conn.close()


async def test_lock_bad_input(wf: AsyncPgWorkflowService) -> None:
    run_id = str(uuid.uuid4())
    for timeout in (-1, "1", float("nan"), True):
        with pytest.raises(InvalidInputError, match="timeout"):
            async with wf.run_lock(run_id, timeout=timeout):  # type: ignore[arg-type]
                pass
    async with wf.run_lock(run_id, timeout=float("inf")):
        pass  # too long for lock_timeout: waits without one
    async with wf.step_lock(run_id, "s", timeout=1e12):
        pass
    with pytest.raises(WorkflowRunNotFoundError):
        wf.run_lock("not-a-uuid")
    with pytest.raises(InvalidInputError, match="NUL"):
        wf.step_lock(run_id, "a\x00")
    with pytest.raises(InvalidInputError, match="run_id"):
        wf.run_lock(12)  # type: ignore[arg-type]
