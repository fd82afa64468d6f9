"""Connection-form fixtures: every service test runs over the three ways to connect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

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
