"""A cross-process event hub over PostgreSQL LISTEN/NOTIFY (beyond TypeScript 0.12.1).

Any process may :meth:`~AsyncPgEventHubService.publish` to a topic; every process whose
event hub service subscribed a channel to that topic receives the event, with the ids of
its own subscribed channels, and can forward it to those sockets.

How it works, and what it promises:

* LISTEN and NOTIFY need no privilege: every role that can connect to the database can
  listen to any channel and notify any payload. So by default the data never travels in
  the NOTIFY. ``publish`` stores it in the ``event_hub_payloads`` table with a random
  128-bit token and, in the same statement (one round trip, one transaction), notifies
  ``{"t": topic, "r": payload id, "k": token}`` on the schema's channel
  (``pikku_event_hub_<schema>``). A listener delivers an event only after reading it
  back from the table (which only roles granted access to the schema can read) where the
  id, the token *and* the topic all match. Notifications drained together are checked in
  one query, and only for topics this process holds channels of. So a role that can only
  connect sees topic names and timing, never data, and cannot make a hub deliver anything
  that was not published to that topic; forged, malformed and repeated notifications
  are dropped and counted in :attr:`~AsyncPgEventHubService.stats` (``forged``).
* ``inline_payloads=True`` is the faster, open mode: data whose envelope
  (``{"t": topic, "n": nonce, "d": data}``) is under NOTIFY's 8,000-byte limit travels
  in the NOTIFY itself, no table row, no read back. Those events are **readable by every
  role that can connect, and forgeable by it**: use it only when every role that can
  connect to the database is trusted. Larger data is stored and referenced as above. An
  inline-mode hub also accepts references, and a hub in the default mode counts inline
  envelopes as forged: when switching a deployment to the default mode, switch the
  listeners first (or all at once), then the publishers.
* The payload table is UNLOGGED: its rows are as ephemeral as the notifications (both
  are lost if PostgreSQL crashes, and neither reaches a physical standby), and a publish
  does not wait for a WAL flush. Stored payloads are deleted by later publishes once
  older than ``payload_retention`` seconds (default 300), a bounded batch (1,000 rows)
  by one publish in 32 (and at least once per retention period); a
  reference to an older payload is no longer delivered, so events published in a
  transaction that stays open that long are lost. Data larger than ``max_payload_bytes``
  (default 8 MiB of JSON) is refused with :class:`~pikku_pg.errors.InvalidInputError`
  before anything is sent.
* NOTIFY is delivered when the publishing transaction commits: publishing through a
  borrowed connection inside your transaction delivers only if it commits.
* The listener is a dedicated connection (LISTEN is session state: behind PgBouncer,
  point ``listen_conninfo`` at PostgreSQL or a session-mode pool). A background task
  (a daemon thread in the sync flavour) drains it into a local queue as soon as
  notifications arrive, so a slow consumer never holds up PostgreSQL's notification
  queue nor any publisher. At most ``max_pending`` events wait in the queue; beyond
  that new events are dropped and a warning is logged.
* If the listener's connection drops, it logs a warning, reconnects with back-off,
  LISTENs again and logs that it is back. Events published while it was disconnected
  are lost (NOTIFY is not durable).
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import psycopg
from psycopg import AsyncConnection

from pikku_pg._acompat import AQueue, StateLock, agather, aspawn
from pikku_pg._async._database import ConnectionSource
from pikku_pg._async._listener import (
    MAX_RECONNECT_DELAY,
    RECONNECT_DELAY,
    AsyncListener,
    listen_target,
)
from pikku_pg._async.channel import AsyncPgEventHubStore
from pikku_pg._check import check_number, quote
from pikku_pg._hub_envelope import (
    EventReference,
    InlineEvent,
    encode_data,
    fits_inline,
    inline_envelope,
    notify_channel,
    parse_envelope,
    publish_nonce,
    reference_envelope_parts,
    reference_token,
)
from pikku_pg._rows.channel import check_channel_ids, check_topic
from pikku_pg.errors import ConflictError, InvalidInputError, ServiceClosedError
from pikku_pg.models.channel import EventHubMessage, EventHubStats

logger = logging.getLogger("pikku_pg.event_hub")

# Set while a callback runs, so that close() called from a callback does not wait for the
# dispatcher it runs in (that would wait for itself).
_IN_CALLBACK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pikku_pg_event_hub_in_callback", default=False
)

# async flavour: a coroutine function; sync flavour: a plain function.  # unasync: keep
EventCallback: TypeAlias = Callable[[EventHubMessage], Any]

# Expired payloads are deleted by one publish in EXPIRE_EVERY (and at least once per
# retention period), at most EXPIRE_LIMIT rows at a time: that keeps up with up to
# EXPIRE_LIMIT / EXPIRE_EVERY stored events per publish, and spares the other publishes
# the delete.
_EXPIRE_EVERY = 32
_EXPIRE_LIMIT = 1000

_COUNTERS = ("received", "delivered", "forged", "dropped", "ignored")

# A notification of a batch that may be delivered: its event and the local channels.
_Accepted: TypeAlias = tuple[InlineEvent | EventReference, frozenset[str]]


class AsyncPgEventHubService(AsyncPgEventHubStore):
    """Publish to topics from any process; receive the events for this process's channels.

    It is an :class:`AsyncPgEventHubStore` (``subscribe`` / ``unsubscribe`` /
    ``get_channel_ids_for_topic``) that also remembers which channels were subscribed
    through it: those are the channels this process holds, and an event is delivered
    with their ids. Topics with none of them are ignored here.

    ``await hub.start()`` starts listening (returns once LISTEN is active); then either
    ``async for topic, channel_ids, data in hub.events(): ...`` or pass
    ``start(callback)`` to have ``await callback(message)`` run for each event.
    ``close()`` stops the listener. See the module documentation for payloads above
    NOTIFY's 8,000-byte limit, reconnection and back-pressure.

    By default events are private and authentic: the NOTIFY carries only a reference
    (topic, payload id, random token) and the data is read back from the payload table
    where all three must match. ``inline_payloads=True`` sends data under 8,000 bytes in
    the NOTIFY itself (faster, no table row): such events are readable by every role that
    can connect, and forgeable by it. See the module documentation.
    """

    #: Seconds the listener waits for notifications before checking whether to stop.
    poll_interval: ClassVar[float] = 0.2
    #: How many delivered events a listener remembers, to refuse repeats of their references.
    replay_memory: ClassVar[int] = 100_000

    def __init__(
        self,
        conn: ConnectionSource,
        schema: str | None = None,
        *,
        connect_kwargs: Mapping[str, Any] | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
        listen_conninfo: str | None = None,
        max_pending: int = 10_000,
        payload_retention: float = 300.0,
        max_payload_bytes: int = 8 * 1024 * 1024,
        reconnect_delay: float = RECONNECT_DELAY,
        max_reconnect_delay: float = MAX_RECONNECT_DELAY,
        inline_payloads: bool = False,
    ) -> None:
        if not isinstance(inline_payloads, bool):
            raise InvalidInputError(
                f"inline_payloads must be a bool, not {type(inline_payloads).__name__}"
            )
        super().__init__(conn, schema, connect_kwargs=connect_kwargs, pool_kwargs=pool_kwargs)
        for name, value in (
            ("max_pending", max_pending),
            ("payload_retention", payload_retention),
            ("max_payload_bytes", max_payload_bytes),
            ("reconnect_delay", reconnect_delay),
            ("max_reconnect_delay", max_reconnect_delay),
        ):
            if check_number(name, value) <= 0:
                raise InvalidInputError(f"{name} must be a positive number, not {quote(value)}")
        target = listen_target(
            conn, listen_conninfo, connect_kwargs, application_name="pikku_pg event hub listener"
        )
        self._channel = notify_channel(self._schema)
        self._inline = inline_payloads
        self._publishes_since_expiry = 0
        self._last_expiry: float | None = None
        self._max_pending = int(max_pending)
        self._retention = float(payload_retention)
        self._max_payload_bytes = int(max_payload_bytes)
        # topic -> channel ids subscribed through this service. Values are replaced, never
        # mutated, so the listener reads a consistent snapshot without taking the lock.
        self._local: dict[str, frozenset[str]] = {}
        self._local_lock = StateLock()
        self._queue: AQueue[EventHubMessage | None] = AQueue()
        self._stopping = False
        self._started = False
        self._listener = AsyncListener(
            target,
            self._channel,
            self._receive,
            label=f"event hub listener (schema {self._schema!r})",
            log=logger,
            poll_interval=self.poll_interval,
            reconnect_delay=float(reconnect_delay),
            max_reconnect_delay=float(max_reconnect_delay),
        )
        self._reader: Any = None
        self._dispatcher: Any = None
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._replays = _ReplayGuard(self._retention + 1.0, self.replay_memory)

    # --- local subscriptions ------------------------------------------------------------

    async def subscribe(self, topic: str, channel_id: str) -> bool:
        """Subscribe a channel held by this process to a topic (stored, and remembered)."""
        subscribed = await super().subscribe(topic, channel_id)
        if subscribed:
            with self._local_lock:
                self._local[topic] = self._local.get(topic, frozenset()) | {channel_id}
        return subscribed

    async def unsubscribe(self, topic: str, channel_id: str) -> bool:
        """Remove a subscription (stored and local); returns whether one was stored."""
        removed = await super().unsubscribe(topic, channel_id)
        self._forget(topic, {channel_id})
        return removed

    def release_channels(self, channel_ids: Sequence[str]) -> None:
        """Forget channels this process no longer holds (e.g. closed sockets).

        Only local: remove them from the database with the channel store's
        ``remove_channels`` (their subscriptions go with them).
        """
        ids = set(check_channel_ids(channel_ids))
        for topic in list(self._local):
            self._forget(topic, ids)

    def local_channel_ids(self, topic: str) -> list[str]:
        """The channels subscribed to ``topic`` through this service, sorted."""
        return sorted(self._local.get(check_topic(topic), ()))

    def _forget(self, topic: str, channel_ids: set[str]) -> None:
        with self._local_lock:
            left = self._local.get(topic, frozenset()) - channel_ids
            if left:
                self._local[topic] = left
            else:
                self._local.pop(topic, None)

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, topic: str, data: Any) -> None:
        """Send ``data`` (any JSON value or pydantic model) to every listener of ``topic``.

        One round trip: the data is stored with a random token and a reference to it is
        notified, in one statement (with ``inline_payloads=True``, data under NOTIFY's
        8,000-byte limit is notified as it is). Data above ``max_payload_bytes``, a NUL
        character or a value that is not JSON raises :class:`InvalidInputError` and
        nothing is sent.
        """
        topic = check_topic(topic)
        param, text = encode_data(data)
        size = len(text.encode())
        if size > self._max_payload_bytes:
            raise InvalidInputError(
                f"event data is {size} bytes of JSON; at most {self._max_payload_bytes}"
            )
        if self._inline:
            envelope = inline_envelope(topic, text, publish_nonce())
            if fits_inline(envelope):
                await self._db.execute(self._q.publish_inline, (self._channel, envelope))
                return
        token = reference_token()
        prefix, suffix = reference_envelope_parts(topic, token)
        params = {"topic": topic, "data": param, "token": token}
        params.update(channel=self._channel, prefix=prefix, suffix=suffix)
        if self._expiry_due():
            params.update(retention=self._retention, limit=_EXPIRE_LIMIT)
            await self._db.execute(self._q.publish_reference_and_expire, params)
        else:
            await self._db.execute(self._q.publish_reference, params)

    def _expiry_due(self) -> bool:
        """Whether this publish also deletes expired payloads (and if so, note it)."""
        now = time.monotonic()
        self._publishes_since_expiry += 1
        if (
            self._last_expiry is not None
            and self._publishes_since_expiry < _EXPIRE_EVERY
            and now - self._last_expiry < self._retention
        ):
            return False
        self._publishes_since_expiry = 0
        self._last_expiry = now
        return True

    # --- receiving -----------------------------------------------------------------------

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the listener's current connection (None when not connected)."""
        return self._listener.pid

    @property
    def stats(self) -> EventHubStats:
        """What the listener did with the notifications it received so far (a snapshot)."""
        return EventHubStats(**self._counts, reconnects=self._listener.reconnects)

    @property
    def dropped(self) -> int:
        """How many events could not be delivered (``max_pending`` were waiting, or the
        payload table could not be read); the same as ``stats.dropped``."""
        return self._counts["dropped"]

    @property
    def reconnects(self) -> int:
        """How many times the listener reconnected after losing its connection."""
        return self._listener.reconnects

    async def start(self, callback: EventCallback | None = None) -> None:
        """Start listening; returns once LISTEN is active, so later publishes arrive.

        With ``callback``, a background task (sync: a daemon thread) calls it for each
        event; an exception it raises is logged and the next event is delivered.
        Without, read the events with :meth:`events`.
        """
        if self._stopping:
            raise ServiceClosedError("the event hub service is closed")
        if self._started:
            raise ConflictError("this event hub service is already listening")
        conn = await self._listener.connect()
        self._started = True
        self._reader = aspawn(self._listener.run, (conn,), name="pikku_pg event hub listener")
        if callback is not None:
            self._dispatcher = aspawn(
                self._dispatch, (callback,), name="pikku_pg event hub dispatcher"
            )

    async def events(self) -> AsyncIterator[EventHubMessage]:
        """The received events, in arrival order, until :meth:`close` (one consumer)."""
        while True:
            message = await self._queue.get()
            if message is None:
                self._queue.put_nowait(None)  # let any other reader stop too
                return
            yield message

    async def close(self) -> None:
        """Stop the listener (and callback), then release what the service owns."""
        self._stopping = True
        self._listener.stop()
        if self._reader is not None:
            await agather(self._reader, timeout=self.poll_interval + 5.0)
            self._reader = None
        self._queue.put_nowait(None)
        if self._dispatcher is not None and not _IN_CALLBACK.get():
            await agather(self._dispatcher, timeout=5.0)
            self._dispatcher = None
        await super().close()

    async def _receive(self, conn: AsyncConnection[Any], payloads: list[str]) -> None:
        """Check a batch of notifications and queue the genuine events of local topics."""
        self._counts["received"] += len(payloads)
        accepted = [item for item in map(self._screen, payloads) if item is not None]
        references = [event for event, _ in accepted if isinstance(event, EventReference)]
        stored = await self._fetch(conn, references)
        for event, channel_ids in accepted:
            if isinstance(event, InlineEvent):
                self._enqueue(EventHubMessage(event.topic, sorted(channel_ids), event.data))
            elif stored is None:
                self._counts["dropped"] += 1  # the table could not be read (logged)
            elif event not in stored:
                self._count_forged("no stored payload matches its id, token and topic")
            elif not self._replays.first_time(event.token):
                self._count_forged("it repeats an event already delivered")
            else:
                self._enqueue(EventHubMessage(event.topic, sorted(channel_ids), stored[event]))

    def _screen(self, payload: str) -> _Accepted | None:
        """The event a notification announces and its local channels, if it may be one."""
        try:
            event = parse_envelope(payload)
        except ValueError as exc:
            self._count_forged(f"malformed: {exc}")
            return None
        if isinstance(event, InlineEvent) and not self._inline:
            self._count_forged("an inline envelope, and inline payloads are off")
            return None
        channel_ids = self._local.get(event.topic)
        if not channel_ids:
            self._counts["ignored"] += 1
            return None
        return event, channel_ids

    async def _fetch(
        self, conn: AsyncConnection[Any], references: list[EventReference]
    ) -> dict[EventReference, Any] | None:
        """The stored data of the references that match a row (None if the read failed).

        Read on the listener's own connection: it is idle between notifications (those
        arriving meanwhile wait in psycopg), and the service's connections stay free for
        publishers, borrowed ones untouched by the listener.
        """
        if not references:
            return {}
        unique = list(dict.fromkeys(references))
        params = {
            "ids": [r.payload_id for r in unique],
            "tokens": [r.token for r in unique],
            "topics": [r.topic for r in unique],
            "retention": self._retention,
        }
        try:
            cur = await conn.execute(self._q.fetch_referenced, params)
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise  # the listener reconnects
            logger.warning(
                "event hub could not read %d stored payloads: %s", len(unique), str(exc).strip()
            )
            return None
        return {EventReference(topic, pid, token): data for pid, token, topic, data in rows}

    def _count_forged(self, reason: str) -> None:
        self._counts["forged"] += 1
        forged = self._counts["forged"]
        if forged == 1 or forged % 1000 == 0:  # whoever forges must not flood the log
            logger.warning(
                "event hub dropped a notification that is not a genuine event (%s); %d so far",
                reason,
                forged,
            )

    def _enqueue(self, message: EventHubMessage) -> None:
        if self._queue.qsize() >= self._max_pending:
            self._counts["dropped"] += 1
            dropped = self._counts["dropped"]
            if dropped == 1 or dropped % 1000 == 0:
                logger.warning(
                    "event hub consumer is too slow: %d events dropped so far (max_pending=%d)",
                    dropped,
                    self._max_pending,
                )
            return
        self._counts["delivered"] += 1
        self._queue.put_nowait(message)

    async def _dispatch(self, callback: EventCallback) -> None:
        _IN_CALLBACK.set(True)  # in this task's (thread's) own context only
        async for message in self.events():
            try:
                await callback(message)
            except Exception:
                logger.exception("event hub callback failed on topic %r", message.topic)


class _ReplayGuard:
    """The tokens of the payloads delivered recently: a repeated one is a replay.

    Checked after the reference matched its row, so the token names one stored event
    (ids may be reused after a crash: the table is unlogged; tokens are not). Remembers
    tokens for ``window`` seconds (past it the fetch refuses the payload anyway: it is
    older than the retention), and at most ``limit`` of them.
    """

    def __init__(self, window: float, limit: int) -> None:
        self._window = window
        self._limit = limit
        self._seen: set[int] = set()
        self._order: deque[tuple[float, int]] = deque()

    def first_time(self, token: uuid.UUID) -> bool:
        """Whether the payload of ``token`` was not delivered yet (remembered from now on)."""
        now = time.monotonic()
        while self._order and (
            self._order[0][0] < now - self._window or len(self._order) >= self._limit
        ):
            self._seen.discard(self._order.popleft()[1])
        key = token.int
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append((now, key))
        return True
