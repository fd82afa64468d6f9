"""One error family: lost connections, closed services and missing schemas, for every service.

Backends are ended with ``pg_terminate_backend`` (what a failover or a restart does to
a client); nothing is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from pikku_pg import (
    AsyncPgAgentRunService,
    AsyncPgAIStorageService,
    AsyncPgChannelStore,
    AsyncPgDeploymentService,
    AsyncPgEventHubService,
    AsyncPgEventHubStore,
    AsyncPgWorkflowRunService,
    AsyncPgWorkflowService,
    AsyncWorkflowStateStore,
)
from pikku_pg._acompat import asleep
from pikku_pg._async._database import AsyncDatabase
from pikku_pg._async._service import AsyncPgService
from pikku_pg._embedded import EmbeddedPostgres
from pikku_pg.errors import (
    ChannelNotFoundError,
    DatabaseUnavailableError,
    PikkuPgError,
    SchemaNotInitializedError,
    ServiceClosedError,
)

Call = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Case:
    """A service, one pure read and one write (with the table the write adds a row to)."""

    name: str
    make: Callable[..., AsyncPgService]  # (source, schema, **options)
    components: tuple[str, ...]
    read: Call
    write: Call
    table: str | None = None  # the write adds one row here
    write_uses_tables: bool = True  # False: it works on a schema without tables


def _workflow_service(source: Any, schema: str, **options: Any) -> AsyncPgWorkflowService:
    wf = AsyncPgWorkflowService(source, schema, **options)

    @wf.workflow("echo")
    async def echo(ctx: Any, value: Any) -> Any:
        return value

    return wf


async def _find_channel(store: AsyncPgChannelStore, channel_id: str) -> Any:
    try:
        return await store.get_channel_and_session(channel_id)
    except ChannelNotFoundError:
        return None


CASES = [
    Case(
        "ai",
        AsyncPgAIStorageService,
        ("ai",),
        read=lambda s: s.get_threads("r"),
        write=lambda s: s.create_thread("r"),
        table="ai_threads",
    ),
    Case(
        "ai console",
        AsyncPgAgentRunService,
        ("ai",),
        read=lambda s: s.list_threads(),
        write=lambda s: s.delete_thread("t"),
    ),
    Case(
        "channels",
        AsyncPgChannelStore,
        ("channel",),
        read=lambda s: _find_channel(s, "c0"),
        write=lambda s: s.add_channel("c1", "chat"),
        table="channels",
    ),
    Case(
        "event hub store",
        AsyncPgEventHubStore,
        ("channel",),
        read=lambda s: s.get_channel_ids_for_topic("news"),
        write=lambda s: s.unsubscribe("news", "c1"),
    ),
    Case(
        "event hub",
        AsyncPgEventHubService,
        ("channel",),
        read=lambda s: s.get_channel_ids_for_topic("news"),
        write=lambda s: s.publish("news", {"n": 1}),  # a NOTIFY
        write_uses_tables=False,
    ),
    Case(
        "deployments",
        AsyncPgDeploymentService,
        ("deployment",),
        read=lambda s: s.find_function("f"),
        write=lambda s: s.start("d1", "http://d1", ["f"]),
        table="pikku_deployments",
    ),
    Case(
        "workflow runs",
        AsyncPgWorkflowRunService,
        ("workflow",),
        read=lambda s: s.list_runs(),
        write=lambda s: s.delete_run(str(uuid.uuid4())),
    ),
    Case(
        "workflow state",
        AsyncWorkflowStateStore,
        ("workflow",),
        read=lambda s: s.get_run(str(uuid.uuid4())),
        write=lambda s: s.create_run("w", {}),
        table="workflow_runs",
    ),
    Case(
        "workflows",
        _workflow_service,
        ("workflow", "workflow_queue"),
        read=lambda s: s.get_run(str(uuid.uuid4())),
        write=lambda s: s.start_workflow("echo", 1),
        table="workflow_runs",
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def service(case: Case, conn_source: Any, schema_name: str) -> AsyncIterator[Any]:
    svc = case.make(conn_source, schema_name)
    try:
        yield svc
    finally:
        await svc.close()


async def _backend_pids(admin: AsyncConnection[Any]) -> list[int]:
    """The client backends of the test database, but the admin connection's own."""
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return [row[0] for row in await cur.fetchall()]


