"""Session advisory locks held for the length of a ``with`` block.

A lock is keyed by ``hashtextextended(key_text, 0)`` (64 bits). On a pool, the
lock lives on a connection checked out for the block and left idle (never idle in
a transaction); the block's own queries use other connections. The lock is
released when the block ends, also on an exception, and by the server when the
holding connection dies (process crash, network loss, ``pg_terminate_backend``).

Behind PgBouncer in *transaction* pooling mode a session lock is unsafe: between
two transactions PgBouncer may hand the server connection holding it to another
client, and the unlock may run on another server connection, leaving the lock
held. Give the service that takes locks a direct (or session-pooled) conninfo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from pikku_pg._async._database import AsyncDatabase
from pikku_pg._check import check_number
from pikku_pg._sql.workflow import LockQueries
from pikku_pg.errors import DatabaseUnavailableError, LockTimeoutError

_MAX_LOCK_TIMEOUT_MS = 2**31 - 1
_Q = LockQueries.unscoped()


def check_timeout(timeout: object) -> float | None:
    """None (wait forever) or a number of seconds (0: do not wait at all; NaN is refused,
    infinity waits forever)."""
    if timeout is None:
        return None
    seconds = check_number("timeout", timeout, finite=False, min=0)
    if seconds * 1000 > _MAX_LOCK_TIMEOUT_MS:
        return None  # beyond what lock_timeout can express (24 days): wait as long as it takes
    return seconds


async def _acquire(conn: AsyncConnection[Any], key: str, timeout: float | None, what: str) -> None:
    """Take the session lock on ``conn``; the connection is not left in a transaction."""
    params = {"key": key}
    cur = conn.cursor(row_factory=tuple_row)
    if timeout is None:
        await cur.execute(_Q.lock, params)
    elif timeout <= 0:
        await cur.execute(_Q.try_lock, params)
        row = await cur.fetchone()
        if not row or not row[0]:
            raise LockTimeoutError(f"{what} is locked by another holder")
    else:
        # lock_timeout bounds the wait; it is scoped to this transaction (or restored,
        # inside a caller's transaction). One round trip.
        ms = f"{max(1, round(timeout * 1000))}ms"
        try:
            async with conn.pipeline(), conn.transaction():
                await cur.execute(_Q.set_lock_timeout, {"timeout": ms})
                await cur.execute(_Q.lock, params)
                await cur.execute(_Q.restore_lock_timeout)
        except psycopg.errors.LockNotAvailable:
            raise LockTimeoutError(f"could not lock {what} within {timeout:g} s") from None


async def _end_transaction(conn: AsyncConnection[Any]) -> None:
    """End the transaction that a SELECT opened on a non-autocommit pooled connection.

    Session locks survive it; the connection must not stay idle in a transaction.
    """
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        await conn.commit()


@asynccontextmanager
async def advisory_lock(
    db: AsyncDatabase,
    key: str,
    *,
    timeout: float | None,
    what: str,
    shared_connection: bool,
) -> AsyncIterator[None]:
    """Hold the session advisory lock ``key`` for the block.

    ``shared_connection``: the service has one borrowed connection, which the block
    needs for its own queries, so the lock is taken and released with two short
    uses of it (session locks are re-entrant: holders sharing that one connection
    do not exclude each other, only other sessions).
    """
    if shared_connection:
        async with db.connection() as conn:
            await _acquire(conn, key, timeout, what)
        try:
            yield
        finally:
            try:
                async with db.connection() as conn:
                    await conn.execute(_Q.unlock, {"key": key})
            except (psycopg.OperationalError, DatabaseUnavailableError):
                pass  # the connection is gone, and the lock with it
        return

    async with db.connection() as conn:
        try:
            await _acquire(conn, key, timeout, what)
            await _end_transaction(conn)
        except LockTimeoutError:
            await _end_transaction(conn)
            raise
        except BaseException:
            # Interrupted mid-acquire (cancelled, connection lost): the lock may be
            # held; closing the connection is the only sure way to release it.
            await conn.close()
            raise
        block_error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            # Raised again below, outside the connection block: the caller's own errors
            # must not go through the database layer's mapping of psycopg errors.
            block_error = exc
        finally:
            await _release(conn, key)
    if block_error is not None:
        raise block_error


async def _release(conn: AsyncConnection[Any], key: str) -> None:
    try:
        await conn.execute(_Q.unlock, {"key": key})
        await _end_transaction(conn)
    except BaseException as exc:
        # A lock that cannot be released must not go back to the pool with its
        # connection: close it (the server then drops the lock). A connection that
        # died already released it.
        await conn.close()
        if not isinstance(exc, psycopg.Error):
            raise
