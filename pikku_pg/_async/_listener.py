"""One LISTEN connection: connect, LISTEN, drain notifications, reconnect with back-off.

The event hub and the workflow workers both listen this way. The hub reads the
payloads of each batch on the listener's own connection; a worker only wakes its
executors.

LISTEN is session state, so the listener holds a dedicated connection, never one of
a pool. Behind PgBouncer in transaction mode that connection must reach PostgreSQL
(or a session-mode pool) directly: that is what ``listen_conninfo`` is for.

When the connection drops, the listener logs a warning and connects again at once;
each failed attempt waits ``reconnect_delay`` seconds, doubled after every further
failure up to ``max_reconnect_delay``, and a success starts over from
``reconnect_delay``. Notifications sent while it was disconnected are lost (NOTIFY
is not durable), so its user is told each time it listens again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from pikku_pg._acompat import AEvent, await_event
from pikku_pg._async._database import ConnectionSource
from pikku_pg._check import check_optional_text
from pikku_pg.errors import DatabaseUnavailableError, InvalidInputError

#: Seconds to wait after a failed connection attempt (then doubled, up to the maximum).
RECONNECT_DELAY = 0.1
#: The longest wait between two connection attempts, in seconds.
MAX_RECONNECT_DELAY = 5.0
#: Seconds the listener waits for notifications before checking whether to stop.
POLL_INTERVAL = 0.2

# Keepalives make a silently dead network link (no FIN, no RST) visible to the listener.
_CONNECT_KWARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "connect_timeout": 10,
}

# async flavour: a coroutine function; sync flavour: a plain function.  # unasync: keep
BatchHandler: TypeAlias = Callable[[AsyncConnection[Any], list[str]], Any]


@dataclass(frozen=True)
class ListenTarget:
    """Where a listener connects: a conninfo and the connection keyword arguments."""

    conninfo: str
    kwargs: Mapping[str, Any]


def check_listen_conninfo(value: object) -> str | None:
    """None (listen where the service connects), or a non-empty conninfo string."""
    conninfo = check_optional_text("listen_conninfo", value)
    if conninfo is not None and not conninfo.strip():
        raise InvalidInputError("listen_conninfo must not be empty")
    return conninfo


def listen_target(
    conn: ConnectionSource,
    listen_conninfo: str | None,
    connect_kwargs: Mapping[str, Any] | None,
    *,
    application_name: str,
) -> ListenTarget:
    """Where the listener of a service built on ``conn`` connects.

    ``listen_conninfo`` when given; otherwise the server of ``conn`` (a conninfo, a
    pool with a fixed conninfo, or a borrowed connection, whose password libpq does
    not show). The service's ``connect_kwargs`` apply, except ``autocommit``: a
    listener is always in autocommit mode.
    """
    kwargs = {**_CONNECT_KWARGS, "application_name": application_name}
    conninfo = check_listen_conninfo(listen_conninfo)
    if conninfo is not None:
        return ListenTarget(conninfo, kwargs)
    if isinstance(conn, str):
        return ListenTarget(conn, {**kwargs, **_without_autocommit(connect_kwargs)})
    if isinstance(conn, AsyncConnectionPool):
        if not isinstance(conn.conninfo, str) or not isinstance(conn.kwargs, (dict, type(None))):
            raise InvalidInputError(
                "the pool computes its connection parameters: pass listen_conninfo"
            )
        return ListenTarget(conn.conninfo, {**kwargs, **_without_autocommit(conn.kwargs)})
    password = conn.pgconn.password
    params = {"password": password.decode()} if password else {}
    return ListenTarget(make_conninfo(conn.info.dsn, **params), kwargs)


def _without_autocommit(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (kwargs or {}).items() if k != "autocommit"}


class Backoff:
    """The waits between connection attempts: ``first`` seconds after a failure,
    doubled after each further failure up to ``limit``; :meth:`reset` after a success."""

    def __init__(self, first: float, limit: float) -> None:
        self._first = first
        self._limit = limit
        self._next = first

    def next_delay(self) -> float:
        """How long to wait after this failure (the next one waits longer)."""
        delay = self._next
        self._next = min(delay * 2, self._limit)
        return delay

    def reset(self) -> None:
        """A connection succeeded: the next failure waits ``first`` again."""
        self._next = self._first


class AsyncListener:
    """LISTENs on ``channel`` over a dedicated connection; ``await on_batch(conn, payloads)``
    runs for each batch of notifications (on that connection, which is idle meanwhile).

    ``await listener.run()`` (a task; a daemon thread in the sync flavour) drains the
    notifications until :meth:`stop`, reconnecting with back-off (see the module
    documentation). ``on_listening()`` runs each time LISTEN is active again, so
    its user can catch up with what it may have missed.
    """

    def __init__(
        self,
        target: ListenTarget,
        channel: str,
        on_batch: BatchHandler,
        *,
        label: str,
        log: logging.Logger,
        on_listening: Callable[[], None] | None = None,
        poll_interval: float = POLL_INTERVAL,
        reconnect_delay: float = RECONNECT_DELAY,
        max_reconnect_delay: float = MAX_RECONNECT_DELAY,
    ) -> None:
        self._target = target
        self._channel = channel
        self._on_batch = on_batch
        self._on_listening = on_listening
        self._label = label
        self._log = log
        self._poll_interval = poll_interval
        self._backoff = Backoff(reconnect_delay, max_reconnect_delay)
        self._stopping = False
        self._stop_event = AEvent()
        self._pid: int | None = None
        self._reconnects = 0

    @property
    def pid(self) -> int | None:
        """The backend pid of the current connection (None when not connected)."""
        return self._pid

    @property
    def reconnects(self) -> int:
        """How many times the listener connected again after losing its connection."""
        return self._reconnects

    def stop(self) -> None:
        """Ask :meth:`run` to return (within ``poll_interval`` seconds)."""
        self._stopping = True
        self._stop_event.set()

    async def connect(self) -> AsyncConnection[Any]:
        """A new connection with LISTEN active; :class:`DatabaseUnavailableError` when
        the server cannot be reached."""
        try:
            return await self._open()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"{self._label} cannot connect: {exc}") from exc

    async def run(self, conn: AsyncConnection[Any] | None = None) -> None:
        """Drain notifications until :meth:`stop`, starting with ``conn`` (from
        :meth:`connect`) if given; reconnect whenever the connection drops."""
        connected_before = conn is not None
        while not self._stopping:
            if conn is None:
                conn = await self._try_to_connect()
                if conn is None:
                    continue
                if connected_before:
                    self._reconnects += 1
                    self._log.warning("%s reconnected", self._label)
                connected_before = True
            await self._drain(conn)
            conn = None

    async def _open(self) -> AsyncConnection[Any]:
        conn = await AsyncConnection.connect(
            self._target.conninfo, autocommit=True, **self._target.kwargs
        )
        try:
            await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        self._pid = conn.info.backend_pid
        if self._on_listening is not None:
            self._on_listening()
        return conn

    async def _try_to_connect(self) -> AsyncConnection[Any] | None:
        """A listening connection, or None after waiting out the back-off delay."""
        try:
            conn = await self._open()
        except psycopg.Error as exc:
            delay = self._backoff.next_delay()
            self._log.warning(
                "%s cannot connect (%s); retrying in %g s", self._label, _reason(exc), delay
            )
            await await_event(self._stop_event, delay)
            return None
        self._backoff.reset()
        return conn

    async def _drain(self, conn: AsyncConnection[Any]) -> None:
        """Hand batches of notifications over until stopped or the connection drops."""
        try:
            while not self._stopping:
                # stop_after=1 still returns every notification of the packet read:
                # a burst arrives as one batch.
                batch = [
                    notify.payload
                    async for notify in conn.notifies(timeout=self._poll_interval, stop_after=1)
                ]
                if batch:
                    await self._handle(conn, batch)
        except psycopg.Error as exc:
            if not self._stopping:
                self._log.warning(
                    "%s lost its connection (%s); reconnecting", self._label, _reason(exc)
                )
        finally:
            self._pid = None
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _handle(self, conn: AsyncConnection[Any], batch: list[str]) -> None:
        try:
            await self._on_batch(conn, batch)
        except psycopg.Error:
            raise  # the connection is lost: reconnect
        except Exception:  # one bad batch must not stop the listener
            self._log.exception("%s failed to handle notifications", self._label)


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
