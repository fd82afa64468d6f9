"""How a service reaches PostgreSQL: an owned pool, a borrowed pool or one connection."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import AsyncRowFactory
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from pikku_pg._acompat import ALock
from pikku_pg._batcher import AsyncBatcher, Fetch
from pikku_pg._check import quote
from pikku_pg._connect import (
    check_conninfo,
    check_kwargs,
    connect_timeout,
    connection_lost,
    database_error,
    describe_server,
    owned_connection_kwargs,
    owned_pool_kwargs,
)
from pikku_pg.errors import (
    DatabaseUnavailableError,
    InvalidArgumentTypeError,
    ServiceClosedError,
)

Row = TypeVar("Row")


class _Mode(enum.Enum):
    PLAIN = "plain"
    TRANSACTION = "transaction"
    PIPELINE = "pipeline"


@asynccontextmanager
async def _scope(conn: AsyncConnection[Any], mode: _Mode) -> AsyncIterator[None]:
    """Enter the transaction (and pipeline) that ``mode`` asks for on ``conn``."""
    if mode is _Mode.PLAIN:
        yield
    elif mode is _Mode.TRANSACTION:
        async with conn.transaction():
            yield
    else:
        # Pipeline first, so BEGIN is queued with the statements instead of sent alone.
        async with conn.pipeline(), conn.transaction():
            yield


Params = Sequence[Any] | Mapping[str, Any] | None

ConnectionSource = str | AsyncConnectionPool[Any] | AsyncConnection[Any]


class AsyncDatabase:
    """The connection source of a service.

    A conninfo string makes a pool that this object owns: it is opened on first use
    (or by :meth:`open`) and closed by :meth:`close`. Its connections are in
    autocommit, so a one-statement call costs one round trip, and concurrent
    one-statement calls share one (see ``pikku_pg._batcher``). A pool or connection
    passed in is borrowed and never closed. A borrowed single connection is used by
    one call at a time; a pool is never locked around, each call checks out its own
    connection.

    Errors: a lost connection becomes :class:`DatabaseUnavailableError` and a missing
    table or schema :class:`SchemaNotInitializedError` (naming ``schema`` and
    ``components``, the service's), with the psycopg error as ``__cause__``; other
    psycopg errors pass through, for the services' own handlers. A statement marked
    ``read=True`` that fails on a lost connection runs once more, on a fresh pooled
    connection; a write never does, since whether it was applied is unknown.
    """

    def __init__(
        self,
        source: ConnectionSource,
        *,
        connect_kwargs: Mapping[str, Any] | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
        schema: str | None = None,
        components: Sequence[str] = (),
    ) -> None:
        self._schema = schema
        self._components = tuple(components)
        self._pool: AsyncConnectionPool[Any] | None = None
        self._connection: AsyncConnection[Any] | None = None
        self._owns_pool = False
        self._pool_opened = False
        self._closed = False
        self._open_lock = ALock()
        self._connection_lock = ALock()
        # Only an owned pool's one-statement calls are batched: its connections are in
        # autocommit, while a borrowed pool may not be and a borrowed connection may be
        # inside the caller's transaction.
        self._batcher: AsyncBatcher | None = None
        if isinstance(source, str):
            self._conninfo = check_conninfo(source)
            self._owns_pool = True
            connection_kwargs = owned_connection_kwargs(source, connect_kwargs)
            self._connection_kwargs = connection_kwargs
            try:
                self._pool = AsyncConnectionPool(
                    source,
                    kwargs=connection_kwargs,
                    open=False,
                    **owned_pool_kwargs(pool_kwargs),
                )
            except (TypeError, ValueError) as exc:  # an option the pool does not take
                raise InvalidArgumentTypeError(f"pool_kwargs: {quote(str(exc))}") from None
            self._connect_timeout = connect_timeout(source, connection_kwargs)
            self._batcher = AsyncBatcher(self._checkout, self._checkin)
            return
        if check_kwargs("connect_kwargs", connect_kwargs) or check_kwargs(
            "pool_kwargs", pool_kwargs
        ):
            raise InvalidArgumentTypeError(
                "connect_kwargs and pool_kwargs apply only to a conninfo string"
            )
        if isinstance(source, AsyncConnectionPool):
            self._pool = source
        elif isinstance(source, AsyncConnection):
            self._connection = source
        else:
            raise InvalidArgumentTypeError(
                "expected a conninfo string, a psycopg_pool.AsyncConnectionPool or a "
                f"psycopg.AsyncConnection, not {type(source).__name__}"
            )

    @property
    def single_connection(self) -> bool:
        """Whether every call shares one borrowed connection (so no session state is private)."""
        return self._connection is not None

    @property
    def owns_pool(self) -> bool:
        """Whether this object created its pool (and so closes it)."""
        return self._owns_pool

    async def open(self) -> None:
        """Open an owned pool now, failing within the connect timeout if unreachable."""
        if self._closed:
            raise ServiceClosedError()
        if not self._owns_pool or self._pool_opened:
            return
        async with self._open_lock:
            if self._pool_opened:
                return
            assert self._pool is not None
            # One direct attempt first: an unreachable server fails at once, with
            # libpq's reason, instead of after the pool's retries time out.
            where = describe_server(self._conninfo)
            try:
                probe = await AsyncConnection.connect(self._conninfo, **self._connection_kwargs)
            except psycopg.Error as exc:
                raise DatabaseUnavailableError(
                    f"cannot connect to PostgreSQL at {where}: {str(exc).strip()[:500]}"
                ) from exc
            await probe.close()
            try:
                await self._pool.open(wait=True, timeout=self._connect_timeout + 1.0)
            except PoolTimeout:
                await self._pool.close()
                raise DatabaseUnavailableError(
                    f"cannot connect to PostgreSQL at {where}: timed out opening the pool"
                ) from None
            self._pool_opened = True

    async def close(self) -> None:
        """Close an owned pool; borrowed pools and connections are left open."""
        self._closed = True
        if self._owns_pool and self._pool is not None:
            await self._pool.close()

    async def _checkout(self) -> AsyncConnection[Any]:
        """A connection of the pool (opening an owned one first), with clear errors.

        A bare checkout, not the pool's context manager: that one adds a commit call
        and two generator frames to every statement.
        """
        if self._closed:
            raise ServiceClosedError()
        if self._owns_pool and not self._pool_opened:
            await self.open()
        assert self._pool is not None
        try:
            conn: AsyncConnection[Any] = await self._pool.getconn()
        except PoolClosed:
            raise DatabaseUnavailableError(
                "the connection pool is closed", transient=False
            ) from None
        except PoolTimeout as exc:
            raise DatabaseUnavailableError(f"no pooled connection available: {exc}") from None
        return conn

    async def _checkin(self, conn: AsyncConnection[Any]) -> None:
        """Give back a connection of :meth:`_checkout` (the pool replaces a broken one)."""
        assert self._pool is not None
        await self._pool.putconn(conn)

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A connection for one call.

        On a borrowed connection outside autocommit the block runs in its own
        transaction (a savepoint inside the caller's), so it never leaves the
        connection idle in a transaction nor aborts the caller's on error.
        """
        return self._acquire(_Mode.PLAIN)

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A connection inside a transaction: all of the block's writes or none.

        Inside a caller's transaction (a borrowed connection) this is a savepoint.
        """
        return self._acquire(_Mode.TRANSACTION)

    def pipeline(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A pipelined transaction: BEGIN, the statements and COMMIT in one round trip.

        Results are fetched after a sync point (``await cur.fetchall()`` forces one).
        """
        return self._acquire(_Mode.PIPELINE)

    @asynccontextmanager
    async def _acquire(self, mode: _Mode) -> AsyncIterator[AsyncConnection[Any]]:
        if self._closed:
            raise ServiceClosedError()
        try:
            if self._connection is not None:
                async with self._connection_lock:
                    conn = self._connection
                    if conn.closed:
                        raise DatabaseUnavailableError(
                            "the borrowed connection is closed", transient=False
                        )
                    if mode is _Mode.PLAIN and not conn.autocommit:
                        mode = _Mode.TRANSACTION
                    async with _scope(conn, mode):
                        yield conn
                return
            conn = await self._checkout()
            try:
                if mode is _Mode.PLAIN and not conn.autocommit:
                    # A borrowed pool's: commit on success, roll back on error, as the
                    # pool's own context manager does (the block may commit by itself).
                    async with conn:
                        yield conn
                else:
                    async with _scope(conn, mode):
                        yield conn
            finally:
                await self._checkin(conn)
        except psycopg.Error as exc:  # raised by the block or by its COMMIT
            self._raise_mapped(exc)
            raise

    def _raise_mapped(self, exc: psycopg.Error) -> None:
        """Raise the ``pikku_pg.errors`` form of ``exc``, if it has one (else return)."""
        mapped = database_error(exc, self._schema, self._components)
        if mapped is not None:
            raise mapped from exc

    def _retries(self, exc: DatabaseUnavailableError, read: bool) -> bool:
        """Whether a failed call runs once more: a read, on a pool, after a lost connection."""
        return read and self._pool is not None and connection_lost(exc.__cause__)

    async def _discard_broken(self) -> None:
        """Drop the pool's idle connections that died with the one we lost (a restart
        or a failover ends them all), so the retry gets a live one."""
        assert self._pool is not None
        await self._pool.check()

    async def _run(self, query: bytes, params: Params, row_factory: Any, fetch: Fetch) -> Any:
        """One statement, on the batcher of an owned pool or on a connection of its own."""
        if self._batcher is not None:
            try:
                return await self._batcher.run(query, params, row_factory, fetch)
            except psycopg.Error as exc:
                self._raise_mapped(exc)
                raise
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=row_factory)
            await cur.execute(query, params)
            if fetch is Fetch.ALL:
                return await cur.fetchall()
            if fetch is Fetch.ONE:
                return await cur.fetchone()
            return cur.rowcount

    async def fetch_all(
        self,
        query: bytes,
        params: Params = None,
        *,
        row_factory: AsyncRowFactory[Row],
        read: bool = False,
    ) -> list[Row]:
        """Run one statement and return all its rows.

        ``read=True``: the statement only reads, so it is run again once if the
        connection was lost.
        """
        try:
            rows: list[Row] = await self._run(query, params, row_factory, Fetch.ALL)
        except DatabaseUnavailableError as exc:
            if not self._retries(exc, read):
                raise
            await self._discard_broken()
            rows = await self._run(query, params, row_factory, Fetch.ALL)
        return rows

    async def fetch_one(
        self,
        query: bytes,
        params: Params = None,
        *,
        row_factory: AsyncRowFactory[Row],
        read: bool = False,
    ) -> Row | None:
        """Run one statement and return its first row, or None (``read``: as in
        :meth:`fetch_all`)."""
        try:
            row: Row | None = await self._run(query, params, row_factory, Fetch.ONE)
        except DatabaseUnavailableError as exc:
            if not self._retries(exc, read):
                raise
            await self._discard_broken()
            row = await self._run(query, params, row_factory, Fetch.ONE)
        return row

    async def execute(self, query: bytes, params: Params = None) -> int:
        """Run one statement and return the number of rows it touched (never retried)."""
        count: int = await self._run(query, params, None, Fetch.ROWCOUNT)
        return count
