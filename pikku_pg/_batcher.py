"""One-statement calls of an owned pool, sent together when they are concurrent.

With many calls in flight, the async flavour spends its CPU on a pool checkout and an
event-loop wait per call. :class:`AsyncBatcher` does what postgres.js does: the calls
that arrive while another is in flight are queued, and one task sends the whole queue
in one pipeline on one pooled connection, with a single sync. The calls arriving
meanwhile form the next batch, on another connection, so a slow statement only
delays its own batch. A call with nothing else in flight runs directly, as before.

Only an owned pool's connections are used (they are in autocommit): a borrowed pool
may not be, and a borrowed connection may be inside the caller's transaction. Calls
that rely on session state (LISTEN, session advisory locks, SET) use
``connection()``, which never goes through here.

:class:`Batcher` is the sync twin (``scripts/unasync.py`` renames ``AsyncBatcher``): a
thread blocked in libpq releases the GIL and pays no event-loop wait, so threads simply
run their statement on their own pooled connection.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection, Connection

Params = Sequence[Any] | Mapping[str, Any] | None


class Fetch(enum.Enum):
    """What a one-statement call returns."""

    ALL = "all"  # every row
    ONE = "one"  # the first row, or None
    ROWCOUNT = "rowcount"  # the number of rows touched


class _Call:
    __slots__ = ("fetch", "future", "params", "query", "row_factory")

    def __init__(
        self,
        query: bytes,
        params: Params,
        row_factory: Any,
        fetch: Fetch,
        future: asyncio.Future[Any],
    ) -> None:
        self.query = query
        self.params = params
        self.row_factory = row_factory
        self.fetch = fetch
        self.future = future

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Hand the caller its outcome, unless it was cancelled meanwhile."""
        if self.future.done():
            return
        if error is None:
            self.future.set_result(result)
        else:
            self.future.set_exception(error)


async def _result(cur: psycopg.AsyncCursor[Any], fetch: Fetch) -> Any:
    if fetch is Fetch.ALL:
        return await cur.fetchall()
    if fetch is Fetch.ONE:
        return await cur.fetchone()
    return cur.rowcount


async def _run_alone(
    conn: AsyncConnection[Any], query: bytes, params: Params, row_factory: Any, fetch: Fetch
) -> Any:
    cur = conn.cursor(row_factory=row_factory)
    await cur.execute(query, params)
    return await _result(cur, fetch)


def _is_lost(conn: AsyncConnection[Any]) -> bool:
    return conn.closed or conn.broken


def _from_server(exc: Exception) -> bool:
    """Whether ``exc`` is a statement's failure (raised by a later ``execute``)."""
    return bool(getattr(exc, "sqlstate", None)) or isinstance(exc, psycopg.errors.PipelineAborted)


# SQLSTATE classes of errors caused by sharing a transaction with the rest of the batch
# (deadlock, serialization failure, "cannot run inside a transaction block"): run
# alone, the statement may well succeed.
_BATCH_CAUSED = ("25", "40")


# Past this many calls, the next ones start another batch on another connection: while
# the server runs one batch, Python can handle the results of the other (measured with
# 16 in flight: reads of 50 rows lose a fifth of their throughput in single batches).
MAX_BATCH = 8


