"""The LISTEN/NOTIFY event hub service: delivery, large payloads, reconnection, back-pressure."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg_pool import AsyncConnectionPool

from pikku_pg._acompat import asleep
from pikku_pg._async.channel import AsyncPgChannelStore
from pikku_pg._async.event_hub import AsyncPgEventHubService
from pikku_pg._rows.channel import MAX_INLINE_PAYLOAD_BYTES, inline_envelope
from pikku_pg.errors import ConflictError, InvalidInputError, ServiceClosedError
from pikku_pg.models.channel import EventHubMessage


async def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asleep(0.01)


@pytest.fixture
async def channels(pg_dsn: str, schema_name: str) -> AsyncIterator[AsyncPgChannelStore]:
    async with AsyncPgChannelStore(pg_dsn, schema_name) as store:
        await store.init()
        for cid in ("a1", "a2", "b1"):
            await store.add_channel(cid, "chat")
        yield store


class _Collector:
    """Collects events from a started hub (a callback: async or sync with the flavour)."""

    def __init__(self) -> None:
        self.events: list[EventHubMessage] = []

    async def __call__(self, message: EventHubMessage) -> None:
        self.events.append(message)


async def _stored_payloads(admin: AsyncConnection[Any], schema: str) -> int:
    cur = await admin.execute(
        pgsql.SQL("SELECT count(*) FROM {}.event_hub_payloads").format(pgsql.Identifier(schema))
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_publish_reaches_the_processes_holding_subscribed_channels(
    conn_source: Any, pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    schema = channels.schema
    got_a, got_b = _Collector(), _Collector()
    async with (
        AsyncPgEventHubService(conn_source, schema) as hub_a,
        AsyncPgEventHubService(pg_dsn, schema) as hub_b,
    ):
        # Two "processes": each holds its own channels, each has its own listener.
        assert await hub_a.subscribe("news", "a2")
        assert await hub_a.subscribe("news", "a1")
        assert await hub_b.subscribe("news", "b1")
        assert await hub_b.subscribe("sport", "b1")
        assert not await hub_a.subscribe("news", "ghost")
        await hub_a.start(got_a)
        await hub_b.start(got_b)
        await hub_a.publish("news", {"headline": "héllo", "n": 1})
        await hub_b.publish("sport", [1, 2, 3])
        await hub_b.publish("weather", "nobody listens")
        await _wait_until(lambda: len(got_a.events) == 1 and len(got_b.events) == 2, "events")
        assert got_a.events == [
            EventHubMessage("news", ["a1", "a2"], {"headline": "héllo", "n": 1})
        ]
        assert got_b.events == [
            EventHubMessage("news", ["b1"], {"headline": "héllo", "n": 1}),
            EventHubMessage("sport", ["b1"], [1, 2, 3]),
        ]
        assert await hub_a.get_channel_ids_for_topic("news") == ["a1", "a2", "b1"]
        # Unsubscribed or released channels are no longer this process's listeners.
        assert await hub_a.unsubscribe("news", "a1")
        hub_b.release_channels(["b1"])
        assert hub_b.local_channel_ids("news") == []
        await hub_a.publish("news", None)
        await _wait_until(lambda: len(got_a.events) == 2, "the second event")
        assert got_a.events[1] == EventHubMessage("news", ["a2"], None)
        await asleep(0.2)
        assert len(got_b.events) == 2


@pytest.mark.parametrize("text", ["x", "é"])
async def test_payloads_above_the_notify_limit_arrive_through_the_table(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any], text: str
) -> None:
    # The largest envelope NOTIFY takes is 7,999 bytes; "é" is 2 bytes, so counting
    # characters instead of bytes would send an envelope NOTIFY refuses.
    fixed = len(inline_envelope("big", '""', "0" * 12).encode())
    fits = text * ((MAX_INLINE_PAYLOAD_BYTES - fixed) // len(text.encode()))
    text_json = json.dumps(fits, ensure_ascii=False)
    assert len(inline_envelope("big", text_json, "0" * 12).encode()) in (7998, 7999)
    too_big = fits + "xx"
    huge = {"rows": [{"i": i, "text": text * 50} for i in range(2000)]}
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, channels.schema) as hub:
        assert await hub.subscribe("big", "a1")
        await hub.start(got)
        await hub.publish("big", fits)
        await _wait_until(lambda: len(got.events) == 1, "the largest inline event")
        assert await _stored_payloads(admin_conn, channels.schema) == 0
        await hub.publish("big", too_big)
        await hub.publish("big", huge)
        await _wait_until(lambda: len(got.events) == 3, "the stored events")
        assert [e.data for e in got.events] == [fits, too_big, huge]
        assert await _stored_payloads(admin_conn, channels.schema) == 2


async def test_stored_payloads_are_cleaned_up_after_the_retention(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgEventHubService(pg_dsn, channels.schema, payload_retention=0.05) as hub:
        await hub.publish("big", "y" * 9000)
        await hub.publish("big", "y" * 9000)
        assert await _stored_payloads(admin_conn, channels.schema) == 2
        await asleep(0.1)
        await hub.publish("big", "z" * 9000)
        assert await _stored_payloads(admin_conn, channels.schema) == 1


@pytest.mark.parametrize(
    ("topic", "data", "match"),
    [
        ("big", "x" * 20_000, "event data is 20002 bytes of JSON; at most 10000"),
        ("t", {"a": "b\x00"}, "NUL"),
        ("t", {"a": object()}, "not JSON-serializable"),
        ("t", float("inf"), "not JSON-serializable"),
        ("", 1, "topic must not be empty"),
        ("t" * 256, 1, "topic is 256 characters"),
        ("a\x00", 1, "topic contains a NUL"),
        (b"t", 1, "topic must be a str, not bytes"),
    ],
)
async def test_bad_publishes_are_refused_before_anything_is_sent(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    topic: Any,
    data: Any,
    match: str,
) -> None:
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, channels.schema, max_payload_bytes=10_000) as hub:
        await hub.subscribe("big", "a1")
        await hub.subscribe("t", "a1")
        await hub.start(got)
        with pytest.raises(InvalidInputError, match=match):
            await hub.publish(topic, data)
        await hub.publish("t", "marker")  # delivered in order: nothing came before it
        await _wait_until(lambda: len(got.events) == 1, "the marker")
        assert got.events[0].data == "marker"
        assert await _stored_payloads(admin_conn, channels.schema) == 0


async def test_the_listener_reconnects_after_its_connection_is_killed(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pikku_pg.event_hub")
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, channels.schema) as hub:
        await hub.subscribe("news", "a1")
        await hub.start(got)
        pid = hub.listener_pid
        assert pid is not None
        await admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await hub.publish("news", "during the outage")  # may be lost: NOTIFY is not durable
        await _wait_until(lambda: hub.reconnects == 1, "the reconnection")
        assert hub.listener_pid not in (None, pid)
        await hub.publish("news", "after")
        await _wait_until(lambda: "after" in [e.data for e in got.events], "a later event")
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost its connection" in m for m in messages), messages
    assert any("reconnected" in m for m in messages), messages


async def test_a_slow_consumer_does_not_block_publishers(
    pg_dsn: str, channels: AsyncPgChannelStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pikku_pg.event_hub")
    async with AsyncPgEventHubService(pg_dsn, channels.schema, max_pending=5) as hub:
        await hub.subscribe("news", "a1")
        await hub.start()  # nobody reads events()
        started = time.monotonic()
        for i in range(50):
            await hub.publish("news", i)
        assert time.monotonic() - started < 5.0
        await _wait_until(lambda: hub.dropped == 45, "the drops")
        assert any("too slow: 1 events dropped" in r.getMessage() for r in caplog.records)
        await hub.close()
        received = [message.data async for message in hub.events()]
    assert received == [0, 1, 2, 3, 4]


async def test_a_failing_callback_is_logged_and_the_next_event_delivered(
    pg_dsn: str, channels: AsyncPgChannelStore, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []

    async def callback(message: EventHubMessage) -> None:
        seen.append(message.data)
        if message.data == "boom":
            raise RuntimeError("callback bug")

    async with AsyncPgEventHubService(pg_dsn, channels.schema) as hub:
        await hub.subscribe("news", "a1")
        await hub.start(callback)
        await hub.publish("news", "boom")
        await hub.publish("news", "fine")
        await _wait_until(lambda: seen == ["boom", "fine"], "both events")
    assert any("callback failed" in r.getMessage() for r in caplog.records)


async def test_close_from_inside_the_callback_does_not_hang(
    pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    hub = AsyncPgEventHubService(pg_dsn, channels.schema)
    closed: list[bool] = []

    async def callback(message: EventHubMessage) -> None:
        await hub.close()
        closed.append(True)

    await hub.subscribe("news", "a1")
    await hub.start(callback)
    await hub.publish("news", 1)
    started = time.monotonic()
    await _wait_until(lambda: closed == [True], "the close in the callback", timeout=4.0)
    assert time.monotonic() - started < 4.0
    with pytest.raises(ServiceClosedError):
        await hub.publish("news", 2)


async def test_publish_inside_a_transaction_is_delivered_on_commit_only(
    pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    got = _Collector()
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        async with (
            AsyncPgEventHubService(pg_dsn, channels.schema) as listener,
            AsyncPgEventHubService(conn, channels.schema) as publisher,
        ):
            await listener.subscribe("news", "a1")
            await listener.start(got)
            async with conn.transaction(force_rollback=True):
                await publisher.publish("news", "rolled back")
            async with conn.transaction():
                await publisher.publish("news", "committed")
                await publisher.publish("news", "committed")  # not merged with the first
                await asleep(0.2)
                assert got.events == []
            await _wait_until(lambda: len(got.events) == 2, "the committed events")
            assert [e.data for e in got.events] == ["committed", "committed"]
    finally:
        await conn.close()


async def test_lifecycle_errors(pg_dsn: str, channels: AsyncPgChannelStore) -> None:
    hub = AsyncPgEventHubService(pg_dsn, channels.schema)
    await hub.start()
    with pytest.raises(ConflictError, match="already listening"):
        await hub.start()
    await hub.close()
    await hub.close()  # idempotent
    assert [m async for m in hub.events()] == []  # ends at once after close
    with pytest.raises(ServiceClosedError):
        await hub.start()
    with pytest.raises(ServiceClosedError):
        await hub.publish("news", 1)
    for bad in ({"max_pending": 0}, {"payload_retention": -1}, {"max_payload_bytes": "big"}):
        with pytest.raises(InvalidInputError, match="must be a positive number"):
            AsyncPgEventHubService(pg_dsn, channels.schema, **bad)
    # A pool that computes its conninfo: the listener cannot know where to connect.
    pool = AsyncConnectionPool(lambda: pg_dsn, open=False)
    with pytest.raises(InvalidInputError, match="pass listen_conninfo"):
        AsyncPgEventHubService(pool, channels.schema)
    AsyncPgEventHubService(pool, channels.schema, listen_conninfo=pg_dsn)  # accepted