async def _terminate_backends(admin: AsyncConnection[Any]) -> list[int]:
    """End every other client backend of the test database (the service's connections)
    and wait until they are gone."""
    pids = await _backend_pids(admin)
    assert pids, "the service holds no connection to terminate"
    await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    for _ in range(250):
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s::int[])", (pids,)
        )
        row = await cur.fetchone()
        if row is not None and row[0] == 0:
            return pids
        await asleep(0.02)
    raise AssertionError(f"backends {pids} are still alive")


async def _count(admin: AsyncConnection[Any], schema: str, table: str) -> int:
    cur = await admin.execute(
        pgsql.SQL("SELECT count(*) FROM {}.{}").format(
            pgsql.Identifier(schema), pgsql.Identifier(table)
        )
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _assert_lost(exc: BaseException) -> None:
    assert isinstance(exc, DatabaseUnavailableError), repr(exc)
    assert exc.transient is True
    assert isinstance(exc.__cause__, psycopg.Error), repr(exc.__cause__)


async def test_a_write_on_a_terminated_connection_raises_and_is_not_retried(
    case: Case, service: Any, conn_source: Any, admin_conn: AsyncConnection[Any]
) -> None:
    await service.init()
    await case.read(service)  # the service now holds a connection
    before = None if case.table is None else await _count(admin_conn, service.schema, case.table)
    await _terminate_backends(admin_conn)
    with pytest.raises(DatabaseUnavailableError) as raised:
        await case.write(service)
    _assert_lost(raised.value)
    if case.table is not None:
        # Retried, the write would have added its row on a fresh connection.
        assert await _count(admin_conn, service.schema, case.table) == before


async def test_a_read_on_a_terminated_connection_is_retried_once(
    case: Case, service: Any, conn_source: Any, admin_conn: AsyncConnection[Any]
) -> None:
    await service.init()
    await case.read(service)
    await _terminate_backends(admin_conn)
    if not isinstance(conn_source, AsyncConnection):
        await case.read(service)  # a pool gives the retry a fresh connection
        assert await _backend_pids(admin_conn)
        return
    # One borrowed connection: no other to retry on, and it stays closed.
    with pytest.raises(DatabaseUnavailableError) as raised:
        await case.read(service)
    _assert_lost(raised.value)
    with pytest.raises(DatabaseUnavailableError, match="borrowed connection is closed") as again:
        await case.read(service)
    assert again.value.transient is False


async def test_a_closed_service_raises_service_closed(case: Case, service: Any) -> None:
    await service.init()
    await service.close()
    for call in (case.read, case.write):
        with pytest.raises(ServiceClosedError) as raised:
            await call(service)
        assert raised.value.transient is False


async def test_a_schema_never_initialised_is_named_with_its_fix(
    case: Case, service: Any, schema_name: str
) -> None:
    for call in (case.read, case.write) if case.write_uses_tables else (case.read,):
        with pytest.raises(SchemaNotInitializedError) as raised:
            await call(service)
        error = raised.value
        assert error.schema == schema_name
        assert error.components == case.components
        assert isinstance(error.__cause__, psycopg.Error)
        message = str(error)
        assert schema_name in message and "init()" in message
        options = " ".join(f"--component {c}" for c in case.components)
        assert f"pikku-pg migrate {options} --schema {schema_name}" in message


async def test_the_quoted_migrate_command_initialises_the_schema(
    pg_dsn: str, schema_name: str
) -> None:
    from pikku_pg.cli import main

    async with AsyncPgAIStorageService(pg_dsn, schema_name) as ai:
        with pytest.raises(SchemaNotInitializedError) as raised:
            await ai.get_threads("r")
        command = str(raised.value).split("`")[1].split()
        assert command[:2] == ["pikku-pg", "migrate"]
        assert main([*command[1:], "--dsn", pg_dsn]) == 0
        assert await ai.get_threads("r") == []


async def test_serialization_failures_are_transient(pg_dsn: str) -> None:
    db = AsyncDatabase(pg_dsn)
    try:
        with pytest.raises(DatabaseUnavailableError, match="try again") as raised:
            await db.execute(
                b"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
            )
        assert raised.value.transient is True
        assert isinstance(raised.value.__cause__, psycopg.errors.SerializationFailure)
        # Other server errors stay psycopg errors, for the services' own handlers.
        with pytest.raises(psycopg.errors.DivisionByZero):
            await db.fetch_one(b"SELECT 1 / 0", row_factory=tuple_row, read=True)
    finally:
        await db.close()


async def test_a_closed_borrowed_pool_is_not_transient(pg_dsn: str) -> None:
    pool = AsyncConnectionPool(pg_dsn, min_size=1, open=False)
    await pool.open()
    await pool.close()
    db = AsyncDatabase(pool)
    with pytest.raises(DatabaseUnavailableError, match="pool is closed") as raised:
        await db.fetch_one(b"SELECT 1", row_factory=tuple_row, read=True)
    assert raised.value.transient is False
    assert isinstance(raised.value, PikkuPgError)


async def _outcome(call: Call, service: Any, raw: list[BaseException]) -> str:
    """ "ok", or the name of the pikku_pg error; anything else is recorded in ``raw``."""
    try:
        await call(service)
    except PikkuPgError as exc:
        return type(exc).__name__
    except Exception as exc:
        raw.append(exc)
        return "raw"
    return "ok"


RESTART_CASES = [c for c in CASES if c.name in ("ai", "channels", "workflow runs", "workflows")]


async def test_every_call_failing_across_a_server_restart_is_a_pikku_pg_error() -> None:
    # A private server: restarting the shared one would break the other tests' connections.
    raw: list[BaseException] = []
    with EmbeddedPostgres() as server:
        options = {"pool_kwargs": {"timeout": 0.3, "reconnect_timeout": 60}}
        services = [(c, c.make(server.dsn, "restart", **options)) for c in RESTART_CASES]
        try:
            for case, svc in services:
                await svc.init()
                assert await _outcome(case.read, svc, raw) == "ok"
            server.restart()  # every pooled connection dies
            failed_writes = [await _outcome(c.write, s, raw) for c, s in services]
            after_restart = [await _outcome(c.read, s, raw) for c, s in services]
            with server.down():
                while_down = [await _outcome(c.read, s, raw) for c, s in services]
            for _ in range(50):  # the pools reconnect in the background
                back = [await _outcome(c.read, s, raw) for c, s in services]
                if back == ["ok"] * len(services):
                    break
                await asleep(0.1)
        finally:
            for _, svc in services:
                await svc.close()
    assert raw == []
    assert after_restart == ["ok"] * len(services)  # retried on a fresh connection
    # Each pool's first statement ran on a dead connection; a write is not retried.
    assert failed_writes == ["DatabaseUnavailableError"] * len(services)
    assert while_down == ["DatabaseUnavailableError"] * len(services)
    assert back == ["ok"] * len(services)


async def test_the_callers_own_errors_inside_a_lock_block_are_left_alone(
    conn_source: Any, schema_name: str
) -> None:
    store = AsyncWorkflowStateStore(conn_source, schema_name)
    try:
        await store.init()
        run_id = await store.create_run("w", {})
        own = psycopg.OperationalError("the caller's own connection was lost")
        with pytest.raises(psycopg.OperationalError) as raised:
            async with store.run_lock(run_id):
                raise own
        assert raised.value is own  # not turned into DatabaseUnavailableError
        async with store.run_lock(run_id, timeout=0):
            pass  # and the lock was released
    finally:
        await store.close()