class AsyncBatcher:
    """Runs the one-statement calls of an owned pool, batching concurrent ones."""

    def __init__(
        self,
        checkout: Callable[[], Awaitable[AsyncConnection[Any]]],
        checkin: Callable[[AsyncConnection[Any]], Awaitable[None]],
    ) -> None:
        self._checkout = checkout
        self._checkin = checkin
        self._in_flight = 0  # direct calls and batches (queued or running)
        self._queue: list[_Call] | None = None  # the next batch, until its task starts
        self._tasks: set[asyncio.Task[None]] = set()  # strong references to running batches

    async def run(self, query: bytes, params: Params, row_factory: Any, fetch: Fetch) -> Any:
        """Run one statement and return what ``fetch`` asks for."""
        if not self._in_flight:
            # Alone: no batch to join, so no task hop; later callers batch behind us.
            self._in_flight += 1
            try:
                conn = await self._checkout()
                try:
                    return await _run_alone(conn, query, params, row_factory, fetch)
                finally:
                    await self._checkin(conn)
            finally:
                self._in_flight -= 1
        loop = asyncio.get_running_loop()
        call = _Call(query, params, row_factory, fetch, loop.create_future())
        if self._queue is None or len(self._queue) >= MAX_BATCH:
            # The task starts on a later loop turn: every call queued until then joins.
            self._queue = []
            self._in_flight += 1
            task = loop.create_task(self._run_batch(self._queue))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._batch_done, self._queue))
        self._queue.append(call)
        return await call.future

    async def _run_batch(self, batch: list[_Call]) -> None:
        if self._queue is batch:
            self._queue = None  # callers from now on form the next batch
        calls = [c for c in batch if not c.future.done()]  # skip the cancelled
        if not calls:
            return
        try:
            conn = await self._checkout()
            try:
                if len(calls) == 1:
                    await self._run_each(conn, calls)
                else:
                    await self._run_pipeline(conn, calls)
            finally:
                await self._checkin(conn)
        except Exception as exc:
            # No connection, or it was lost mid-batch (so whether the batch committed
            # is unknown): every caller gets the error, as a direct call would.
            for call in calls:
                call.settle(error=exc)

    def _batch_done(self, batch: list[_Call], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._queue is batch:  # the task was cancelled before it started
            self._queue = None
        for call in batch:  # if the task died, nobody waits forever (no-op if settled)
            call.future.cancel()

    async def _run_pipeline(self, conn: AsyncConnection[Any], batch: list[_Call]) -> None:
        sent: list[tuple[_Call, psycopg.AsyncCursor[Any]]] = []
        try:
            async with conn.pipeline() as pipeline:
                for call in batch:
                    cur = conn.cursor(row_factory=call.row_factory)
                    try:
                        await cur.execute(call.query, call.params)
                    except Exception as exc:
                        if _is_lost(conn) or _from_server(exc):
                            raise
                        # Refused by psycopg before anything was sent (parameters that
                        # do not fit): that caller's error; the batch goes on.
                        call.settle(error=exc)
                        continue
                    sent.append((call, cur))
                await pipeline.sync()
        except Exception as exc:
            if _is_lost(conn):
                raise
            # The statements up to the Sync were one implicit transaction: the first
            # one without a result failed, and its error rolled back the others. Its
            # caller gets that error; the others run again, alone (nothing of theirs
            # was committed), and so get what they would have got without batching.
            failed = next((call for call, cur in sent if cur.pgresult is None), None)
            sqlstate = getattr(exc, "sqlstate", None) or ""
            if failed is not None and sqlstate and not sqlstate.startswith(_BATCH_CAUSED):
                failed.settle(error=exc)
            # psycopg may raise an earlier statement's error from a later execute(): the
            # calls not sent yet run alone too (``_run_each`` skips the settled ones).
            await self._run_each(conn, batch)
            return
        for call, cur in sent:
            try:
                result = await _result(cur, call.fetch)
            except Exception as exc:  # a row factory refusing a row: that caller's error
                call.settle(error=exc)
            else:
                call.settle(result)

    async def _run_each(self, conn: AsyncConnection[Any], batch: list[_Call]) -> None:
        """Run the calls one by one, in order, each with its own outcome."""
        for call in batch:
            if call.future.done():
                continue
            try:
                result = await _run_alone(
                    conn, call.query, call.params, call.row_factory, call.fetch
                )
            except Exception as exc:
                if _is_lost(conn):
                    raise
                call.settle(error=exc)
            else:
                call.settle(result)


class Batcher:
    """The sync twin: each thread runs its statement on its own pooled connection."""

    def __init__(
        self,
        checkout: Callable[[], Connection[Any]],
        checkin: Callable[[Connection[Any]], None],
    ) -> None:
        self._checkout = checkout
        self._checkin = checkin

    def run(self, query: bytes, params: Params, row_factory: Any, fetch: Fetch) -> Any:
        """Run one statement and return what ``fetch`` asks for."""
        conn = self._checkout()
        try:
            cur = conn.cursor(row_factory=row_factory)
            cur.execute(query, params)
            if fetch is Fetch.ALL:
                return cur.fetchall()
            if fetch is Fetch.ONE:
                return cur.fetchone()
            return cur.rowcount
        finally:
            self._checkin(conn)
