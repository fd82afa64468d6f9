"""The deployment registry: start/stop, heartbeats, find_function, bad input, restarts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg import sql as pgsql

from pikku_pg._acompat import asleep
from pikku_pg._async.deployment import AsyncPgDeploymentService
from pikku_pg._embedded import EmbeddedPostgres
from pikku_pg.errors import ConflictError, InvalidInputError, ServiceClosedError
from pikku_pg.models.deployment import DeploymentConfig, DeploymentInfo
from tests.catalog import catalog_differences

# Heartbeats every 50 ms keep the tests fast.
FAST = {"heartbeat_interval": 0.05, "heartbeat_ttl": 5.0}


async def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asleep(0.01)


@pytest.fixture
async def registry(conn_source: Any, schema_name: str) -> AsyncIterator[AsyncPgDeploymentService]:
    service = AsyncPgDeploymentService(conn_source, schema_name, **FAST)
    await service.init()
    yield service
    await service.stop()
    if isinstance(conn_source, AsyncConnection):
        assert conn_source.info.transaction_status.name == "IDLE"


async def _rows(admin: AsyncConnection[Any], schema: str) -> dict[str, tuple[Any, ...]]:
    cur = await admin.execute(
        pgsql.SQL(
            "SELECT deployment_id, endpoint, functions, last_heartbeat FROM {}.pikku_deployments"
        ).format(pgsql.Identifier(schema))
    )
    return {row[0]: row[1:] for row in await cur.fetchall()}


async def _insert(
    admin: AsyncConnection[Any], schema: str, deployment_id: str, functions: list[str], age: float
) -> None:
    await admin.execute(
        pgsql.SQL(
            "INSERT INTO {}.pikku_deployments (deployment_id, endpoint, functions, last_heartbeat)"
            " VALUES (%s, %s, %s, now() - make_interval(secs => %s))"
        ).format(pgsql.Identifier(schema)),
        (deployment_id, f"http://{deployment_id}", functions, age),
    )


async def test_start_beats_finds_and_stop_removes(
    registry: AsyncPgDeploymentService, admin_conn: AsyncConnection[Any]
) -> None:
    await registry.start("d1", "http://d1:3000", ["users.get", "users.list"])
    assert registry.deployment_id == "d1"
    first = (await _rows(admin_conn, registry.schema))["d1"]
    assert first[:2] == ("http://d1:3000", ["users.get", "users.list"])
    assert await registry.find_function("users.get") == [
        DeploymentInfo(deployment_id="d1", endpoint="http://d1:3000")
    ]
    assert (await registry.find_function("users.list"))[0].model_dump(by_alias=True) == {
        "deploymentId": "d1",
        "endpoint": "http://d1:3000",
    }
    assert await registry.find_function("users") == []
    await _wait_until(lambda: registry.heartbeats >= 2, "two heartbeats")
    assert (await _rows(admin_conn, registry.schema))["d1"][2] > first[2]
    await registry.stop()
    assert await _rows(admin_conn, registry.schema) == {}
    await registry.stop()  # twice: nothing happens
    with pytest.raises(ServiceClosedError):
        await registry.find_function("users.get")


async def test_find_function_returns_live_deployments_newest_first(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgDeploymentService(pg_dsn, schema_name, heartbeat_ttl=30.0) as registry:
        await registry.init()
        await _insert(admin_conn, schema_name, "old", ["f"], age=20)
        await _insert(admin_conn, schema_name, "new", ["f", "g"], age=1)
        await _insert(admin_conn, schema_name, "dead", ["f"], age=31)
        await _insert(admin_conn, schema_name, "other", ["g"], age=0)
        found = await registry.find_function("f")
        assert [d.deployment_id for d in found] == ["new", "old"]
        assert found[0].endpoint == "http://new"


async def test_list_deployments_shows_live_and_stale_ones(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgDeploymentService(pg_dsn, schema_name, heartbeat_ttl=30.0) as registry:
        await registry.init()
        assert await registry.list_deployments() == []
        await _insert(admin_conn, schema_name, "old", ["f"], age=20)
        await _insert(admin_conn, schema_name, "new", ["f", "g"], age=1)
        await _insert(admin_conn, schema_name, "dead", ["f"], age=600)
        await _insert(admin_conn, schema_name, "other", ["g"], age=5)
        listed = await registry.list_deployments()
        # Live ones first (newest beat first), then the stale one.
        assert [(d.deployment_id, d.live) for d in listed] == [
            ("new", True),
            ("other", True),
            ("old", True),
            ("dead", False),
        ]
        new, dead = listed[0], listed[-1]
        assert (new.endpoint, new.functions) == ("http://new", ["f", "g"])
        assert 599 < dead.heartbeat_age.total_seconds() < 700
        assert dead.created_at >= dead.last_heartbeat
        assert new.model_dump(by_alias=True)["deploymentId"] == "new"
        serving_f = await registry.list_deployments(function="f")
        assert [d.deployment_id for d in serving_f] == ["new", "old", "dead"]
        live_f = await registry.list_deployments(function="f", live_only=True)
        assert [d.deployment_id for d in live_f] == ["new", "old"]
        assert [d.deployment_id for d in await registry.list_deployments(ttl=10.0)] == [
            "new",
            "other",
            "old",
            "dead",
        ]
        assert [d.live for d in await registry.list_deployments(ttl=10.0)] == [
            True,
            True,
            False,
            False,
        ]
        assert len(await registry.list_deployments(limit=2)) == 2
        assert await registry.list_deployments(function="nobody") == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"function": 3}, "function name"),
        ({"function": "a\x00b"}, "function name"),
        ({"live_only": "yes"}, "live_only"),
        ({"ttl": float("nan")}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"limit": 0}, "limit"),
        ({"limit": 2**40}, "limit"),
    ],
)
async def test_list_deployments_refuses_bad_input(
    pg_dsn: str, schema_name: str, kwargs: dict[str, Any], name: str
) -> None:
    # No init(): a bad argument is refused before any SQL runs.
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        with pytest.raises(InvalidInputError, match=f"^{name} "):
            await registry.list_deployments(**kwargs)


async def test_find_function_names_with_array_syntax(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    """The name travels as an array literal: quotes, backslashes and commas stay text."""
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        await registry.init()
        await _insert(admin_conn, schema_name, "d1", ['say "hi"', "back\\slash"], age=0)
        await _insert(admin_conn, schema_name, "d2", ["a,b", "{x}"], age=0)
        assert [d.deployment_id for d in await registry.find_function('say "hi"')] == ["d1"]
        assert [d.deployment_id for d in await registry.find_function("back\\slash")] == ["d1"]
        assert [d.deployment_id for d in await registry.find_function("a,b")] == ["d2"]
        assert [d.deployment_id for d in await registry.find_function("{x}")] == ["d2"]
        assert await registry.find_function("a") == []


async def _find_function_plan(
    admin_conn: AsyncConnection[Any], schema_name: str, setting: str, function: str
) -> str:
    """EXPLAIN of the prepared find_function query for ``function``, under ``SET LOCAL setting``."""
    from pikku_pg._sql import deployment, render

    query = render(deployment.FIND_FUNCTION, schema_name)
    query = query.replace("%s", "$1", 1).replace("%s", "$2", 1)
    async with admin_conn.transaction():
        await admin_conn.execute(f"SET LOCAL {setting}")
        await admin_conn.execute(f"PREPARE find(text[], float8) AS {query}")
        cur = await admin_conn.execute(f"EXPLAIN EXECUTE find('{{{function}}}', 30)")
        plan = "\n".join(row[0] for row in await cur.fetchall())
        await admin_conn.execute("DEALLOCATE find")
    return plan


async def test_find_function_uses_the_gin_index(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        await registry.init()
    plan = await _find_function_plan(admin_conn, schema_name, "enable_seqscan = off", "f")
    assert "idx_pikku_deployments_functions" in plan, plan


async def test_find_function_keeps_using_the_gin_index_after_heartbeats(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    """Heartbeats rewrite rows and outrun the statistics: the GIN index stays the path."""
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        await registry.init()
    table = pgsql.Identifier(schema_name, "pikku_deployments")
    await admin_conn.execute(
        pgsql.SQL(
            "INSERT INTO {} (deployment_id, endpoint, functions)"
            " SELECT 'd' || d, 'http://d' || d,"
            " ARRAY(SELECT 'f' || (d * 7 % 40 + k) FROM generate_series(0, 19) k)"
            " FROM generate_series(1, 200) d"
        ).format(table)
    )
    # Statistics taken an hour ago (they always lag behind heartbeats), then a few rounds
    # of heartbeats: dead rows, and new entries in the GIN index.
    await admin_conn.execute(
        pgsql.SQL("UPDATE {} SET last_heartbeat = now() - interval '1 hour'").format(table)
    )
    await admin_conn.execute(pgsql.SQL("ANALYZE {}").format(table))
    for _ in range(5):
        await admin_conn.execute(pgsql.SQL("UPDATE {} SET last_heartbeat = now()").format(table))
    cur = await admin_conn.execute(
        "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
        (f'"{schema_name}".idx_pikku_deployments_functions',),
    )
    assert await cur.fetchone() == (["fastupdate=off"],)
    # The plans a prepared find_function may run, with no planner setting forced.
    for plans in ("force_generic_plan", "force_custom_plan"):
        plan = await _find_function_plan(
            admin_conn, schema_name, f"plan_cache_mode = {plans}", "f0"
        )
        assert "Bitmap Index Scan on idx_pikku_deployments_functions" in plan, plan
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        assert len(await registry.find_function("f0")) == 5


async def test_start_accepts_a_model_or_a_dict(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgDeploymentService(pg_dsn, schema_name, **FAST) as one:
        await one.init()
        await one.start(DeploymentConfig(deployment_id="m", endpoint="e1", functions=["a", "a"]))
        async with AsyncPgDeploymentService(pg_dsn, schema_name, **FAST) as two:
            await two.start({"deploymentId": "d", "endpoint": "e2", "functions": ["b"]})
            rows = await _rows(admin_conn, schema_name)
            assert rows["m"][:2] == ("e1", ["a"])
            assert rows["d"][:2] == ("e2", ["b"])
    assert await _rows(admin_conn, schema_name) == {}  # `async with` stops both


async def test_start_twice_and_stop_before_start(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgDeploymentService(pg_dsn, schema_name, **FAST) as other:
        await other.init()
        await other.start("other", "http://other", ["f"])
        registry = AsyncPgDeploymentService(pg_dsn, schema_name, **FAST)
        await registry.stop()  # before start: releases the pool, touches no row
        await registry.stop()
        assert set(await _rows(admin_conn, schema_name)) == {"other"}
        with pytest.raises(ServiceClosedError):
            await registry.start("late", "http://late", ["f"])
        with pytest.raises(ConflictError, match="already started as 'other'"):
            await other.start("other2", "http://other", ["f"])
        assert set(await _rows(admin_conn, schema_name)) == {"other"}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("d", "e", "users.get"), "functions must be a list of str, not str"),
        (("d", "e", ["ok", "bad\x00"]), "function name contains a NUL"),
        (("d", "e", ["ok", ""]), "function name must not be empty"),
        (("d", "e", [1]), "function name must be a str, not int"),
        (("", "e", ["f"]), "deployment_id must not be empty"),
        (("d" * 256, "e", ["f"]), "deployment_id is 256 characters"),
        (("d\x00", "e", ["f"]), "deployment_id contains a NUL"),
        (("d", None, ["f"]), "endpoint must be a str, not NoneType"),
        (({"deploymentId": "d"},), "invalid deployment config"),
        (({"deploymentId": "d", "endpoint": "e"}, "e"), "either a deployment config"),
    ],
)
async def test_start_refuses_bad_input_and_writes_nothing(
    registry: AsyncPgDeploymentService,
    admin_conn: AsyncConnection[Any],
    args: tuple[Any, ...],
    match: str,
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        await registry.start(*args)
    assert await _rows(admin_conn, registry.schema) == {}
    assert registry.deployment_id is None
    await registry.start("d", "e", ["f"])  # the service is still usable


async def test_bad_settings_and_function_names(pg_dsn: str, schema_name: str) -> None:
    for kwargs, match in [
        ({"heartbeat_interval": 0}, "heartbeat_interval must be a positive"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval must be a positive"),
        ({"heartbeat_ttl": "30"}, "heartbeat_ttl must be a number of seconds, not str"),
        ({"heartbeat_interval": 10, "heartbeat_ttl": 10}, "must be longer than"),
        ({"heartbeat_interval": float("inf")}, "must be a positive"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            AsyncPgDeploymentService(pg_dsn, schema_name, **kwargs)
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        with pytest.raises(InvalidInputError, match="function name contains a NUL"):
            await registry.find_function("f\x00")
        with pytest.raises(InvalidInputError, match="function name must be a str"):
            await registry.find_function(None)  # type: ignore[arg-type]


async def test_heartbeat_registers_again_a_row_removed_behind_its_back(
    registry: AsyncPgDeploymentService,
    admin_conn: AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await registry.start("d1", "http://d1", ["f"])
    await admin_conn.execute(
        pgsql.SQL("DELETE FROM {}.pikku_deployments").format(pgsql.Identifier(registry.schema))
    )
    beats = registry.heartbeats
    await _wait_until(lambda: registry.heartbeats >= beats + 2, "two more heartbeats")
    assert [d.deployment_id for d in await registry.find_function("f")] == ["d1"]
    assert any("registered again" in r.getMessage() for r in caplog.records)


async def test_heartbeat_survives_a_server_restart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pikku_pg.deployment")
    # A private server: restarting the shared one would break the other tests' connections.
    with EmbeddedPostgres() as server:
        registry = AsyncPgDeploymentService(
            server.dsn,
            heartbeat_interval=0.05,
            heartbeat_ttl=5.0,
            pool_kwargs={"timeout": 0.5, "reconnect_timeout": 60},
            connect_kwargs={"connect_timeout": 2},
        )
        await registry.init()
        await registry.start("d1", "http://d1", ["f"])
        await _wait_until(lambda: registry.heartbeats >= 1, "a first heartbeat")
        with server.down():
            await _wait_until(lambda: registry.heartbeat_failures >= 2, "failed heartbeats")
        beats = registry.heartbeats
        await _wait_until(lambda: registry.heartbeats >= beats + 2, "heartbeats after restart")
        assert [d.deployment_id for d in await registry.find_function("f")] == ["d1"]
        await registry.stop()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM pikku.pikku_deployments").fetchone() == (0,)
    messages = [r.getMessage() for r in caplog.records]
    assert any("heartbeat failed" in m for m in messages), messages
    assert any("heartbeat recovered" in m for m in messages), messages


async def test_schema_matches_the_typescript_catalog(pg_dsn: str, schema_name: str) -> None:
    async with AsyncPgDeploymentService(pg_dsn, schema_name) as registry:
        assert await registry.init() == [("deployment", 1), ("deployment", 2)]
    assert catalog_differences(pg_dsn, "pikku", schema_name, ["pikku_deployments"]) == []
