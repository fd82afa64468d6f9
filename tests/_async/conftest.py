"""Shared fixtures: the three ways to connect (every service test runs over them) and
the services most tests need, initialised and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from pikku_pg import AsyncPgWorkflowService

Service = TypeVar("Service", bound=Any)


@asynccontextmanager
async def initialised(service: Service) -> AsyncIterator[Service]:
    """``service`` with its schema initialised; closed when the block ends."""
    try:
        await service.init()
        yield service
    finally:
        await service.close()


CONNECTION_FORMS = ["conninfo", "pool", "connection"]


@pytest.fixture(params=CONNECTION_FORMS)
async def conn_source(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[Any]:
    """A conninfo string, a borrowed pool, or a borrowed single connection.

    The single connection is left in psycopg's default (not autocommit) mode, the
    harder case: the services must not leave it idle in a transaction.
    """
    if request.param == "conninfo":
        yield pg_dsn
    elif request.param == "pool":
        async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=4, open=False) as pool:
            yield pool
    else:
        conn = await AsyncConnection.connect(pg_dsn)
        try:
            yield conn
        finally:
            await conn.close()


@pytest.fixture
async def admin_conn(pg_dsn: str) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection for a test to look at (or set up) the database directly."""
    conn = await AsyncConnection.connect(pg_dsn, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def wf(conn_source: Any, schema_name: str) -> AsyncIterator[AsyncPgWorkflowService]:
    """A workflow service over each connection form."""
    async with initialised(AsyncPgWorkflowService(conn_source, schema_name)) as service:
        yield service


@pytest.fixture
async def wf_owned(pg_dsn: str, schema_name: str) -> AsyncIterator[AsyncPgWorkflowService]:
    """A workflow service owning its pool (workers, concurrency and pure logic)."""
    async with initialised(AsyncPgWorkflowService(pg_dsn, schema_name)) as service:
        yield service
